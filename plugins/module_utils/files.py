# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on a host. Those the engine writes outside Ansible (the state document, the health
file, the metrics, the rp_filter record, the budgets' usage): one atomic writer, so a
reader (a boot unit, node_exporter, status) never sees half a file, and one reader. And
the set of files a run installs (the engine, its commands, the units, the program):
converge_set, for M(netlb.multiwan.file_set) and M(netlb.multiwan.balancer_apply)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import fnmatch
import hashlib
import json
import os
import stat
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
    """*text* into *path* by a rename of a file written beside it (write_file, unsynced:
    the tracker rewrites its files every second)."""
    if make_dir:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_file(path, text.encode("utf-8"), 0o644, sync=False)


# The argument spec of one file of a set (file_set's and balancer_apply's files).
FILE_ENTRY_SPEC = dict(
    path=dict(type="path", required=True),
    content=dict(type="str"),
    content_base64=dict(type="str"),
    mode=dict(type="str", default="0644"),
)


class FileSetError(Exception):
    def __init__(self, field, message):
        super(FileSetError, self).__init__("%s: %s" % (field, message))
        self.field = field


def validate_set(files, field="files"):
    """[(path, content bytes, mode int, binary)] of the entries {path, content or
    content_base64, mode}, or FileSetError naming the entry's field."""
    out, seen = [], set()
    for i, item in enumerate(files):
        name = "%s[%d]" % (field, i)
        path = item["path"]
        if not path or not os.path.isabs(path) or path.endswith("/"):
            raise FileSetError(name + ".path", "must be an absolute file path, got %r" % path)
        path = os.path.normpath(path)
        if path in seen:
            raise FileSetError(name + ".path", "%s is listed twice" % path)
        seen.add(path)
        mode = item.get("mode") or "0644"
        try:
            mode_value = int(mode, 8)
        except (TypeError, ValueError):
            mode_value = -1
        if not 0 <= mode_value <= 0o7777:
            raise FileSetError(name + ".mode", "must be an octal string from 0000 to 7777, got %r" % mode)
        given = [key for key in ("content", "content_base64") if item.get(key) is not None]
        if len(given) != 1:
            raise FileSetError(name, "give exactly one of content and content_base64")
        if given == ["content"]:
            content = item["content"].encode("utf-8", "surrogateescape")
        else:
            try:
                content = base64.b64decode(item["content_base64"].encode("ascii"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise FileSetError(name + ".content_base64", "is not base64: %s" % exc)
        out.append((path, content, mode_value, given == ["content_base64"]))
    return out


def unlisted(directories, patterns, listed):
    """Files in *directories* (not recursively; a missing one has none) whose names match
    one of *patterns* and that *listed* (normalised paths) lacks, sorted."""
    out = []
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            path = os.path.join(os.path.normpath(directory), name)
            if any(fnmatch.fnmatchcase(name, p) for p in patterns) and path not in listed \
                    and os.path.isfile(path):
                out.append(path)
    return sorted(out)


def shown(content, binary):
    """What a diff shows of a file's content."""
    if binary and content is not None:
        return "(binary, %d bytes, sha256 %s)\n" % (len(content), hashlib.sha256(content).hexdigest())
    return "" if content is None else content.decode("utf-8", "replace")


def current(path):
    """(content bytes or None, mode or None) of *path*; a non-file is an error."""
    try:
        st = os.lstat(path)
    except OSError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        raise FileSetError("files", "%s exists and is not a regular file" % path)
    with open(path, "rb") as handle:
        return handle.read(), stat.S_IMODE(st.st_mode)


def missing_dirs(path):
    out = []
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise FileSetError("files", "%s exists and is not a directory" % parent)
        out.insert(0, parent)
        parent = os.path.dirname(parent)
    return out


def write_file(path, content, mode, move=os.rename, sync=True):
    """*content* into *path* by *move* (an AnsibleModule's atomic_move keeps SELinux
    contexts) of a file written (and synced) beside it."""
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            if sync:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(path, mode)  # atomic_move keeps an existing file's mode


def converge_set(files, check_mode=False, move=os.rename):
    """Each of *files* (validate_set's entries) holding its content and mode: the
    result {changed_paths, created_dirs, diff} (what would change, in check mode)."""
    changed_paths, created_dirs, diffs, plan = [], [], [], []
    for path, content, mode, binary in files:
        for directory in missing_dirs(path):
            if directory not in created_dirs:
                created_dirs.append(directory)
        old_content, old_mode = current(path)
        if old_content == content and old_mode == mode:
            continue
        changed_paths.append(path)
        plan.append((path, content, mode, old_content is not None and old_content == content))
        moded = old_mode is not None and old_mode != mode
        diffs.append({"before_header": path if old_content is not None else "%s (absent)" % path,
                      "after_header": path,
                      "before": shown(old_content, binary) + ("(mode %04o)\n" % old_mode if moded else ""),
                      "after": shown(content, binary) + ("(mode %04o)\n" % mode if moded else "")})
    if not check_mode:
        for directory in created_dirs:
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)
        for path, content, mode, only_mode in plan:
            if only_mode:
                os.chmod(path, mode)
            else:
                write_file(path, content, mode, move)
    return {"changed_paths": changed_paths, "created_dirs": created_dirs, "diff": diffs}
