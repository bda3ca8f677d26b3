# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files the engine writes on a host outside Ansible (the state document, the health
file, the metrics, the rp_filter record, the budgets' usage): one atomic writer, so a
reader (a boot unit, node_exporter, status) never sees half a file, and one reader."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import tempfile


def read_json(path):
    """The JSON object in *path*; {} when it is missing, unreadable or not an object (a
    reader falls back to its defaults rather than failing)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def atomic_write(path, text, make_dir=False):
    """*text* into *path* by a rename of a file written beside it."""
    directory = os.path.dirname(path) or "."
    if make_dir:
        os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".netlb-multiwan.", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
