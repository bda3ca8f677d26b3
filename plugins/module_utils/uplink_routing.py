# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Routing of the extra uplinks: the engine of netlb.multiwan.vrf and
netlb.multiwan.fwmark_table, also run at boot without Ansible
(``netlb-multiwan-apply uplink NAME`` calls ``apply_uplink``).

One implementation, so a boot applies exactly what a role run applies: the
same checks (the session guard, the primary uplink kept in the main table,
gateways reachable, the l3mdev rule, the rule mask) and the same routes.
Engines take plain ``params`` (an AnsibleModule's, or the state document's
entry turned into the same options by its steering provider, module_utils/steering) and a
module_utils/netlink.Netlink.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import schema, steering
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils.connection import current_sessions

MAIN_TABLE = steering.MAIN_TABLE
U32 = schema.U32
DEFAULT_RULE_PRIORITY = steering.DEFAULT_RULE_PRIORITY


class RoutingError(Exception):
    """A check against the kernel's state failed; ``field`` names the option."""

    def __init__(self, field, message):
        super(RoutingError, self).__init__("%s: %s" % (field, message) if field else message)
        self.field = field


def ipv6_enabled():
    return os.path.isdir("/proc/sys/net/ipv6")


def family_name(family):
    return "ipv6" if family == model.AF_INET6 else "ipv4"


# -- VRF -----------------------------------------------------------------------

class VrfEngine(object):
    """One VRF: its device, its enslaved interfaces and its table's routes.

    ``params`` are netlb.multiwan.vrf's options. ``run()`` checks everything
    before the first change and rolls its own changes back on a netlink error.
    """

    def __init__(self, params, link, user_routes, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self.nl = link
        self.user_routes = user_routes
        self.actions = []
        self.warnings = []
        self.families = [model.AF_INET] + ([model.AF_INET6] if ipv6_enabled() else [])
        self.refresh()

    def refresh(self):
        self.links = self.nl.links()
        self.by_name = dict((lk.name, lk) for lk in self.links)
        self.by_index = dict((lk.index, lk) for lk in self.links)

    def run(self):
        """(before, after): the VRF as read, and as the kernel shows it after the run
        (as predicted in check mode)."""
        before = self.read_state()
        after = self.present(before) if self.params["state"] == "present" else self.absent(before)
        if not self.check_mode and self.actions:
            self.refresh()
            after = self.read_state()
        return before, after

    # -- state ---------------------------------------------------------------

    def vrf_link(self):
        link = self.by_name.get(self.params["name"])
        if link is not None and link.kind != "vrf":
            raise RoutingError("name", "%s exists and is a %s device, not a VRF" % (link.name, link.kind or "plain"))
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
            raise RoutingError("table", "VRF %s already uses table %s; a VRF's table cannot be changed in place, "
                                        "remove it (state=absent) first" % (vrf.name, vrf.vrf_table))
        for other in self.links:
            if other.kind == "vrf" and other.vrf_table == table and other.name != self.params["name"]:
                raise RoutingError("table", "table %d is already used by VRF %s" % (table, other.name))
        if vrf is None:
            supported, reason = nl.vrf_support()
            if not supported:
                raise RoutingError(None, "%s. %s" % (reason, nl.VRF_UNSUPPORTED_HINT))
        for i, ifname in enumerate(self.params["interfaces"]):
            field = "interfaces[%d]" % i
            link = self.by_name.get(ifname)
            if link is None:
                where = " in network namespace %s" % self.params["netns"] if self.params.get("netns") else ""
                raise RoutingError(field, "interface %s does not exist%s" % (ifname, where))
            if link.kind == "vrf":
                raise RoutingError(field, "%s is a VRF device and cannot be enslaved to another VRF" % ifname)
            if link.master and (vrf is None or link.master != vrf.index) and not self.params["force"]:
                master = self.by_index.get(link.master)
                raise RoutingError(field, "%s is already enslaved to %s; release it first or set force=true"
                                          % (ifname, master.name if master else link.master))
        self.check_connection(vrf)
        self.check_main_table(vrf)

    def to_enslave(self, vrf):
        return [n for n in self.params["interfaces"] if vrf is None or self.by_name[n].master != vrf.index]

    def check_main_table(self, vrf):
        """Keep the primary uplink in the main table.

        Enslaving moves an interface out of the main table: its routes there
        are dropped and not restored by state=absent. If it carries the
        preferred default route, the whole host loses its way out.
        """
        to_enslave = self.to_enslave(vrf)
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
                raise RoutingError(field, "%s carries the host's preferred default route (%s) in the main table; "
                                          "enslaving it takes that route away. Keep the primary uplink out of VRFs, "
                                          "or set force=true." % (preferred.dev, preferred.render()))
        for ifname in to_enslave:
            lost = [r.render() for r in main if r.dev == ifname and r.gateway]
            if lost:
                self.warnings.append("enslaving %s drops its main-table routes (%s); state=absent does not "
                                     "restore them" % (ifname, "; ".join(lost)))

    def check_connection(self, vrf):
        """Refuse to move the interface the operator's session runs over."""
        if self.params["force"] or self.params.get("netns"):
            return  # another namespace never carries this process's sessions
        to_enslave = set(self.to_enslave(vrf))
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
                raise RoutingError("interfaces", "%s carries the current connection from %s; enslaving it would move "
                                                 "its routes into table %d and cut this session off. Set force=true "
                                                 "if another path keeps the host reachable."
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
                raise RoutingError("routes[%d].gateway" % i,
                                   "%s is not reachable through a link route of table %d (the prefixes of %s); "
                                   "add an address in its subnet to an enslaved interface or a link route for it"
                                   % (route.gateway, self.params["table"],
                                      ", ".join(self.params["interfaces"]) or "no interface"))

    # -- changes ---------------------------------------------------------------

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
            self.actions.append("create vrf %s table %d" % (name, table))
        elif not vrf.up:
            self.actions.append("set vrf %s up" % name)
        for ifname in to_release:
            self.actions.append("release %s from %s" % (ifname, name))
        for ifname in to_enslave:
            self.actions.append("enslave %s to %s" % (ifname, name))
        for route in route_changes:
            self.actions.append("add route %s table %d" % (route.render(), table))
        if vrf is not None:
            missing_rules = [f for f in self.families if f not in self.nl.l3mdev_rules()]
            for family in missing_rules:
                self.actions.append("add %s rule l3mdev pref %d" % (family_name(family), nl.L3MDEV_RULE_PRIORITY))

        after = {
            "exists": True,
            "name": name,
            "ifindex": vrf.index if vrf else None,
            "table": table,
            "up": True,
            "interfaces": sorted(self.params["interfaces"]),
            "routes": model.predict_routes(current_routes, route_changes, removed_devs=to_release),
        }
        if self.check_mode or not self.actions:
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
            except Exception:  # pylint: disable=broad-except
                pass  # best effort: the original error is the one to report
        if created:
            try:
                self.nl.delete_link(created)
                self.nl.flush_table(self.params["table"])
            except Exception:  # pylint: disable=broad-except
                pass

    def absent(self, before):
        vrf = self.vrf_link()
        if vrf is None:
            return {"exists": False, "name": self.params["name"]}
        if self.params.get("table") is not None and self.params["table"] != vrf.vrf_table:
            raise RoutingError("table", "VRF %s uses table %s, not %s" % (vrf.name, vrf.vrf_table, self.params["table"]))
        slaves = self.slaves(vrf)
        for ifname in slaves:
            self.actions.append("release %s from %s" % (ifname, vrf.name))
        self.actions.append("delete vrf %s" % vrf.name)
        leftover = [r for r in before["routes"] if r.dev is None or r.dev not in slaves]
        for route in leftover:
            self.actions.append("delete route %s table %s" % (route.render(), vrf.vrf_table))
        self.actions += delete_source_rules(self.nl, vrf.vrf_table, check_mode=self.check_mode)
        last_vrf = not any(lk.kind == "vrf" and lk.index != vrf.index for lk in self.links)
        rules = self.nl.l3mdev_rules() if last_vrf else set()
        for family in sorted(rules):
            self.actions.append("delete %s rule l3mdev pref %d" % (family_name(family), nl.L3MDEV_RULE_PRIORITY))
        if self.check_mode:
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


# -- fwmark table ----------------------------------------------------------------

def render_rule(rule):
    mask = "" if rule["fwmask"] == U32 else "/%#x" % rule["fwmask"]
    return "%s: %d: from all fwmark %#x%s lookup %d" % (
        family_name(rule["family"]), rule["priority"], rule["fwmark"], mask, rule["table"])


def render_fwmark_state(rules, routes, table):
    lines = ["rules:"] + ["  - %s" % render_rule(r) for r in sorted(rules, key=render_rule)]
    lines += ["routes (table %d):" % table] + ["  - %s" % r.render() for r in model.sort_routes(routes)]
    return "\n".join(lines) + "\n"


def validate_fwmark(params):
    """netlb.multiwan.fwmark_table's options that need no kernel; the parsed user routes."""
    schema.table(params["table"], "table")
    schema.mark(params["mark"], "mark")
    schema.mark_mask(params["mark"], params["mask"], "mask")
    schema.rule_priority(params["priority"], "priority")
    interfaces = []
    if params.get("interface") is not None:
        model.validate_ifname(params["interface"], "interface")
        interfaces = [params["interface"]]
    check = dict(name="fwmark", table=params["table"], interfaces=interfaces, routes=params.get("routes"),
                 netns=params.get("netns"), state="present")
    return model.validate_params(check)


class FwmarkTableEngine(object):
    """One uplink's table chosen by its fwmark: the table's routes and one
    ``fwmark MARK/MASK lookup TABLE`` rule per address family that has a route."""

    def __init__(self, params, link, user_routes, check_mode=False):
        self.p = params
        self.nl = link
        self.user_routes = user_routes
        self.check_mode = check_mode
        self.actions = []

    def ours(self, rules):
        p = self.p
        return [r for r in rules if r["fwmark"] == p["mark"] and r["fwmask"] == p["mask"] and r["table"] == p["table"]]

    def run(self):
        """{before (text), rules, routes (as the kernel shows them after the run), after (text)}."""
        p, link = self.p, self.nl
        links = dict((lk.name, lk) for lk in link.links())
        names = dict((lk.index, lk.name) for lk in links.values())
        all_rules = link.fwmark_rules()
        ours = self.ours(all_rules)
        current_routes = link.routes(p["table"], names)
        before = render_fwmark_state(ours, current_routes, p["table"])
        if p["state"] == "absent":
            after_rules, after_routes = self.absent(ours, current_routes)
        else:
            after_rules, after_routes = self.present(all_rules, ours, current_routes, links)
        if self.actions and not self.check_mode:
            after_rules = self.ours(link.fwmark_rules())
            after_routes = link.routes(p["table"], dict((lk.index, lk.name) for lk in link.links()))
        return {"before": before, "after": render_fwmark_state(after_rules, after_routes, p["table"]),
                "rules": [render_rule(r) for r in sorted(after_rules, key=render_rule)],
                "routes": [r.render() for r in model.sort_routes(after_routes)]}

    def absent(self, ours, current_routes):
        p = self.p
        for rule in ours:
            self.actions.append("delete rule %s" % render_rule(rule))
        for route in current_routes:
            self.actions.append("delete route %s table %d" % (route.render(), p["table"]))
        self.actions += delete_source_rules(self.nl, p["table"], check_mode=self.check_mode)
        if self.actions and not self.check_mode:
            for rule in ours:
                self.nl.delete_fwmark_rule(rule["family"], rule["priority"], rule["fwmark"], rule["fwmask"], rule["table"])
            self.nl.flush_table(p["table"])
        return [], []

    def present(self, all_rules, ours, current_routes, links):
        p = self.p
        for rule in all_rules:
            if rule["fwmark"] == p["mark"] and rule["fwmask"] == p["mask"] and rule["table"] != p["table"]:
                raise RoutingError("mark", "%#x already selects table %d (%s); one mark, one uplink"
                                   % (p["mark"], rule["table"], render_rule(rule)))
        wanted = list(self.user_routes)
        if p.get("interface") is not None:
            iface = links.get(p["interface"])
            if iface is None:
                raise RoutingError("interface", "%s does not exist" % p["interface"])
            wanted = model.connected_routes(p["interface"], [a["address"] for a in self.nl.addresses(iface.index)]) + wanted
            link_routes = [r for r in wanted if r.gateway is None and r.type == "unicast"]
            for i, route in enumerate(self.user_routes):
                if route.gateway and not model.gateway_reachable(route.gateway, route.family, link_routes):
                    raise RoutingError("routes[%d].gateway" % i, "%s is not in a prefix of %s"
                                       % (route.gateway, p["interface"]))
        for i, route in enumerate(wanted):
            if route.dev and route.dev not in links:
                raise RoutingError("routes[%d].interface" % i, "%s does not exist" % route.dev)
        families = sorted(set(r.family for r in wanted))
        have = set(r["family"] for r in ours if r["priority"] == p["priority"])
        new_rules = [dict(family=f, priority=p["priority"], fwmark=p["mark"], fwmask=p["mask"], table=p["table"])
                     for f in families if f not in have]
        stale_rules = [r for r in ours if r["priority"] != p["priority"] or r["family"] not in families]
        route_changes = model.plan_routes(wanted, current_routes)
        for route in route_changes:
            self.actions.append("add route %s table %d" % (route.render(), p["table"]))
        for rule in new_rules:
            self.actions.append("add rule %s" % render_rule(rule))
        for rule in stale_rules:
            self.actions.append("delete rule %s" % render_rule(rule))
        if self.actions and not self.check_mode:
            # Routes first: a rule pointing at an empty table would send marked
            # sockets to nowhere for a moment.
            for route in route_changes:
                self.nl.replace_route(route, p["table"], links[route.dev].index if route.dev else None)
            for rule in new_rules:
                self.nl.add_fwmark_rule(**rule)
            for rule in stale_rules:
                self.nl.delete_fwmark_rule(rule["family"], rule["priority"], rule["fwmark"], rule["fwmask"], rule["table"])
        return ([r for r in ours if r not in stale_rules] + new_rules,
                model.predict_routes(current_routes, route_changes))


# -- source rules (unconnected UDP) ------------------------------------------------

def uplink_sources(doc, link):
    """{slot: {"table", "addresses": ["198.51.100.2/32", ...]}} of the uplinks
    routed by a table of their own: the global addresses on their interface now."""
    links = dict((lk.name, lk) for lk in link.links())
    provider = steering.of(doc)
    out = {}
    for slot, up in enumerate(doc.get("uplinks", [])):
        iface = links.get(up.get("interface"))
        if not provider.routed(up) or iface is None:
            continue
        addresses = []
        for entry in link.addresses(iface.index):
            if entry.get("scope", 0) != 0:
                continue  # link-local: the kernel picks those by scope, not by rule
            ip = entry["address"].split("/")[0]
            addresses.append("%s/%d" % (ip, 32 if ":" not in ip else 128))
        out[slot] = {"table": up["table"], "addresses": addresses}
    return out


def converge_source_rules(doc, link, check_mode=False):
    """One ``from ADDR lookup TABLE`` rule per address of every uplink with a
    table, at the role's rule priority: a datagram whose source the program set
    to that address leaves through that uplink, the first one of a socket too
    (the kernel takes mark and device from the socket before the program runs).
    Every other source rule the balancer made goes: addresses an uplink no
    longer has, uplinks taken out, an old priority. (sources, actions): sources
    as uplink_sources gives them, now backed by their rules."""
    priority = doc.get("rule_priority", DEFAULT_RULE_PRIORITY)
    sources = uplink_sources(doc, link)
    wanted = set((s["table"], a) for s in sources.values() for a in s["addresses"])
    have = link.source_rules()
    have_keys = set((r["table"], r["src"]) for r in have if r["priority"] == priority)
    actions = []
    for table, src in sorted(wanted - have_keys):
        actions.append("add rule from %s lookup %d pref %d" % (src, table, priority))
        if not check_mode:
            link.add_source_rule(model.AF_INET6 if ":" in src else model.AF_INET, priority, src, table)
    for rule in have:
        if rule["priority"] != priority or (rule["table"], rule["src"]) not in wanted:
            actions.append("delete rule from %s lookup %d pref %d" % (rule["src"], rule["table"], rule["priority"]))
            if not check_mode:
                link.delete_source_rule(rule["family"], rule["priority"], rule["src"], rule["table"])
    return sources, actions


def delete_source_rules(link, table, check_mode=False):
    """Remove the source rules that point at ``table`` (the uplink is going)."""
    actions = []
    for rule in link.source_rules():
        if rule["table"] == table:
            actions.append("delete rule from %s lookup %d pref %d" % (rule["src"], table, rule["priority"]))
            if not check_mode:
                link.delete_source_rule(rule["family"], rule["priority"], rule["src"], table)
    return actions


# -- the state document's uplinks (boot) -----------------------------------------

def engine_for(kind, params, link, check_mode=False):
    """The engine netlb.multiwan.vrf (kind vrf) or fwmark_table runs, for *params*
    (a steering provider's ``routing``); raises model.ValidationError for a bad value."""
    if kind == "vrf":
        return VrfEngine(params, link, model.validate_params(params), check_mode=check_mode)
    return FwmarkTableEngine(params, link, validate_fwmark(params), check_mode=check_mode)


def apply_uplink(doc, name, netlink=None):
    """Route uplink ``name`` of state document ``doc`` as the role did:
    (kind, actions, warnings), kind as the steering provider's ``routing`` gives it.
    Raises RoutingError (a check failed), model.ValidationError (a bad document) or
    nl.NetlinkError."""
    for uplink in doc.get("uplinks", []):
        if uplink.get("name") == name:
            break
    else:
        raise RoutingError(None, "no uplink %r in the state document (uplinks: %s)"
                           % (name, ", ".join(u.get("name", "?") for u in doc.get("uplinks", []))))
    kind, params = steering.of(doc).routing(doc, uplink)
    if kind is None:
        return None, [], []
    link = netlink or nl.Netlink()
    try:
        engine = engine_for(kind, params, link)
        engine.run()
        return kind, engine.actions, getattr(engine, "warnings", [])
    finally:
        if netlink is None:
            link.close()
