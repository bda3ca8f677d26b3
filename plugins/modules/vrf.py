#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vrf
short_description: Manage a Linux VRF device, its enslaved uplinks and its routing table
version_added: "0.1.0"
description:
  - Creates or removes a Linux VRF (Virtual Routing and Forwarding) device bound to a routing
    table, enslaves uplink interfaces to it, and keeps the table's routes (the link routes of the
    enslaved interfaces, a default route via the uplink's gateway, and an C(unreachable default)
    catch-all).
  - Talks to the kernel over netlink with pyroute2; it runs no C(ip) command.
  - Every option is validated before anything is changed. A bad value fails with a message that
    names the option, and the host is left as it was.
  - Refuses to enslave the interface that carries the current Ansible (SSH) connection unless
    O(force=true), because enslaving moves its routes into the VRF table and drops the session.
  - Enslaving an interface makes the kernel flush its IPv6 addresses; the module puts back the
    permanent ones it saw before (and does the same when it releases interfaces).
author:
  - netlb.multiwan contributors (@netlb)
requirements:
  - pyroute2 >= 0.7.3 on the managed host
  - Linux with VRF support (C(CONFIG_NET_VRF), module C(vrf))
options:
  name:
    description:
      - Name of the VRF device, 1 to 15 characters of C([A-Za-z0-9_.-]).
    type: str
    required: true
  table:
    description:
      - Routing table of the VRF. Required when O(state=present).
      - Not 0, 253 (default), 254 (main) or 255 (local), and not the table of another VRF.
      - The table of an existing VRF cannot be changed in place; remove the VRF first.
    type: int
  interfaces:
    description:
      - Interfaces to enslave to the VRF. This is the complete list; interfaces enslaved to this
        VRF but not listed are released.
      - Interfaces must exist. An interface enslaved to another master is refused unless O(force=true).
    type: list
    elements: str
    default: []
  unreachable_default:
    description:
      - Keep C(unreachable default metric 4278198272) in the table, for IPv4 and IPv6, as the
        kernel's VRF documentation recommends, so that lookups in the VRF never fall through to
        the main table.
    type: bool
    default: true
  state:
    description:
      - V(present) creates or updates the VRF. V(absent) releases its interfaces (their addresses
        stay), deletes the VRF and removes the routes left in its table.
      - When the last VRF of the namespace goes, the vrf driver's C(l3mdev) rule (priority 1000)
        goes too, so the rules are as before the first VRF; it is added again with the next one.
    type: str
    choices: [present, absent]
    default: present
  netns:
    description:
      - Act inside this named network namespace (C(/run/netns/NAME)) instead of the module's own.
      - The namespace must exist; it is never created.
    type: str
  force:
    description:
      - Enslave interfaces even when one carries the current SSH connection or is enslaved to
        another master device.
    type: bool
    default: false
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
notes:
  - Linux only. The VRF device is brought up; enslaved interfaces keep their admin state.
  - Sockets use the VRF when bound to it (C(SO_BINDTODEVICE)), which is what the
    C(netlb.multiwan.balancer) role's eBPF program does per connection.
seealso:
  - name: Kernel VRF documentation
    description: Virtual Routing and Forwarding in the Linux kernel.
    link: https://docs.kernel.org/networking/vrf.html
"""

EXAMPLES = r"""
- name: Put the wifi uplink into its own VRF (the primary uplink stays in main)
  netlb.multiwan.vrf:
    name: wifi-vrf
    table: 10
    interfaces: [wlp1s0]
    routes:
      - dst: default
        gateway: 10.0.0.1

- name: Same inside a network namespace, IPv4 and IPv6 defaults
  netlb.multiwan.vrf:
    name: isp2-vrf
    table: 20
    interfaces: [eth2]
    netns: edge
    routes:
      - gateway: 198.51.100.1
      - gateway: 2001:db8:2::1

- name: Remove it again; eth2 keeps its addresses and returns to the main table
  netlb.multiwan.vrf:
    name: isp2-vrf
    netns: edge
    state: absent
"""

RETURN = r"""
vrf:
  description: The VRF after the run (what it would be, in check mode). Empty when absent.
  returned: always
  type: dict
  contains:
    name:
      description: VRF device name.
      type: str
      sample: wifi-vrf
    ifindex:
      description: Interface index of the VRF device (null in check mode before creation).
      type: int
      sample: 7
    table:
      description: Routing table of the VRF.
      type: int
      sample: 10
    interfaces:
      description: Interfaces enslaved to the VRF.
      type: list
      elements: str
      sample: [wlp1s0]
    routes:
      description: Routes of the VRF's table, one line each in C(ip route) style.
      type: list
      elements: str
      sample: ["default via 10.0.0.1 dev wlp1s0", "10.0.0.0/24 dev wlp1s0 scope link src 10.0.0.2",
               "unreachable default metric 4278198272"]
actions:
  description: What the module did (or would do in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: ["create vrf wifi-vrf table 10", "enslave wlp1s0 to wifi-vrf", "add route default via 10.0.0.1 table 10"]
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            table=dict(type="int"),
            interfaces=dict(type="list", elements="str", default=[]),
            routes=model.ROUTES_ARGUMENT_SPEC,
            unreachable_default=dict(type="bool", default=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            netns=dict(type="str"),
            force=dict(type="bool", default=False),
        ),
        required_if=[("state", "present", ["table"])],
        supports_check_mode=True,
    )
    if not nl.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=to_native(nl.PYROUTE2_IMPORT_ERROR))
    if not os.path.isdir("/proc/sys/net") or not os.uname()[0] == "Linux":
        module.fail_json(msg="netlb.multiwan.vrf manages Linux VRFs and runs on Linux only")

    try:
        user_routes = model.validate_params(module.params)
    except model.ValidationError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)

    try:
        link = nl.Netlink(module.params["netns"])
    except nl.NetnsNotFound as exc:
        module.fail_json(msg="netns: %s" % to_native(exc), field="netns")
    except (OSError, IOError) as exc:
        module.fail_json(msg="cannot open a netlink socket: %s" % to_native(exc))

    with link:
        engine = routing.VrfEngine(module.params, link, user_routes, check_mode=module.check_mode)
        try:
            before, after = engine.run()
        except routing.RoutingError as exc:
            module.fail_json(msg=to_native(exc), field=exc.field)
        except nl.NetlinkError as exc:
            msg = to_native(exc)
            if exc.code == 95 and module.params["state"] == "present":  # EOPNOTSUPP for kind vrf
                msg = "the kernel refused to create a VRF (%s). %s" % (msg, nl.VRF_UNSUPPORTED_HINT)
            module.fail_json(msg="netlink: %s; changes of this run were rolled back" % msg,
                             actions=engine.actions, exception=traceback.format_exc())
        for warning in engine.warnings:
            module.warn(warning)

    result = dict(changed=bool(engine.actions), vrf=routing.result_vrf(after), actions=engine.actions)
    if module._diff:
        result["diff"] = dict(
            before_header="%s (before)" % module.params["name"],
            after_header="%s (after)" % module.params["name"],
            before=model.render_state(before),
            after=model.render_state(after),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
