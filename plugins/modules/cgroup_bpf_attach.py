#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cgroup_bpf_attach
short_description: Load a BPF object, pin it and attach its programs to a cgroup v2
version_added: "0.1.0"
description:
  - Loads every program of a BPF ELF object with C(bpftool prog loadall), pins programs and maps
    on bpffs, and attaches each program to a cgroup v2 at the hook its ELF section names
    (for example C(cgroup/connect4)).
  - Idempotent by content. The object's sha256 digest names its pin directory
    (O(pin_dir)/<digest prefix>), so the same object already attached reports no change and
    nothing is reloaded (program tags are not stable across kernels, the digest is).
  - A changed object is replaced without a gap, and where the kernel has cgroup bpf_links
    (Linux >= 5.7) without an overlap either. Each hook is attached through a bpf_link pinned at
    C(<pin_dir>/links/<hook>_<link id>), and a new object swaps the link's program in place
    (C(BPF_LINK_UPDATE)), so every socket runs through exactly one of the two programs.
  - Without links (O(attach_method=legacy), or a kernel or architecture without them) the new
    program is attached next to the old one (C(multi)), then the old one is detached, so no
    connect runs unsteered but one may run through both programs.
  - Afterwards exactly one program of this module is attached per hook, and the old object's
    pins are removed.
  - Programs attached to the cgroup by anything else are left alone.
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - bpftool (JSON output; v5.x to v7.x)
  - Linux >= 5.8 with cgroup v2 and cgroup BPF
options:
  cgroup:
    description:
      - The cgroup v2 to attach to. Absolute (under the cgroup2 mount) or relative to the cgroup2
        mount, which the module finds in C(/proc/mounts) (C(/sys/fs/cgroup), or
        C(/sys/fs/cgroup/unified) on hybrid hosts). C(/) is the root cgroup, i.e. every process.
    type: str
    required: true
  create_cgroup:
    description: Create the cgroup directory when it does not exist.
    type: bool
    default: true
  object:
    description:
      - Path of the BPF ELF object on the managed host. Required when O(state=present).
    type: path
  pin_dir:
    description:
      - Directory on bpffs for this attachment's pins. Each loaded object gets a subdirectory
        named after its digest; its maps are under C(<subdirectory>/maps).
      - When bpffs is not mounted at C(/sys/fs/bpf) and O(pin_dir) is below it, it is mounted.
    type: path
    required: true
  attach_types:
    description:
      - Hooks to attach, for example V(connect4). By default every program of the object is
        attached at the hook its ELF section names.
      - Both bpftool spellings are accepted (V(connect4) and V(cgroup_inet4_connect)).
    type: list
    elements: str
  shared_maps:
    description:
      - Maps, by name, that outlive the object. The first object pins them at
        C(<pin_dir>/maps/<name>); every object loaded later uses those maps instead of new ones,
        so counters and runtime state survive replacing the program.
      - A later object whose map of that name differs in type, key, value or size fails to load,
        and nothing changes. So does an object that lacks one of the maps (the error names
        O(shared_maps)).
      - V(state=absent) removes them with the rest.
    type: list
    elements: str
    default: []
  attach_method:
    description:
      - How this run attaches a program at a hook it is not attached to yet.
      - V(auto) uses a bpf_link where the kernel has one, else the legacy attach (with a warning).
        V(link) fails instead of falling back. V(legacy) always uses the legacy attach, as
        bpftool does.
      - A program already attached stays attached as it is, so changing this changes nothing
        until the next object replaces it.
    type: str
    choices: [auto, link, legacy]
    default: auto
    version_added: "0.2.0"
  state:
    description:
      - V(present) loads and attaches. V(absent) detaches this module's programs from the cgroup,
        removes their pins and, if this module created it and it is empty, the cgroup.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Nothing is changed, not even the cgroup directory or a bpffs mount.
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Maps are per loaded object, so a replacement starts with fresh counters, except the maps
    named in O(shared_maps).
  - Pins live on bpffs, which does not survive a reboot; the C(netlb.multiwan.balancer) role
    installs a unit that runs the attachment again at boot.
seealso:
  - module: netlb.multiwan.vrf
"""

EXAMPLES = r"""
- name: Balance every app started in the multiwan cgroup
  netlb.multiwan.cgroup_bpf_attach:
    cgroup: multiwan
    object: /var/lib/netlb-multiwan/multiwan.bpf.o
    pin_dir: /sys/fs/bpf/netlb_multiwan

- name: Only IPv4, at the root cgroup (the whole host)
  netlb.multiwan.cgroup_bpf_attach:
    cgroup: /
    object: /var/lib/netlb-multiwan/multiwan.bpf.o
    pin_dir: /sys/fs/bpf/netlb_multiwan_root
    attach_types: [connect4]

- name: Detach and unpin
  netlb.multiwan.cgroup_bpf_attach:
    cgroup: multiwan
    pin_dir: /sys/fs/bpf/netlb_multiwan
    state: absent
"""

RETURN = r"""
cgroup:
  description: Absolute path of the cgroup.
  returned: always
  type: str
  sample: /sys/fs/cgroup/multiwan
object_digest:
  description: sha256 of the attached object (null when absent).
  returned: always
  type: str
  sample: 5f0c...e1
pin_path:
  description: Directory holding this object's program pins (maps under C(maps/)).
  returned: when state=present
  type: str
  sample: /sys/fs/bpf/netlb_multiwan/5f0c7a1b2c3d4e5f
programs:
  description: Programs of this module attached at the cgroup after the run.
  returned: always
  type: list
  elements: dict
  sample: [{"attach_type": "connect4", "name": "mw_connect4", "id": 102, "link_id": 7}]
  contains:
    link_id:
      description: The bpf_link holding the program, null when it is attached the legacy way.
      type: int
      version_added: "0.2.0"
actions:
  description: What the module did (or would do in check mode), in order.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_link
from ansible_collections.netlb.multiwan.plugins.module_utils.attach import AttachError, Attacher
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import BpftoolError


def render(state):
    lines = ["cgroup: %s%s" % (state["cgroup"], "" if state["exists"] else " (absent)")]
    lines += ["object: %s" % k for k in state["objects"]] or ["object: none"]
    lines += ["hook %s" % h for h in state["hooks"]]
    return "\n".join(lines) + "\n"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cgroup=dict(type="str", required=True),
            create_cgroup=dict(type="bool", default=True),
            object=dict(type="path"),
            pin_dir=dict(type="path", required=True),
            attach_types=dict(type="list", elements="str"),
            shared_maps=dict(type="list", elements="str", default=[]),
            attach_method=dict(type="str", default="auto", choices=["auto", "link", "legacy"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        required_if=[("state", "present", ["object"])],
        supports_check_mode=True,
    )
    attacher = Attacher(module)
    try:
        attacher.prepare()
        before = attacher.read_state()
        after = attacher.present() if module.params["state"] == "present" else attacher.absent()
    except AttachError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field, actions=attacher.actions)
    except BpftoolError as exc:
        module.fail_json(msg="bpftool: %s" % to_native(exc.detail), actions=attacher.actions)
    except bpf_link.LinkError as exc:
        module.fail_json(msg="bpf(2): %s" % to_native(exc), actions=attacher.actions)
    except (OSError, IOError) as exc:
        module.fail_json(msg=to_native(exc), actions=attacher.actions)
    for warning in attacher.warnings:
        module.warn(warning)
    result = dict(
        changed=bool(attacher.actions),
        cgroup=attacher.cgroup,
        object_digest=getattr(attacher, "digest", None) if module.params["state"] == "present" else None,
        programs=attacher.result_programs(),
        actions=attacher.actions,
    )
    if module.params["state"] == "present":
        result["pin_path"] = attacher.pin_path
    if module._diff:
        result["diff"] = dict(before=render(before), after=render(after),
                              before_header="%s (before)" % attacher.cgroup,
                              after_header="%s (after)" % attacher.cgroup)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
