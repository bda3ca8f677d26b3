#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fwmark_table
short_description: Route marked sockets through an uplink's own routing table (ip rule fwmark)
version_added: "0.1.0"
description:
  - Keeps an uplink's routing table (its link routes and a default route via its gateway) and the
    policy rule C(fwmark MARK/MASK lookup TABLE) that sends sockets marked by the balancer program
    (fwmark steering) there.
  - The fwmark counterpart of M(netlb.multiwan.vrf) for kernels without VRF. The main table and the
    interfaces are not touched.
  - Talks to the kernel over netlink with pyroute2; it runs no C(ip) command. Every option is
    validated before anything changes.
  - A rule is kept for each address family that has a route in the table.
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - pyroute2 >= 0.7.3 on the managed host
options:
  table:
    description: Routing table of the uplink; not 0, 253, 254 or 255.
    type: int
    required: true
  mark:
    description: Firewall mark (1 to 4294967295) that selects the table.
    type: int
    required: true
  mask:
    description: Mask applied to the socket's mark before comparing.
    type: int
    default: 4294967295
  priority:
    description:
      - Priority (C(pref)) of the rule, 1 to 32765, so that it is looked at before the main table (32766).
    type: int
    default: 10000
  interface:
    description:
      - The uplink's interface. Its link routes are kept in the table too, and route gateways must
        lie in its prefixes.
    type: str
  state:
    description: V(absent) deletes the rules for O(mark) and O(table) and empties the table.
    type: str
    choices: [present, absent]
    default: present
  netns:
    description: Act inside this named network namespace (C(/run/netns/NAME)); it is never created.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - netlb.multiwan.routes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
seealso:
  - module: netlb.multiwan.vrf
  - module: netlb.multiwan.cgroup_bpf_attach
"""

EXAMPLES = r"""
- name: Sockets marked 0x100 leave through wlp1s0 (table 100)
  netlb.multiwan.fwmark_table:
    table: 100
    mark: 0x100
    interface: wlp1s0
    routes:
      - gateway: 10.0.0.1
      - gateway: fe80::1
        interface: wlp1s0

- name: Remove it
  netlb.multiwan.fwmark_table:
    table: 100
    mark: 0x100
    state: absent
"""

RETURN = r"""
rules:
  description: The fwmark rules for O(mark) after the run, C(ip rule) style.
  returned: always
  type: list
  elements: str
  sample: ["ipv4: 10000: from all fwmark 0x100 lookup 100"]
routes:
  description: Routes of the table after the run, C(ip route) style.
  returned: always
  type: list
  elements: str
  sample: ["default via 10.0.0.1 dev wlp1s0", "10.0.0.0/24 dev wlp1s0 scope link src 10.0.0.2"]
actions:
  description: What the module did (or would do in check mode), in order.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model


def main():
    module = AnsibleModule(
        argument_spec=dict(
            table=dict(type="int", required=True),
            mark=dict(type="int", required=True),
            mask=dict(type="int", default=routing.U32),
            priority=dict(type="int", default=routing.DEFAULT_RULE_PRIORITY),
            interface=dict(type="str"),
            routes=model.ROUTES_ARGUMENT_SPEC,
            state=dict(type="str", default="present", choices=["present", "absent"]),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not nl.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=to_native(nl.PYROUTE2_IMPORT_ERROR))
    try:
        user_routes = routing.validate_fwmark(module.params)
    except model.ValidationError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)
    try:
        link = nl.Netlink(module.params["netns"])
    except nl.NetnsNotFound as exc:
        module.fail_json(msg="netns: %s" % to_native(exc), field="netns")

    with link:
        engine = routing.FwmarkTableEngine(module.params, link, user_routes, check_mode=module.check_mode)
        try:
            state = engine.run()
        except routing.RoutingError as exc:
            module.fail_json(msg=to_native(exc), field=exc.field)
        except nl.NetlinkError as exc:
            module.fail_json(msg="netlink: %s" % to_native(exc), actions=engine.actions)

    result = dict(changed=bool(engine.actions), actions=engine.actions, rules=state["rules"], routes=state["routes"])
    if module._diff:
        result["diff"] = dict(before=state["before"], after=state["after"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
