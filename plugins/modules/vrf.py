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

from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils.connection import current_sessions


MAIN_TABLE = 254


class VrfError(Exception):
    """A check against the kernel's state failed; ``field`` names the option."""

    def __init__(self, field, message):
        super(VrfError, self).__init__("%s: %s" % (field, message) if field else message)
        self.field = field


def ipv6_enabled():
    return os.path.isdir("/proc/sys/net/ipv6")


class VrfManager(object):
    def __init__(self, module, link, user_routes):
        self.module = module
        self.params = module.params
        self.nl = link
        self.user_routes = user_routes
        self.actions = []
        self.warnings = []
        self.links = link.links()
        self.by_name = dict((lk.name, lk) for lk in self.links)
        self.by_index = dict((lk.index, lk) for lk in self.links)
        self.families = [model.AF_INET] + ([model.AF_INET6] if ipv6_enabled() else [])

    # -- state ---------------------------------------------------------------

    def vrf_link(self):
        link = self.by_name.get(self.params["name"])
        if link is not None and link.kind != "vrf":
            raise VrfError("name", "%s exists and is a %s device, not a VRF" % (link.name, link.kind or "plain"))
        return link

    def slaves(self, vrf):
        return sorted(lk.name for lk in self.links if vrf is not None and lk.master == vrf.index)

    def read_state(self):
        vrf = self.vrf_link()
        if vrf is None:
            return {"exists": False, "name": self.params["name"]}
        names = dict((lk.index, lk.name) for lk in self.links)
        return {
            "exists": True,
            "name": vrf.name,
            "ifindex": vrf.index,
            "table": vrf.vrf_table,
            "up": vrf.up,
            "interfaces": self.slaves(vrf),
            "routes": self.nl.routes(vrf.vrf_table, names),
        }

    # -- checks before any change ----------------------------------------------

    def check_present(self, vrf):
        table = self.params["table"]
        if vrf is not None and vrf.vrf_table != table:
            raise VrfError("table", "VRF %s already uses table %s; a VRF's table cannot be changed in place, "
                                    "remove it (state=absent) first" % (vrf.name, vrf.vrf_table))
        for other in self.links:
            if other.kind == "vrf" and other.vrf_table == table and other.name != self.params["name"]:
                raise VrfError("table", "table %d is already used by VRF %s" % (table, other.name))
        if vrf is None:
            supported, reason = nl.vrf_support()
            if not supported:
                raise VrfError(None, "%s. %s" % (reason, nl.VRF_UNSUPPORTED_HINT))
        for i, ifname in enumerate(self.params["interfaces"]):
            field = "interfaces[%d]" % i
            link = self.by_name.get(ifname)
            if link is None:
                where = " in network namespace %s" % self.params["netns"] if self.params["netns"] else ""
                raise VrfError(field, "interface %s does not exist%s" % (ifname, where))
            if link.kind == "vrf":
                raise VrfError(field, "%s is a VRF device and cannot be enslaved to another VRF" % ifname)
            if link.master and (vrf is None or link.master != vrf.index) and not self.params["force"]:
                master = self.by_index.get(link.master)
                raise VrfError(field, "%s is already enslaved to %s; release it first or set force=true"
                                      % (ifname, master.name if master else link.master))
        self.check_connection(vrf)
        self.check_main_table(vrf)

    def check_main_table(self, vrf):
        """Keep the primary uplink in the main table.

        Enslaving moves an interface out of the main table: its routes there
        are dropped and not restored by state=absent. If it carries the
        preferred default route, the whole host loses its way out.
        """
        to_enslave = [n for n in self.params["interfaces"] if vrf is None or self.by_name[n].master != vrf.index]
        if not to_enslave:
            return
        names = dict((lk.index, lk.name) for lk in self.links)
        main = self.nl.routes(MAIN_TABLE, names)
        for family in self.families:
            defaults = [r for r in main if r.family == family and r.dst == "default" and r.type == "unicast"]
            if not defaults:
                continue
            preferred = min(defaults, key=lambda r: r.metric)
            if preferred.dev in to_enslave and not self.params["force"]:
                field = "interfaces[%d]" % self.params["interfaces"].index(preferred.dev)
                raise VrfError(field, "%s carries the host's preferred default route (%s) in the main table; "
                                      "enslaving it takes that route away. Keep the primary uplink out of VRFs, "
                                      "or set force=true." % (preferred.dev, preferred.render()))
        for ifname in to_enslave:
            lost = [r.render() for r in main if r.dev == ifname and r.gateway]
            if lost:
                self.warnings.append("enslaving %s drops its main-table routes (%s); state=absent does not "
                                     "restore them" % (ifname, "; ".join(lost)))

    def check_connection(self, vrf):
        """Refuse to move the interface the operator's session runs over."""
        if self.params["force"] or self.params["netns"]:
            return  # another namespace never carries this process's sessions
        to_enslave = set(
            name for name in self.params["interfaces"]
            if vrf is None or self.by_name[name].master != vrf.index)
        if not to_enslave:
            return
        for local_ip, peer_ip in current_sessions():
            carriers = set()
            oif = self.nl.route_oif(peer_ip)
            if oif in self.by_index:
                carriers.add(self.by_index[oif].name)
            if local_ip:
                for name in to_enslave:
                    if any(a["address"].split("/")[0] == local_ip
                           for a in self.nl.addresses(self.by_name[name].index)):
                        carriers.add(name)
            hit = sorted(carriers & to_enslave)
            if hit:
                raise VrfError("interfaces", "%s carries the current connection from %s; enslaving it would move its "
                                             "routes into table %d and cut this session off. Set force=true if "
                                             "another path keeps the host reachable."
                               % (hit[0], peer_ip, self.params["table"]))

    def wanted_routes(self):
        """Link routes of the (future) slaves + user routes + unreachable defaults."""
        wanted = []
        for ifname in self.params["interfaces"]:
            link = self.by_name[ifname]
            if not link.up:
                self.warnings.append("%s is down: its link routes appear in table %d when it comes up"
                                     % (ifname, self.params["table"]))
                continue
            wanted += model.connected_routes(ifname, [a["address"] for a in self.nl.addresses(link.index)])
        wanted += self.user_routes
        if self.params["unreachable_default"]:
            wanted += model.unreachable_defaults(self.families)
        return wanted

    def check_gateways(self, wanted):
        link_routes = [r for r in wanted if r.gateway is None and r.type == "unicast"]
        for i, route in enumerate(self.user_routes):
            if route.gateway and not model.gateway_reachable(route.gateway, route.family, link_routes):
                raise VrfError("routes[%d].gateway" % i,
                               "%s is not reachable through a link route of table %d (the prefixes of %s); "
                               "add an address in its subnet to an enslaved interface or a link route for it"
                               % (route.gateway, self.params["table"], ", ".join(self.params["interfaces"]) or "no interface"))

    # -- changes ---------------------------------------------------------------

    def _action(self, text):
        self.actions.append(text)

    def present(self, before):
        vrf = self.vrf_link()
        self.check_present(vrf)
        wanted = self.wanted_routes()
        self.check_gateways(wanted)
        table = self.params["table"]
        name = self.params["name"]

        current_slaves = self.slaves(vrf)
        to_enslave = [n for n in self.params["interfaces"] if n not in current_slaves]
        to_release = [n for n in current_slaves if n not in self.params["interfaces"]]
        current_routes = before.get("routes", []) if before["exists"] else []
        route_changes = model.plan_routes(wanted, current_routes)
        missing_rules = []

        if vrf is None:
            self._action("create vrf %s table %d" % (name, table))
        elif not vrf.up:
            self._action("set vrf %s up" % name)
        for ifname in to_release:
            self._action("release %s from %s" % (ifname, name))
        for ifname in to_enslave:
            self._action("enslave %s to %s" % (ifname, name))
        for route in route_changes:
            self._action("add route %s table %d" % (route.render(), table))
        if vrf is not None:
            missing_rules = [f for f in self.families if f not in self.nl.l3mdev_rules()]
            for family in missing_rules:
                self._action("add %s rule l3mdev pref %d" % ("ipv6" if family == model.AF_INET6 else "ipv4",
                                                             nl.L3MDEV_RULE_PRIORITY))

        after = {
            "exists": True,
            "name": name,
            "ifindex": vrf.index if vrf else None,
            "table": table,
            "up": True,
            "interfaces": sorted(self.params["interfaces"]),
            "routes": model.predict_routes(current_routes, route_changes, removed_devs=to_release),
        }
        if self.module.check_mode or not self.actions:
            return after

        created = None
        moved = {}
        try:
            if vrf is None:
                created = self.nl.create_vrf(name, table)
                vrf_index = created
                for family in self.families:
                    if family not in self.nl.l3mdev_rules():
                        self.nl.add_l3mdev_rule(family)
            else:
                vrf_index = vrf.index
                if not vrf.up:
                    self.nl.ipr.link("set", index=vrf.index, state="up")
                for family in missing_rules:
                    self.nl.add_l3mdev_rule(family)
            for ifname in to_release:
                self.move(ifname, 0, moved)
            for ifname in to_enslave:
                self.move(ifname, vrf_index, moved)
            # Re-read: enslaving moved the kernel's own link routes; add what is still missing.
            names = dict((lk.index, lk.name) for lk in self.nl.links())
            for route in model.plan_routes(wanted, self.nl.routes(table, names)):
                dev_index = self.by_name[route.dev].index if route.dev else None
                self.nl.replace_route(route, table, dev_index)
        except Exception:
            self.rollback(created, moved)
            raise
        return after

    def move(self, ifname, master, moved):
        """Enslave (master=index) or release (master=0), keeping addresses."""
        link = self.by_name[ifname]
        saved = [a for a in self.nl.addresses(link.index) if a["permanent"]]
        moved[ifname] = (link.master, saved)
        self.nl.set_master(link.index, master)
        self.restore_addresses(link.index, saved)

    def restore_addresses(self, index, saved):
        present = set(a["address"] for a in self.nl.addresses(index))
        for addr in saved:
            if addr["address"] not in present and not addr["address"].startswith("fe80:"):
                self.nl.add_address(index, addr["address"])

    def rollback(self, created, moved):
        """Best effort: put interfaces back and drop a VRF this run created."""
        for ifname, (master, saved) in moved.items():
            try:
                index = self.by_name[ifname].index
                self.nl.set_master(index, master)
                self.restore_addresses(index, saved)
            except Exception:
                pass
        if created:
            try:
                self.nl.delete_link(created)
                self.nl.flush_table(self.params["table"])
            except Exception:
                pass

    def absent(self, before):
        vrf = self.vrf_link()
        if vrf is None:
            return {"exists": False, "name": self.params["name"]}
        if self.params["table"] is not None and self.params["table"] != vrf.vrf_table:
            raise VrfError("table", "VRF %s uses table %s, not %s" % (vrf.name, vrf.vrf_table, self.params["table"]))
        slaves = self.slaves(vrf)
        for ifname in slaves:
            self._action("release %s from %s" % (ifname, vrf.name))
        self._action("delete vrf %s" % vrf.name)
        leftover = [r for r in before["routes"] if r.dev is None or r.dev not in slaves]
        for route in leftover:
            self._action("delete route %s table %s" % (route.render(), vrf.vrf_table))
        last_vrf = not any(lk.kind == "vrf" and lk.index != vrf.index for lk in self.links)
        rules = self.nl.l3mdev_rules() if last_vrf else set()
        for family in sorted(rules):
            self._action("delete %s rule l3mdev pref %d" % ("ipv6" if family == model.AF_INET6 else "ipv4",
                                                            nl.L3MDEV_RULE_PRIORITY))
        if self.module.check_mode:
            return {"exists": False, "name": vrf.name}
        moved = {}
        for ifname in slaves:
            # Release one by one so each interface's addresses can be put back.
            self.move(ifname, 0, moved)
        self.nl.delete_link(vrf.index)
        self.nl.flush_table(vrf.vrf_table)
        for family in rules:
            self.nl.delete_l3mdev_rule(family)
        return {"exists": False, "name": vrf.name}


def result_vrf(state):
    if not state.get("exists"):
        return {}
    return {
        "name": state["name"],
        "ifindex": state.get("ifindex"),
        "table": state["table"],
        "interfaces": sorted(state.get("interfaces") or []),
        "routes": [r.render() for r in model.sort_routes(state.get("routes") or [])],
    }


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
        manager = VrfManager(module, link, user_routes)
        try:
            before = manager.read_state()
            if module.params["state"] == "present":
                after = manager.present(before)
            else:
                after = manager.absent(before)
        except VrfError as exc:
            module.fail_json(msg=to_native(exc), field=exc.field)
        except nl.NetlinkError as exc:
            msg = to_native(exc)
            if exc.code == 95 and module.params["state"] == "present":  # EOPNOTSUPP for kind vrf
                msg = "the kernel refused to create a VRF (%s). %s" % (msg, nl.VRF_UNSUPPORTED_HINT)
            module.fail_json(msg="netlink: %s; changes of this run were rolled back" % msg,
                             actions=manager.actions, exception=traceback.format_exc())
        for warning in manager.warnings:
            module.warn(warning)

        if not module.check_mode and manager.actions:
            # What the kernel shows now, not what we predicted.
            manager.links = link.links()
            manager.by_name = dict((lk.name, lk) for lk in manager.links)
            after = manager.read_state()

    changed = bool(manager.actions)
    result = dict(changed=changed, vrf=result_vrf(after), actions=manager.actions)
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
