#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: balancer_maps
short_description: Converge the balancer program's runtime maps to the state document
version_added: "0.2.0"
description:
  - Reads the state document the C(netlb.multiwan.balancer) role writes and makes the pinned maps
    of every attachment hold its runtime state - each uplink's weight and drained flag, the policy,
    the excluded prefixes - and the selection tables computed from it (a smooth weighted rotation,
    a consistent-hash bucket table).
  - The loaded program follows from the next connect; nothing is reloaded and no counter is reset.
  - Writes nothing when the maps already hold that state.
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - bpftool on the managed host
options:
  state_file:
    description: State document written by the C(netlb.multiwan.balancer) role.
    type: path
    default: /etc/netlb-multiwan/balancer.json
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
"""

RETURN = r"""
changes:
  description: The map entries written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: ["uplink 1 state", "selection", "exclude 10.0.0.0/8"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import converge_maps, load, locked


def main():
    module = AnsibleModule(
        argument_spec=dict(state_file=dict(type="path", default="/etc/netlb-multiwan/balancer.json")),
        supports_check_mode=True,
    )
    path = module.params["state_file"]
    bpftool = module.get_bin_path("bpftool", required=True, opt_dirs=["/usr/sbin", "/sbin"])
    try:
        with locked(path):  # netlb-multiwan and the boot unit write it too
            doc = load(path)
            changes = converge_maps(doc, Bpftool(module, bpftool), check_mode=module.check_mode)
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
