# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the vrf module: input validation, route model, rendering.

Nothing here talks to the kernel, so every rule can be unit tested. The
netlink side (module_utils/netlink.py) turns kernel objects into the same
``Route`` values, which makes "what is there" and "what we want" comparable.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from ansible_collections.netlb.multiwan.plugins.module_utils import schema

AF_INET = 2
AF_INET6 = 10

# The kernel's VRF documentation (Documentation/networking/vrf.rst) recommends
# this metric for the table's catch-all, so that it loses against any route a
# user adds but still stops lookups from falling through to the main table.
UNREACHABLE_METRIC = 4278198272

# The rules for names, tables, addresses and numbers are the collection's one
# schema (module_utils/schema.py); these names stay for the modules that use them.
RESERVED_TABLES = schema.RESERVED_TABLES
MAX_U32 = schema.U32
IFNAME_RE = schema.IFNAME_RE

SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254}
SCOPE_NAMES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}

# Route types the module shows and manages; local/broadcast/multicast entries
# are the kernel's own bookkeeping for addresses and would only be noise.
ROUTE_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
SHOWN_ROUTE_TYPES = set(ROUTE_TYPES.values())


# argument_spec of the ``routes`` option, shared by the vrf and fwmark_table
# modules (documented once in the netlb.multiwan.routes doc fragment).
ROUTES_ARGUMENT_SPEC = dict(
    type="list", elements="dict", default=[],
    options=dict(
        dst=dict(type="str", default="default"),
        gateway=dict(type="str"),
        interface=dict(type="str"),
        scope=dict(type="str", choices=["global", "link", "host", "site"]),
        metric=dict(type="int"),
        type=dict(type="str", default="unicast", choices=["unicast", "unreachable", "blackhole", "prohibit"]),
    ),
)


# Bad input: ``field`` names the option so the user knows what to fix.
ValidationError = schema.SchemaError


def default_metric(family):
    # What the kernel stores when no metric is given: IPv6 uses 1024.
    return 1024 if family == AF_INET6 else 0


class Route(object):
    """One route of a table, normalised so kernel and user routes compare.

    ``key`` is what identifies a route to the kernel (family, destination,
    metric); the other fields are what ``replace`` would change.
    """

    __slots__ = ("family", "type", "dst", "gateway", "dev", "scope", "metric", "src")

    def __init__(self, family, dst, type="unicast", gateway=None, dev=None,
                 scope="global", metric=None, src=None):
        self.family = family
        self.type = type
        self.dst = dst  # "default" or a network in CIDR notation
        self.gateway = gateway
        self.dev = dev
        self.scope = scope
        self.metric = default_metric(family) if metric is None else metric
        self.src = src

    @property
    def key(self):
        return (self.family, self.dst, self.metric)

    def matches(self, other):
        """True when ``other`` (from the kernel) satisfies this wanted route.

        Fields the user left open (dev of a gateway route, src) are not
        compared: the kernel fills them in.
        """
        if self.key != other.key or self.type != other.type:
            return False
        if self.gateway != other.gateway or self.scope != other.scope:
            return False
        if self.dev is not None and self.dev != other.dev:
            return False
        return True

    def render(self):
        """iproute2-like one-liner, for diffs and return values."""
        words = [] if self.type == "unicast" else [self.type]
        words.append(self.dst)
        if self.gateway:
            words += ["via", self.gateway]
        if self.dev and self.type == "unicast":
            words += ["dev", self.dev]
        if self.scope != "global":
            words += ["scope", self.scope]
        if self.src:
            words += ["src", self.src]
        if self.metric != default_metric(self.family):
            words += ["metric", str(self.metric)]
        return " ".join(words)

    def as_dict(self):
        return {
            "family": "ipv6" if self.family == AF_INET6 else "ipv4",
            "type": self.type,
            "dst": self.dst,
            "gateway": self.gateway,
            "dev": self.dev,
            "scope": self.scope,
            "metric": self.metric,
        }

    def __repr__(self):
        return "Route(%s)" % self.render()

    def __eq__(self, other):
        return isinstance(other, Route) and self.as_dict() == other.as_dict()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.key)


def sort_routes(routes):
    return sorted(routes, key=lambda r: (r.family, r.type != "unicast", r.dst != "default", r.dst, r.metric))


def normalise_network(value, field):
    """'default', '0.0.0.0/0', '10.0.0.7/24' -> ('default' | '10.0.0.0/24', family)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be 'default' or a prefix in CIDR notation, got %r" % (value,))
    text = value.strip()
    if text in ("default", "default4"):
        return "default", AF_INET
    if text == "default6":
        return "default", AF_INET6
    net = ipaddress.ip_network(schema.prefix(text, field))
    family = AF_INET6 if net.version == 6 else AF_INET
    if net.prefixlen == 0:
        return "default", family
    return str(net), family


def parse_address(value, field):
    """schema.address, as an ipaddress object."""
    return ipaddress.ip_address(schema.address(value, field))


def validate_ifname(value, field):
    return schema.ifname(value, field)


def validate_table(table, field="table"):
    if table is None:
        raise ValidationError(field, "is required when state=present")
    return schema.table(table, field)


def validate_metric(value, field):
    if value is None:
        return None
    return schema.metric(value, field)


def parse_user_route(spec, index, interfaces):
    """One entry of the ``routes`` option -> Route. ``interfaces`` are the VRF's."""
    field = "routes[%d]" % index
    if not isinstance(spec, dict):
        raise ValidationError(field, "must be a dictionary with dst/gateway/interface/scope/metric")
    unknown = set(spec) - {"dst", "gateway", "interface", "scope", "metric", "type"}
    if unknown:
        raise ValidationError(field, "unknown key(s) %s" % ", ".join(sorted(unknown)))
    dst, family = normalise_network(spec.get("dst") or "default", field + ".dst")
    rtype = spec.get("type") or "unicast"
    if rtype not in SHOWN_ROUTE_TYPES:
        raise ValidationError(field + ".type", "must be one of %s, got %r" % (", ".join(sorted(SHOWN_ROUTE_TYPES)), rtype))
    gateway = spec.get("gateway")
    if gateway is not None:
        addr = parse_address(gateway, field + ".gateway")
        gw_family = AF_INET6 if addr.version == 6 else AF_INET
        if spec.get("dst") in (None, "default"):
            family = gw_family  # "default via 2001:db8::1" is an IPv6 default
        elif gw_family != family:
            raise ValidationError(field + ".gateway", "%s is not of the same address family as dst %s" % (gateway, dst))
        gateway = str(addr)
    dev = spec.get("interface")
    if dev is not None:
        validate_ifname(dev, field + ".interface")
        if dev not in interfaces:
            raise ValidationError(
                field + ".interface", "%s is not one of the VRF's interfaces (%s)" % (dev, ", ".join(interfaces) or "none"))
    if rtype == "unicast" and gateway is None and dev is None:
        raise ValidationError(field, "needs a gateway or an interface")
    if rtype != "unicast" and (gateway or dev):
        raise ValidationError(field, "an %s route takes no gateway or interface" % rtype)
    scope = spec.get("scope")
    if scope is None:
        scope = "link" if (gateway is None and dev is not None) else "global"
    if scope not in SCOPES:
        raise ValidationError(field + ".scope", "must be one of global, link, host, site; got %r" % (scope,))
    if scope == "universe":
        scope = "global"
    if gateway is not None and scope != "global":
        raise ValidationError(field + ".scope", "a route via a gateway must have scope global")
    metric = validate_metric(spec.get("metric"), field + ".metric")
    return Route(family, dst, type=rtype, gateway=gateway, dev=dev, scope=scope, metric=metric)


def validate_params(params):
    """Check every option that needs no kernel; return the parsed user routes.

    Raises ValidationError naming the offending field.
    """
    validate_ifname(params["name"], "name")
    interfaces = params.get("interfaces") or []
    seen = set()
    for i, ifname in enumerate(interfaces):
        validate_ifname(ifname, "interfaces[%d]" % i)
        if ifname == params["name"]:
            raise ValidationError("interfaces[%d]" % i, "a VRF cannot be its own slave")
        if ifname == "lo":
            raise ValidationError("interfaces[%d]" % i, "the loopback device cannot be enslaved to a VRF")
        if ifname in seen:
            raise ValidationError("interfaces[%d]" % i, "%s is listed twice" % ifname)
        seen.add(ifname)
    if params.get("netns") is not None:
        netns = params["netns"]
        if not isinstance(netns, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", netns) or netns in (".", ".."):
            raise ValidationError("netns", "%r is not a valid namespace name (as in /run/netns/NAME)" % (netns,))
    if params.get("state", "present") == "absent":
        if params.get("table") is not None:
            validate_table(params["table"])
        return []
    validate_table(params.get("table"))
    routes = [parse_user_route(spec, i, interfaces) for i, spec in enumerate(params.get("routes") or [])]
    keys = {}
    for i, route in enumerate(routes):
        if route.key in keys:
            raise ValidationError(
                "routes[%d]" % i, "same destination and metric as routes[%d] (%s)" % (keys[route.key], route.render()))
        keys[route.key] = i
    return routes


def unreachable_defaults(families):
    return [Route(f, "default", type="unreachable", metric=UNREACHABLE_METRIC) for f in families]


def connected_routes(ifname, addresses):
    """Link-scope routes the kernel derives from an interface's addresses.

    ``addresses`` are 'addr/prefixlen' strings. IPv6 link-local (fe80::/64)
    is left to the kernel: it exists per device and never needs our help.
    """
    routes = []
    for text in addresses:
        iface = ipaddress.ip_interface(text)
        net = iface.network
        if iface.version == 6:
            if iface.ip.is_link_local:
                continue
            if net.prefixlen == 128:
                continue
            routes.append(Route(AF_INET6, str(net), dev=ifname, metric=256))
        else:
            if net.prefixlen == 32:
                continue
            routes.append(Route(AF_INET, str(net), dev=ifname, scope="link", src=str(iface.ip)))
    return routes


def gateway_reachable(gateway, family, link_routes):
    """Is ``gateway`` inside a link-scope prefix of the table (what the kernel checks)?"""
    addr = ipaddress.ip_address(gateway)
    if family == AF_INET6 and addr.is_link_local:
        return True  # fe80::/64 exists on every enslaved interface
    for route in link_routes:
        if route.family != family or route.gateway is not None or route.dst == "default":
            continue
        if route.type != "unicast":
            continue
        if addr in ipaddress.ip_network(route.dst):
            return True
    return False


def plan_routes(wanted, current):
    """Which wanted routes are missing or differ. ``current``: routes in the table."""
    by_key = {}
    for route in current:
        by_key.setdefault(route.key, []).append(route)
    todo = []
    for route in wanted:
        if not any(route.matches(have) for have in by_key.get(route.key, [])):
            todo.append(route)
    return todo


def predict_routes(current, changes, removed_devs=()):
    """Routes of the table after ``changes`` are applied (for the diff)."""
    result = [r for r in current if r.dev not in removed_devs]
    for change in changes:
        result = [r for r in result if r.key != change.key]
        result.append(change)
    return sort_routes(result)


def render_state(state):
    """Text block for diff mode: the VRF, its interfaces and its table."""
    if not state or not state.get("exists"):
        return "vrf: absent\n"
    lines = [
        "vrf: %s" % state["name"],
        "table: %s" % state["table"],
        "state: %s" % ("up" if state.get("up") else "down"),
        "interfaces:",
    ]
    lines += ["  - %s" % name for name in sorted(state.get("interfaces") or [])] or []
    lines.append("routes (table %s):" % state["table"])
    lines += ["  - %s" % r.render() for r in sort_routes(state.get("routes") or [])]
    return "\n".join(lines) + "\n"
