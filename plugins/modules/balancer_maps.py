#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_maps
short_description: Converge the balancer program's runtime maps, and the host settings its steering needs, to the state document
version_added: "0.2.0"
description:
  - Reads the state document the C(netlb.multiwan.balancer) role writes and makes the pinned maps
    of every attachment hold its runtime state - each uplink's weight and drained flag, the policy,
    the excluded prefixes - and the selection tables computed from it (a smooth weighted rotation,
    a consistent-hash bucket table).
  - The loaded program follows from the next connect; nothing is reloaded and no counter is reset.
  - Also converges what the steering needs of the host, in the same run the boot unit, the health
    tracker and C(netlb-multiwan) make - the source rules that steer unconnected UDP, and loose
    reverse-path filtering (C(rp_filter=2)) on the uplinks of device steering when the document says
    C(rp_filter=loose). An uplink is loosened only where its effective setting is strict; its value from
    before is recorded in C(rp_filter.json) in the state directory.
  - Writes nothing when the maps and the host already hold that state.
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - bpftool on the managed host
options:
  state_file:
    description: State document written by the C(netlb.multiwan.balancer) role.
    type: path
    default: /etc/netlb-multiwan/balancer.json
  state:
    description:
      - V(present) converges the maps and the host to the document.
      - V(absent) puts back every C(rp_filter) value recorded before the balancer changed it (the
        maps go with the program, see M(netlb.multiwan.cgroup_bpf_attach)). Nothing to do when
        nothing was recorded; the document may be missing.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: The diff lists the map entries that change.
  platform:
    platforms: posix
seealso:
  - module: netlb.multiwan.cgroup_bpf_attach
  - module: netlb.multiwan.balancer_info
"""

EXAMPLES = r"""
- name: Apply changed weights without reloading the program
  netlb.multiwan.balancer_maps:

- name: Put back the reverse-path filtering the balancer loosened
  netlb.multiwan.balancer_maps:
    state: absent
"""

RETURN = r"""
changes:
  description: The map entries written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["rp_filter wlp1s0 (wifi): 1 -> 2 (loose)", "multiwan: uplink 1 state", "multiwan: selection"]
"""


from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath, rp_filter, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import converge_maps


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_file=dict(type="path", default=state_store.DEFAULT_PATH),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        supports_check_mode=True,
    )
    path = module.params["state_file"]
    try:
        if module.params["state"] == "absent":
            doc = state_store.read(path) or {}
            changes = rp_filter.converge(doc, present=False, check_mode=module.check_mode)
        else:
            bpftool = module.get_bin_path("bpftool", required=True, opt_dirs=["/usr/sbin", "/sbin"])
            with state_store.locked(path):  # netlb-multiwan and the boot unit write it too
                doc = state_store.load(path)
                changes = converge_maps(doc, Bpftool(module, bpftool), check_mode=module.check_mode)
    except rp_filter.RpFilterError as exc:
        module.fail_json(msg=to_native(exc), field="rp_filter")
    except state_store.StateError as exc:
        module.fail_json(msg="state_file: %s" % to_native(exc), field="state_file")
    except (IOError, OSError, ValueError) as exc:
        module.fail_json(msg="state_file: cannot read %s: %s" % (path, to_native(exc)), field="state_file")
    except (BpftoolError, datapath.DatapathError, KeyError) as exc:
        module.fail_json(msg="converging the maps failed: %s" % to_native(exc))
    result = dict(changed=bool(changes), changes=changes)
    if module._diff:
        result["diff"] = {"prepared": "".join("+ %s\n" % c for c in changes)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
