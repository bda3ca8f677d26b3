# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cgroup v2 and bpffs discovery from /proc/mounts.

cgroup2 lives at /sys/fs/cgroup on unified hosts and at
/sys/fs/cgroup/unified on hybrid ones (e.g. older Ubuntu); bpffs is usually
/sys/fs/bpf. Nothing here assumes either.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


class CgroupError(Exception):
    def __init__(self, field, message):
        super(CgroupError, self).__init__("%s: %s" % (field, message) if field else message)
        self.field = field


def _unescape(path):
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def mounts(text=None):
    """[(mount point, fs type)] in mount order."""
    if text is None:
        with open("/proc/mounts") as handle:
            text = handle.read()
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            result.append((_unescape(fields[1]), fields[2]))
    return result


def cgroup2_mount(text=None):
    for point, fstype in mounts(text):
        if fstype == "cgroup2":
            return point
    return None


def mount_of(path, fstype, text=None):
    """The deepest mount point of type ``fstype`` that contains ``path``."""
    best = None
    for point, kind in mounts(text):
        if kind != fstype:
            continue
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) > len(best):
                best = point
    return best


def resolve_cgroup(cgroup, mount):
    """Absolute, normalised path of ``cgroup`` (absolute or relative to the mount).

    Refuses paths that leave the cgroup2 hierarchy (``..`` included).
    """
    if not isinstance(cgroup, str) or not cgroup.strip():
        raise CgroupError("cgroup", "must be a path, absolute or relative to the cgroup2 mount %s" % mount)
    if "\0" in cgroup or "\n" in cgroup:
        raise CgroupError("cgroup", "contains a control character")
    text = cgroup.strip()
    if text in ("/", "."):
        return mount
    if os.path.isabs(text):
        candidate = os.path.normpath(text)
        if candidate != mount and not candidate.startswith(mount.rstrip("/") + "/"):
            # "/multiwan" means "multiwan under the mount" only if it is not a real path elsewhere.
            raise CgroupError("cgroup", "%s is outside the cgroup2 mount %s; give a path under it or "
                                        "one relative to it" % (text, mount))
        return candidate
    candidate = os.path.normpath(os.path.join(mount, text))
    if candidate != mount and not candidate.startswith(mount.rstrip("/") + "/"):
        raise CgroupError("cgroup", "%s leaves the cgroup2 mount %s" % (text, mount))
    return candidate


def procs(path):
    try:
        with open(os.path.join(path, "cgroup.procs")) as handle:
            return [int(x) for x in handle.read().split()]
    except (IOError, OSError):
        return []


def children(path):
    try:
        return [e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e))]
    except OSError:
        return []
