# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's plan of a balancer host: its inventory checked at once.

The program (files/bpf) is one object for every host: how each uplink slot is
steered (VRF device, interface or mark) reaches it through its maps, from the
state document built here. Everything is validated by the collection's one
schema (module_utils/schema.py, which the modules use too): names and devices
against a strict character set, marks, weights and prefixes by value.

Controller-side only (the balancer_plan filter and the tests), hence a
plugin_util and not a module_util.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.netlb.multiwan.plugins.module_utils import schema
from ansible_collections.netlb.multiwan.plugins.module_utils import steering as steering_providers

POLICIES = ("random", "weighted", "round_robin", "hash_dst")
STEERINGS = steering_providers.NAMES
MAX_UPLINKS = schema.MAX_UPLINKS
MAX_WEIGHT = schema.MAX_WEIGHT
MAX_EXCLUDES = schema.MAX_EXCLUDES
LABEL_RE = schema.LABEL_RE
IFNAME_RE = schema.IFNAME_RE

# The error of every check here is the schema's (field, message); the old name stays.
ConfigError = schema.SchemaError


def check_uplinks(uplinks, steering="vrf", policy="random", exclude=()):
    """{"uplinks": each checked (name, interface, weight, tier, and how its sockets are
    steered: dev, mark), "exclude": the normalised prefixes}. Uplinks are dicts
    as in the role's inventory: name, interface, weight, and vrf (vrf steering)
    or mark (fwmark steering); an uplink without vrf/mark stays in the main table."""
    provider = steering_providers.provider(steering)
    schema.choice(policy, "policy", POLICIES)
    if not isinstance(uplinks, (list, tuple)) or not 1 <= len(uplinks) <= MAX_UPLINKS:
        raise ConfigError("uplinks", "needs 1 to %d uplinks" % MAX_UPLINKS)
    rendered, names, seen = [], set(), set()
    for i, up in enumerate(uplinks):
        field = "uplinks[%d]" % i
        if not isinstance(up, dict):
            raise ConfigError(field, "must be a dictionary")
        name = schema.label(up.get("name"), field + ".name")
        if name in names:
            raise ConfigError(field + ".name", "%s is used twice" % name)
        names.add(name)
        interface = schema.ifname(up.get("interface"), field + ".interface")
        weight = schema.weight(up.get("weight", 1), field + ".weight")
        tier = schema.tier(up.get("tier", 1), field + ".tier")
        dev, mark = provider.check(dict(up, interface=interface), field, seen)
        rendered.append({"name": name, "interface": interface, "weight": weight, "tier": tier, "dev": dev,
                         "mark": mark})
    main = [u for u in rendered if not u["dev"] and not u["mark"]]
    if len(main) > 1 and provider.one_main_uplink:
        raise ConfigError("uplinks", "only one uplink can stay in the main table (%s)"
                          % ", ".join(u["name"] for u in main))
    if len(exclude) > MAX_EXCLUDES:
        raise ConfigError("exclude", "at most %d prefixes" % MAX_EXCLUDES)
    nets = [ipaddress.ip_network(schema.prefix(text, "exclude[%d]" % i)) for i, text in enumerate(exclude)]
    # IPv4 first, as the program's two tries hold them.
    return {"uplinks": rendered,
            "exclude": [str(n) for n in nets if n.version == 4] + [str(n) for n in nets if n.version == 6]}


def plan(uplinks, steering="vrf", policy="random", exclude=(), host=None, track=None, exclude_ports=()):
    """A host's whole inventory checked at once: {"steering", "needs": what the steering needs of
    the host (steering.Steering.needs), "policy", "routing": one entry per extra
    uplink for the vrf / fwmark_table modules, "exclude": the normalised prefixes,
    "exclude_ports": the normalised port exclusions, "track", "uplinks": the state
    document's}. *host* is not used any more (the program is the same for every
    host); it stays for callers of 0.1.0.

    Adds to check_uplinks what routing needs: a table per extra uplink (not
    reserved, not shared), gateways of the right family, and the fwmark
    default (mark = table). ``track``: the role's tracking defaults (None: no
    uplink is tracked unless it says so); "track" maps each uplink's name to its
    settings, or None when it is not tracked."""
    provider = steering_providers.provider(steering)
    if not isinstance(uplinks, (list, tuple)):
        raise ConfigError("uplinks", "must be a list")
    filled, routing, tables = [], [], {}
    for i, up in enumerate(uplinks):
        field = "uplinks[%d]" % i
        if not isinstance(up, dict):
            raise ConfigError(field, "must be a dictionary")
        up = dict(up)
        if provider.extra(up):
            table = up.get("table")
            if table is None:
                raise ConfigError(field + ".table", "an uplink outside the main table needs a routing table (%s)"
                                  % schema.TABLE_RANGE_TEXT)
            schema.table(table, field + ".table")
            if table in tables:
                raise ConfigError(field + ".table", "table %d is also used by %s" % (table, tables[table]))
            tables[table] = up.get("name")
            up.update(provider.filled(up))
            if up.get("gateway") is None and up.get("gateway6") is None:
                raise ConfigError(field + ".gateway", "an uplink outside the main table needs a gateway (or gateway6)")
            routes = []
            if up.get("gateway") is not None:
                routes.append({"dst": "default", "gateway": schema.address(up["gateway"], field + ".gateway", 4)})
            if up.get("gateway6") is not None:
                routes.append({"dst": "default", "gateway": schema.address(up["gateway6"], field + ".gateway6", 6)})
            entry = {"name": up.get("name"), "interface": up.get("interface"), "table": table, "routes": routes}
            entry.update(provider.describe_routing(up))
            routing.append(entry)
        filled.append(up)
    checked = check_uplinks(filled, steering=steering, policy=policy, exclude=exclude)
    if provider.one_main_uplink and not any(not u["dev"] and not u["mark"] for u in checked["uplinks"]) and not routing:
        raise ConfigError("uplinks", "no uplink to balance")
    if track is not None:  # the role's own knobs first, named as the role names them
        try:
            schema.track(None, "track", track)
        except schema.SchemaError as exc:
            raise schema.SchemaError(exc.field.replace("track.", "track_", 1), exc.message)
    tracking = dict((up.get("name"), schema.track(up.get("track"), "uplinks[%d].track" % i, track))
                    for i, up in enumerate(uplinks))
    ports = schema.port_exclusions(list(exclude_ports or []), "exclude_ports")
    return {"steering": steering, "needs": provider.needs(), "policy": policy, "routing": routing, "track": tracking,
            "exclude": checked["exclude"], "exclude_ports": ports,
            "uplinks": document_uplinks(uplinks, checked["uplinks"], routing, tracking)}


def document_uplinks(uplinks, checked_uplinks, routing, tracking):
    """The state document's uplinks, in slot order (the program's counters map
    follows it), from the checked values: the weight as the schema read it, the
    gateways normalised, the routing the vrf / fwmark_table engines apply."""
    routed = dict((r["name"], r) for r in routing)
    out = []
    for slot, (up, checked) in enumerate(zip(uplinks, checked_uplinks)):
        r = routed.get(checked["name"], {})
        gateways = dict((key, schema.address(up[key], "uplinks[%d].%s" % (slot, key), version))
                        for key, version in (("gateway", 4), ("gateway6", 6)) if up.get(key) is not None)
        out.append({
            "slot": slot, "name": checked["name"], "interface": checked["interface"],
            "gateway": gateways.get("gateway"), "gateway6": gateways.get("gateway6"),
            "vrf": r.get("vrf"), "table": r.get("table"), "mark": r.get("mark"), "routes": r.get("routes", []),
            "weight": checked["weight"], "tier": checked["tier"], "track": tracking.get(checked["name"]),
            "budget": schema.budget(up.get("budget"), "uplinks[%d].budget" % slot),
        })
    return out
