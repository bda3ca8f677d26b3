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

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import files as file_utils


def run(module):
    files = file_utils.validate_set(module.params["files"])
    result = file_utils.converge_set(files, module.check_mode, move=module.atomic_move)
    result["changed"] = bool(result["changed_paths"] or result["created_dirs"])
    if module.params.get("unlisted"):
        spec = module.params["unlisted"]
        result["unlisted"] = file_utils.unlisted(spec["paths"], spec["patterns"], set(f[0] for f in files))
    if not module._diff:
        del result["diff"]
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=file_utils.FILE_ENTRY_SPEC),
            unlisted=dict(type="dict", options=dict(
                paths=dict(type="list", elements="path", required=True),
                patterns=dict(type="list", elements="str", required=True),
            )),
        ),
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module))
    except file_utils.FileSetError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)
    except (IOError, OSError) as exc:
        module.fail_json(msg="writing the files failed: %s" % to_native(exc))


if __name__ == "__main__":
    main()
