# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Thin netlink layer over pyroute2 shared by the collection's modules.

It reads links, addresses, routes and rules into plain values (``Link``,
``Route`` from vrf_model) and performs single changes. It works with the
pyroute2 of Debian 12 (0.7) as well as with 0.9, where namespaces moved
into IPRoute itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import os

from ansible_collections.netlb.multiwan.plugins.module_utils import kernel_support, steering

from ansible_collections.netlb.multiwan.plugins.module_utils.vrf_model import (
    AF_INET,
    AF_INET6,
    ROUTE_TYPES,
    SCOPE_NAMES,
    SCOPES,
    Route,
)

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
    try:
        from pyroute2 import __version__ as PYROUTE2_VERSION
    except ImportError:  # pragma: no cover - a pyroute2 without it
        PYROUTE2_VERSION = "unknown"
except ImportError as exc:  # pragma: no cover - depends on the host
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc
    PYROUTE2_VERSION = None

    class NetlinkError(Exception):
        code = 0

IFF_UP = 0x1
IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80
NETNS_RUN_DIR = "/run/netns"
ROUTE_TYPE_IDS = dict((name, num) for num, name in ROUTE_TYPES.items())
RTPROT_KERNEL = 2
RTPROT_STATIC = 4
# `ip rule` shows it as "proto 245": the source rules for unconnected UDP are the balancer's.
SOURCE_RULE_PROTOCOL = 245
L3MDEV_RULE_PRIORITY = steering.L3MDEV_RULE_PRIORITY


class NetnsNotFound(Exception):
    pass


class Link(object):
    __slots__ = ("index", "name", "kind", "master", "up", "vrf_table", "carrier", "operstate")

    def __init__(self, index, name, kind=None, master=0, up=False, vrf_table=None, carrier=None, operstate=None):
        self.index = index
        self.name = name
        self.kind = kind
        self.master = master
        self.up = up  # administratively (IFF_UP)
        self.vrf_table = vrf_table
        self.carrier = carrier  # None: not reported
        self.operstate = operstate  # "UP", "DOWN", "UNKNOWN" (no carrier detection), ...

    def __repr__(self):
        return "Link(%d %s kind=%s master=%s)" % (self.index, self.name, self.kind, self.master)


def netns_path(name):
    return os.path.join(NETNS_RUN_DIR, name)


def open_iproute(netns=None):
    """IPRoute in the current or a named namespace; never creates a namespace."""
    if netns is None:
        return IPRoute()
    if not os.path.exists(netns_path(netns)):
        raise NetnsNotFound("network namespace %s does not exist (%s)" % (netns, netns_path(netns)))
    try:
        return IPRoute(netns=netns, flags=0)
    except TypeError:
        # pyroute2 < 0.9: namespaces are a separate class
        from pyroute2 import NetNS
        return NetNS(netns, flags=0)


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _nested(msg, *names):
    for name in names:
        if msg is None:
            return None
        msg = msg.get_attr(name)
    return msg


# Read from files alone, without pyroute2 (balancer_facts takes them from kernel_support);
# here for the engines, which reach everything of the kernel through this module.
kernel_release = kernel_support.kernel_release
vrf_support = kernel_support.vrf_support

VRF_UNSUPPORTED_HINT = (
    "Load the vrf kernel module ('modprobe vrf'; on Debian/Ubuntu it ships with the kernel "
    "image, on minimal cloud kernels install the 'extra' modules package), or use fwmark "
    "steering, which needs no VRF (balancer_steering: fwmark)."
)


class Netlink(object):
    """A netlink session in one namespace. Use as a context manager."""

    def __init__(self, netns=None):
        self.netns = netns
        self.ipr = open_iproute(netns)

    def close(self):
        self.ipr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading -----------------------------------------------------------

    @staticmethod
    def _link(msg):
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        table = None
        if kind == "vrf":
            table = _nested(info, "IFLA_INFO_DATA", "IFLA_VRF_TABLE")
        carrier = msg.get_attr("IFLA_CARRIER")
        return Link(
            index=msg["index"],
            name=msg.get_attr("IFLA_IFNAME"),
            kind=kind,
            master=_attr(msg, "IFLA_MASTER", 0),
            up=bool(msg["flags"] & IFF_UP),
            vrf_table=table,
            carrier=None if carrier is None else bool(carrier),
            operstate=msg.get_attr("IFLA_OPERSTATE"),
        )

    def links(self):
        return [self._link(msg) for msg in self.ipr.get_links()]

    def link(self, name=None, index=None):
        """The Link named *name* (or numbered *index*), None when there is none."""
        if index is None:
            found = self.ipr.link_lookup(ifname=name)
            if not found:
                return None
            index = found[0]
        try:
            return self._link(self.ipr.get_links(index)[0])
        except (NetlinkError, IndexError):
            return None  # gone between the lookup and the read

    def byte_counters(self, name):
        """(index, bytes received + sent) of link *name*, (None, None) when there is none."""
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            return None, None
        try:
            msg = self.ipr.get_links(found[0])[0]
        except (NetlinkError, IndexError):
            return None, None
        stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
        return found[0], int(stats.get("rx_bytes", 0)) + int(stats.get("tx_bytes", 0))

    def master_name(self, link):
        master = self.link(index=link.master) if link.master else None
        return master.name if master else None

    def global_addresses(self, index, family):
        """['addr/prefixlen'] of the link's global (scope 0) addresses of IP version *family*."""
        af = AF_INET6 if family == 6 else AF_INET
        return [a["address"] for a in self.addresses(index) if a["scope"] == 0 and a["family"] == af]

    def default_route(self, table, family, index):
        """Whether *table* has a unicast IPv*family* default route out of link *index*."""
        af = AF_INET6 if family == 6 else AF_INET
        try:
            msgs = self.ipr.get_routes(family=af, table=table)
        except NetlinkError:
            return False
        for msg in msgs:
            if msg["dst_len"] or msg["type"] != ROUTE_TYPE_IDS["unicast"] \
                    or _attr(msg, "RTA_TABLE", msg["table"]) != table:
                continue
            hops = [msg.get_attr("RTA_OIF")] + [hop["oif"] for hop in msg.get_attr("RTA_MULTIPATH") or []]
            if index in hops:
                return True
        return False

    def addresses(self, index):
        """Addresses of a link as 'addr/prefixlen' with their permanence."""
        result = []
        for msg in self.ipr.get_addr(index=index):
            if msg["index"] != index:
                continue  # old pyroute2 ignores the filter for some families
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            flags = _attr(msg, "IFA_FLAGS", msg["flags"])
            result.append({
                "address": "%s/%d" % (addr, msg["prefixlen"]),
                "family": msg["family"],
                "permanent": bool(flags & IFA_F_PERMANENT),
                "scope": msg["scope"],  # 0: global; 253 link, 254 host
            })
        return result

    def routes(self, table, names=None):
        """Unicast/unreachable/blackhole/prohibit routes of ``table`` as Route."""
        if names is None:
            names = dict((link.index, link.name) for link in self.links())
        result = []
        for family in (AF_INET, AF_INET6):
            try:
                msgs = self.ipr.get_routes(family=family, table=table)
            except NetlinkError as exc:
                if exc.code == errno.EAFNOSUPPORT:
                    continue
                raise
            for msg in msgs:
                if _attr(msg, "RTA_TABLE", msg["table"]) != table:
                    continue
                rtype = ROUTE_TYPES.get(msg["type"])
                if rtype is None:
                    continue
                dst = msg.get_attr("RTA_DST")
                dst = "%s/%d" % (dst, msg["dst_len"]) if msg["dst_len"] else "default"
                if dst != "default":
                    dst = str(ipaddress.ip_network(dst, strict=False))
                oif = msg.get_attr("RTA_OIF")
                dev = names.get(oif) if oif else None
                if rtype != "unicast" or dev == "lo":
                    dev = None  # the kernel hangs unreachable routes on lo
                result.append(Route(
                    family=msg["family"],
                    dst=dst,
                    type=rtype,
                    gateway=msg.get_attr("RTA_GATEWAY"),
                    dev=dev,
                    scope=SCOPE_NAMES.get(msg["scope"], str(msg["scope"])),
                    metric=_attr(msg, "RTA_PRIORITY", 0),
                    src=msg.get_attr("RTA_PREFSRC"),
                ))
        return result

    def _rules(self):
        """(family, rule message) of every IPv4 and IPv6 policy rule."""
        for family in (AF_INET, AF_INET6):
            try:
                rules = self.ipr.get_rules(family=family)
            except NetlinkError:
                continue  # e.g. IPv6 disabled
            for msg in rules:
                yield family, msg

    def l3mdev_rules(self):
        """Families that have the l3mdev rule at the vrf driver's priority."""
        return set(family for family, msg in self._rules()
                   if msg.get_attr("FRA_L3MDEV") and _attr(msg, "FRA_PRIORITY", 0) == L3MDEV_RULE_PRIORITY)

    def fwmark_rules(self):
        """[{family, priority, fwmark, fwmask, table}] of the rules that match a fwmark."""
        return [{
            "family": family,
            "priority": _attr(msg, "FRA_PRIORITY", 0),
            "fwmark": msg.get_attr("FRA_FWMARK"),
            "fwmask": _attr(msg, "FRA_FWMASK", 0xFFFFFFFF),
            "table": _attr(msg, "FRA_TABLE", msg["table"]),
        } for family, msg in self._rules() if msg.get_attr("FRA_FWMARK") is not None]

    def source_rules(self):
        """[{family, priority, src, table}] of the source rules the balancer made:
        tagged with its protocol (SOURCE_RULE_PROTOCOL), so a rule of the operator's
        that looks the same is never taken for one."""
        out = []
        for family, msg in self._rules():
            src = msg.get_attr("FRA_SRC")
            if src is None or msg.get_attr("FRA_PROTOCOL") != SOURCE_RULE_PROTOCOL:
                continue
            out.append({"family": family, "priority": _attr(msg, "FRA_PRIORITY", 0),
                        "src": "%s/%d" % (src, msg["src_len"]), "table": _attr(msg, "FRA_TABLE", msg["table"])})
        return out

    def add_source_rule(self, family, priority, src, table):
        net = ipaddress.ip_network(src, strict=False)
        self.ipr.rule("add", family=family, priority=priority, src=str(net.network_address),
                      src_len=net.prefixlen, table=table, action="FR_ACT_TO_TBL", protocol=SOURCE_RULE_PROTOCOL)

    def delete_source_rule(self, family, priority, src, table):
        net = ipaddress.ip_network(src, strict=False)
        try:
            self.ipr.rule("del", family=family, priority=priority, src=str(net.network_address),
                          src_len=net.prefixlen, table=table, action="FR_ACT_TO_TBL",
                          protocol=SOURCE_RULE_PROTOCOL)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise

    def add_fwmark_rule(self, family, priority, fwmark, fwmask, table):
        self.ipr.rule("add", family=family, priority=priority, fwmark=fwmark, fwmask=fwmask,
                      table=table, action="FR_ACT_TO_TBL")

    def delete_fwmark_rule(self, family, priority, fwmark, fwmask, table):
        try:
            self.ipr.rule("del", family=family, priority=priority, fwmark=fwmark, fwmask=fwmask,
                          table=table, action="FR_ACT_TO_TBL")
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise

    def route_oif(self, address):
        """Output interface index the kernel picks for ``address``, or None."""
        try:
            msgs = self.ipr.route("get", dst=address)
        except NetlinkError:
            return None
        for msg in msgs:
            oif = msg.get_attr("RTA_OIF")
            if oif:
                return oif
        return None

    # -- changing ----------------------------------------------------------

    def create_vrf(self, name, table):
        self.ipr.link("add", ifname=name, kind="vrf", vrf_table=table)
        index = self.ipr.link_lookup(ifname=name)[0]
        self.ipr.link("set", index=index, state="up")
        return index

    def delete_link(self, index):
        self.ipr.link("del", index=index)

    def set_master(self, index, master):
        self.ipr.link("set", index=index, master=master)

    def add_address(self, index, address):
        iface = ipaddress.ip_interface(address)
        kwargs = dict(index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        if iface.version == 6:
            # No duplicate address detection: the address was valid a moment ago, and a
            # tentative address cannot be a source for the next few seconds.
            kwargs["flags"] = IFA_F_NODAD
        try:
            self.ipr.addr("add", **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def _route_kwargs(self, route, table, dev_index):
        kwargs = dict(
            family=route.family,
            dst="0.0.0.0" if route.family == AF_INET else "::",
            dst_len=0,
            table=table,
            type=ROUTE_TYPE_IDS[route.type],
            priority=route.metric,
            proto=RTPROT_STATIC,
        )
        if route.dst != "default":
            net = ipaddress.ip_network(route.dst)
            kwargs["dst"] = str(net.network_address)
            kwargs["dst_len"] = net.prefixlen
        if route.type == "unicast":
            kwargs["scope"] = SCOPES[route.scope]
            if route.gateway:
                kwargs["gateway"] = route.gateway
            if dev_index:
                kwargs["oif"] = dev_index
            if route.src:
                kwargs["prefsrc"] = route.src
        return kwargs

    def replace_route(self, route, table, dev_index=None):
        self.ipr.route("replace", **self._route_kwargs(route, table, dev_index))

    def delete_route(self, route, table, dev_index=None):
        kwargs = self._route_kwargs(route, table, dev_index)
        kwargs.pop("proto", None)
        try:
            self.ipr.route("del", **kwargs)
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT):
                raise

    def flush_table(self, table):
        for route in self.routes(table):
            self.delete_route(route, table)

    def add_l3mdev_rule(self, family):
        self.ipr.rule("add", family=family, priority=L3MDEV_RULE_PRIORITY, l3mdev=1, action="FR_ACT_TO_TBL")

    def delete_l3mdev_rule(self, family):
        try:
            self.ipr.rule("del", family=family, priority=L3MDEV_RULE_PRIORITY, l3mdev=1, action="FR_ACT_TO_TBL")
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise
