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

from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl

U32 = 2 ** 32 - 1


def family_name(family):
    return "ipv6" if family == model.AF_INET6 else "ipv4"


def render_rule(rule):
    mask = "" if rule["fwmask"] == U32 else "/%#x" % rule["fwmask"]
    return "%s: %d: from all fwmark %#x%s lookup %d" % (
        family_name(rule["family"]), rule["priority"], rule["fwmark"], mask, rule["table"])


def render_state(rules, routes, table):
    lines = ["rules:"] + ["  - %s" % render_rule(r) for r in sorted(rules, key=render_rule)]
    lines += ["routes (table %d):" % table] + ["  - %s" % r.render() for r in model.sort_routes(routes)]
    return "\n".join(lines) + "\n"


def validate(params):
    model.validate_table(params["table"])
    for field, low, high in (("mark", 1, U32), ("mask", 1, U32), ("priority", 1, 32765)):
        value = params[field]
        if isinstance(value, bool) or not low <= value <= high:
            raise model.ValidationError(field, "must be %d-%d, got %r" % (low, high, value))
    if params["mark"] & params["mask"] != params["mark"]:
        raise model.ValidationError("mask", "%#x hides bits of mark %#x" % (params["mask"], params["mark"]))
    interfaces = []
    if params["interface"] is not None:
        model.validate_ifname(params["interface"], "interface")
        interfaces = [params["interface"]]
    check = dict(name="fwmark", table=params["table"], interfaces=interfaces, routes=params["routes"],
                 netns=params["netns"], state="present")
    return model.validate_params(check)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            table=dict(type="int", required=True),
            mark=dict(type="int", required=True),
            mask=dict(type="int", default=U32),
            priority=dict(type="int", default=10000),
            interface=dict(type="str"),
            routes=model.ROUTES_ARGUMENT_SPEC,
            state=dict(type="str", default="present", choices=["present", "absent"]),
            netns=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not nl.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=to_native(nl.PYROUTE2_IMPORT_ERROR))
    p = module.params
    try:
        user_routes = validate(p)
    except model.ValidationError as exc:
        module.fail_json(msg=to_native(exc), field=exc.field)
    try:
        link = nl.Netlink(p["netns"])
    except nl.NetnsNotFound as exc:
        module.fail_json(msg="netns: %s" % to_native(exc), field="netns")

    actions = []
    with link:
        links = dict((lk.name, lk) for lk in link.links())
        names = dict((lk.index, lk.name) for lk in links.values())
        all_rules = link.fwmark_rules()
        ours = [r for r in all_rules if r["fwmark"] == p["mark"] and r["fwmask"] == p["mask"] and r["table"] == p["table"]]
        current_routes = link.routes(p["table"], names)
        before = render_state(ours, current_routes, p["table"])

        if p["state"] == "absent":
            for rule in ours:
                actions.append("delete rule %s" % render_rule(rule))
            for route in current_routes:
                actions.append("delete route %s table %d" % (route.render(), p["table"]))
            after_rules, after_routes = [], []
            if actions and not module.check_mode:
                for rule in ours:
                    link.delete_fwmark_rule(rule["family"], rule["priority"], rule["fwmark"], rule["fwmask"], rule["table"])
                link.flush_table(p["table"])
        else:
            for rule in all_rules:
                if rule["fwmark"] == p["mark"] and rule["fwmask"] == p["mask"] and rule["table"] != p["table"]:
                    module.fail_json(msg="mark: %#x already selects table %d (%s); one mark, one uplink"
                                     % (p["mark"], rule["table"], render_rule(rule)), field="mark")
            wanted = list(user_routes)
            if p["interface"] is not None:
                iface = links.get(p["interface"])
                if iface is None:
                    module.fail_json(msg="interface: %s does not exist" % p["interface"], field="interface")
                wanted = model.connected_routes(p["interface"], [a["address"] for a in link.addresses(iface.index)]) + wanted
                link_routes = [r for r in wanted if r.gateway is None and r.type == "unicast"]
                for i, route in enumerate(user_routes):
                    if route.gateway and not model.gateway_reachable(route.gateway, route.family, link_routes):
                        module.fail_json(msg="routes[%d].gateway: %s is not in a prefix of %s"
                                         % (i, route.gateway, p["interface"]), field="routes[%d].gateway" % i)
            for i, route in enumerate(wanted):
                if route.dev and route.dev not in links:
                    module.fail_json(msg="routes[%d].interface: %s does not exist" % (i, route.dev), field="routes")
            families = sorted(set(r.family for r in wanted))
            have = set(r["family"] for r in ours if r["priority"] == p["priority"])
            new_rules = [dict(family=f, priority=p["priority"], fwmark=p["mark"], fwmask=p["mask"], table=p["table"])
                         for f in families if f not in have]
            stale_rules = [r for r in ours if r["priority"] != p["priority"] or r["family"] not in families]
            route_changes = model.plan_routes(wanted, current_routes)
            for route in route_changes:
                actions.append("add route %s table %d" % (route.render(), p["table"]))
            for rule in new_rules:
                actions.append("add rule %s" % render_rule(rule))
            for rule in stale_rules:
                actions.append("delete rule %s" % render_rule(rule))
            after_rules = [r for r in ours if r not in stale_rules] + new_rules
            after_routes = model.predict_routes(current_routes, route_changes)
            if actions and not module.check_mode:
                try:
                    # Routes first: a rule pointing at an empty table would send marked
                    # sockets to nowhere for a moment.
                    for route in route_changes:
                        link.replace_route(route, p["table"], links[route.dev].index if route.dev else None)
                    for rule in new_rules:
                        link.add_fwmark_rule(**rule)
                    for rule in stale_rules:
                        link.delete_fwmark_rule(rule["family"], rule["priority"], rule["fwmark"], rule["fwmask"], rule["table"])
                except nl.NetlinkError as exc:
                    module.fail_json(msg="netlink: %s" % to_native(exc), actions=actions)
        if actions and not module.check_mode:
            after_rules = [r for r in link.fwmark_rules()
                           if r["fwmark"] == p["mark"] and r["fwmask"] == p["mask"] and r["table"] == p["table"]]
            after_routes = link.routes(p["table"], dict((lk.index, lk.name) for lk in link.links()))

    result = dict(changed=bool(actions), actions=actions,
                  rules=[render_rule(r) for r in sorted(after_rules, key=render_rule)],
                  routes=[r.render() for r in model.sort_routes(after_routes)])
    if module._diff:
        result["diff"] = dict(before=before, after=render_state(after_rules, after_routes, p["table"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
