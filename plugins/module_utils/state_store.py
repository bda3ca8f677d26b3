# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state document of a balancer host: where it is, its lock, how it is read and
written, and what of it belongs to the host rather than to the inventory.

Everything that writes it (the role through netlb.multiwan.balancer_document, the
netlb-multiwan command, the boot unit) takes the lock and writes atomically, so a
writer never undoes another's change: the role's new document keeps the drains an
operator made on the host, read under the same lock it writes under.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import json
import os

from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write

DEFAULT_PATH = "/etc/netlb-multiwan/balancer.json"


@contextlib.contextmanager
def locked(path):
    """Hold the document's lock: a flock on its directory, which save()'s atomic
    rename leaves in place (a lock on the file would be on the old inode)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load(path):
    with open(path) as handle:
        return json.load(handle)


def render(doc):
    """The role's layout (to_nice_json): sorted keys, two spaces, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"


def save(path, doc):
    """Atomically: a boot unit reading it never sees half a document."""
    atomic_write(path, render(doc))


def keep_runtime(planned, current, keep_drains=True):
    """*planned* (the role's new document) with what the host decided since: each
    uplink's ``drained`` as *current* (the document on the host) has it, by name,
    when *keep_drains*; otherwise no uplink is drained."""
    drained = set()
    if keep_drains and isinstance(current, dict):
        drained = set(u.get("name") for u in current.get("uplinks") or [] if isinstance(u, dict) and u.get("drained"))
    uplinks = [dict(u, drained=u.get("name") in drained) for u in planned.get("uplinks", [])]
    return dict(planned, uplinks=uplinks)
