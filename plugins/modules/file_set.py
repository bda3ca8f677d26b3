#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: file_set
short_description: Converge several small text files in one step
version_added: "0.2.0"
description:
  - Makes each listed file hold exactly the given content and mode, creating it (and missing
    parent directories, mode C(0755)) when absent, and reports per file what changed.
  - One task instead of one C(ansible.builtin.copy) or C(ansible.builtin.template) per file, each
    of which runs two modules on the host (a C(stat), then the copy); those were most of the time
    of a C(netlb.multiwan.balancer) run on a slow host.
  - Each file is replaced atomically (a temporary file in the same directory, then a rename), so a
    reader such as a boot unit never sees half a file.
  - Render templates on the controller with C(lookup('ansible.builtin.template', ...)).
author:
  - netlb.multiwan contributors (@netlb)
options:
  files:
    description: The files. Paths must be absolute and distinct.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content, as text (written as UTF-8). Exactly one of O(files[].content) and
          O(files[].content_base64).
        type: str
      content_base64:
        description:
          - The whole content, base64-encoded, for a small binary file (a compiled BPF object); the diff
            then shows its size and SHA-256 instead of the bytes.
        type: str
      mode:
        description: Permissions, as an octal string.
        type: str
        default: "0644"
  unlisted:
    description:
      - Report the files in O(unlisted.paths) whose names match one of O(unlisted.patterns) and that
        O(files) does not list, in RV(unlisted), for the caller to retire (the units of an uplink taken
        out of the inventory). Nothing is removed here.
    type: dict
    suboptions:
      paths:
        description: Directories to look in (not recursively); a missing one has nothing to report.
        type: list
        elements: path
        required: true
      patterns:
        description: Shell-style patterns of file names (C(netlb-multiwan-*.service)).
        type: list
        elements: str
        required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: One before/after diff per file that changes.
  platform:
    platforms: posix
notes:
  - Files are owned by the user the module runs as (root with C(become)); owner and group of an
    existing file are kept.
  - Meant for text of up to a few hundred kilobytes; the content travels in the module's arguments.
seealso:
  - module: ansible.builtin.copy
  - module: ansible.builtin.template
"""

EXAMPLES = r"""
- name: Install a unit and its configuration
  netlb.multiwan.file_set:
    files:
      - path: /etc/systemd/system/example.service
        content: "{{ lookup('ansible.builtin.template', 'example.service.j2') }}"
      - path: /usr/local/sbin/example
        content: "#!/bin/sh\nexec true\n"
        mode: "0755"
  register: installed

- name: Reload systemd when a unit changed
  ansible.builtin.systemd_service:
    daemon_reload: true
  when: installed.changed_paths | select('match', '/etc/systemd/') | list | length > 0
"""

RETURN = r"""
changed_paths:
  description: Files whose content or mode changed (or would, in check mode), in the order given.
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/example.service]
created_dirs:
  description: Parent directories created (or that would be), outermost first.
  returned: always
  type: list
  elements: str
  sample: [/etc/example]
unlisted:
  description: The files O(unlisted) asked about that O(files) does not list, sorted.
  returned: when O(unlisted) is given
  type: list
  elements: str
  sample: [/etc/systemd/system/netlb-multiwan-uplink-lte.service]
"""

import base64
import binascii
import fnmatch
import hashlib
import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native


class FileSetError(Exception):
    def __init__(self, field, message):
        super(FileSetError, self).__init__("%s: %s" % (field, message))
        self.field = field


def validate(files):
    """[(path, content bytes, mode int)], or FileSetError naming the field."""
    out, seen = [], set()
    for i, item in enumerate(files):
        field = "files[%d]" % i
        path = item["path"]
        if not path or not os.path.isabs(path) or path.endswith("/"):
            raise FileSetError(field + ".path", "must be an absolute file path, got %r" % path)
        path = os.path.normpath(path)
        if path in seen:
            raise FileSetError(field + ".path", "%s is listed twice" % path)
        seen.add(path)
        mode = item["mode"]
        try:
            mode_value = int(mode, 8)
        except (TypeError, ValueError):
            mode_value = -1
        if not 0 <= mode_value <= 0o7777:
            raise FileSetError(field + ".mode", "must be an octal string from 0000 to 7777, got %r" % mode)
        given = [key for key in ("content", "content_base64") if item.get(key) is not None]
        if len(given) != 1:
            raise FileSetError(field, "give exactly one of content and content_base64")
        if given == ["content"]:
            content = to_bytes(item["content"], errors="surrogate_or_strict")
        else:
            try:
                content = base64.b64decode(to_bytes(item["content_base64"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise FileSetError(field + ".content_base64", "is not base64: %s" % exc)
        out.append((path, content, mode_value, given == ["content_base64"]))
    return out


def unlisted(spec, listed):
    """Files in spec["paths"] matching spec["patterns"] that *listed* does not have."""
    out = []
    for directory in spec["paths"]:
        try:
            names = os.listdir(directory)
        except OSError:
            continue  # missing: nothing there to retire
        for name in names:
            path = os.path.join(os.path.normpath(directory), name)
            if any(fnmatch.fnmatchcase(name, p) for p in spec["patterns"]) and path not in listed \
                    and os.path.isfile(path):
                out.append(path)
    return sorted(out)


def shown(content, binary):
    """What the diff shows of a file's content."""
    if binary and content is not None:
        return "(binary, %d bytes, sha256 %s)\n" % (len(content), hashlib.sha256(content).hexdigest())
    return "" if content is None else to_native(content, errors="surrogate_or_replace")


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


def write(module, path, content, mode):
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        module.atomic_move(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(path, mode)  # atomic_move keeps an existing file's mode


def run(module):
    files = validate(module.params["files"])
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
        before = shown(old_content, binary)
        before += "" if old_mode is None or old_mode == mode else "(mode %04o)\n" % old_mode
        after = shown(content, binary)
        after += "" if old_mode is None or old_mode == mode else "(mode %04o)\n" % mode
        diffs.append({"before_header": path if old_content is not None else "%s (absent)" % path,
                      "after_header": path, "before": before, "after": after})
    if not module.check_mode:
        for directory in created_dirs:
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)
        for path, content, mode, only_mode in plan:
            if only_mode:
                os.chmod(path, mode)
            else:
                write(module, path, content, mode)
    result = {"changed": bool(changed_paths or created_dirs), "changed_paths": changed_paths,
              "created_dirs": created_dirs}
    if module.params.get("unlisted"):
        result["unlisted"] = unlisted(module.params["unlisted"], set(f[0] for f in files))
    if module._diff:
        result["diff"] = diffs
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True),
                content=dict(type="str"),
                content_base64=dict(type="str"),
                mode=dict(type="str", default="0644"),
            )),
            unlisted=dict(type="dict", options=dict(
                paths=dict(type="list", elements="path", required=True),
                patterns=dict(type="list", elements="str", required=True),
            )),
        ),
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except FileSetError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)
    except (IOError, OSError) as exc:
        module.fail_json(msg="writing the files failed: %s" % to_native(exc))


if __name__ == "__main__":
    main()
