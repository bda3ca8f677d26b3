# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a socket is put on an uplink: one provider per ``balancer_steering``.

Everything that depends on the steering asks its provider, so a new kind
(another way to reach an uplink) is one class here, not a branch in the plan,
the maps, the routing, the tracker and the status:

- ``check``: the inventory's uplink is valid for this steering (the plan);
- ``routed`` / ``table``: whether the uplink has a table of its own, and the
  table a socket steered to it uses;
- ``slot``: what the program does to such a socket (struct mw_slot: the device
  it binds, the mark it sets, whether its UDP source selects the table);
- ``routing``: what the apply sets up for the uplink and retires with it (the
  options of the vrf or fwmark_table engine), or nothing;
- ``probe``: the same steering for the tracker's own probe socket;
- ``describe``: the uplink as status and metrics show it;
- ``rules``: the policy rules the steering needs, as status checks them.

``usable`` is the one definition of an uplink a socket can be steered to, read
through module_utils/netlink (the tracker and the status alike).

Standard library only: the plan (controller) and the engine on the host import it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ansible_collections.netlb.multiwan.plugins.module_utils import schema
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model

MAIN_TABLE = 254
SO_MARK = 36
SO_BINDTODEVICE = 25
U32 = schema.U32
DEFAULT_RULE_PRIORITY = 10000
L3MDEV_RULE_PRIORITY = 1000  # where the vrf driver puts its own rule
SLOT_USABLE, SLOT_UDP_SOURCE = 1, 2   # MW_SLOT_* of files/bpf/multiwan.h


class Steering(object):
    """The interface; the main-table uplink (no VRF, no mark) is steered by nothing."""

    name = None
    # At most one uplink stays in the main table: the kernel picks one default route there.
    one_main_uplink = True
    # What the host must offer, for the role to check or set up before any change:
    kernel_modules = ()  # loaded at boot (modules-load.d) and before the run
    udp_source = True  # routed uplinks are selected by source address too: sendmsg hooks steer UDP
    own_default_routes = False  # each uplink needs a default route of its own in the main table

    def needs(self):
        """What the host must offer (the plan hands it to the role)."""
        return {"kernel_modules": list(self.kernel_modules), "udp_source": self.udp_source,
                "own_default_routes": self.own_default_routes}

    def key(self, up):
        """What names the uplink's own path (a VRF, a mark), None for the main-table uplink."""
        return None

    def routed(self, up):
        """The uplink has a table of its own, which the apply routes and retires."""
        return self.key(up) is not None

    def table(self, up):
        return int(up["table"]) if self.routed(up) and up.get("table") else MAIN_TABLE

    def slot(self, up):
        """(device, mark, flags) of the uplink's struct mw_slot. A routed uplink's
        table is chosen by its source address too (the source rules): unconnected
        UDP's first datagram takes it."""
        return "", 0, 0

    def routing(self, doc, up):
        """(engine kind, its options) of what the uplink needs routed, or (None, None)."""
        return None, None

    def retirement(self, params):
        """The options that undo what ``routing`` gave (*params*)."""
        return dict(params, state="absent", routes=[])

    def probe(self, sock, up):
        """Send the tracker's probe through the uplink: its interface (the main-table uplink)."""
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, up["interface"].encode())

    def holds(self, kernel, up, sock):
        """Whether the TCP socket *sock* (sockets.TcpSocket) is on *up* the way the
        program puts sockets there: the slot's mark, bound to the slot's device. A
        socket left in the main table (no mark, no device) is the main-table uplink's
        when it left from one of that uplink's addresses. (A socket an application
        marked or bound itself exactly as the program would is not told apart.)"""
        dev, mark, _flags = self.slot(up)
        if sock.mark is None or sock.mark != mark:
            return False
        if dev:
            link = kernel.link(dev)
            return link is not None and sock.bound_ifindex == link.index
        link = kernel.link(up["interface"])
        if sock.bound_ifindex or link is None:
            return False
        return any(a.split("/")[0] == str(sock.src) for family in (4, 6)
                   for a in kernel.global_addresses(link.index, family))

    def strict_rp_filter_drops(self, up):
        """Strict reverse-path filtering drops the replies of sockets steered to *up*:
        the check looks the source up in the main table, where another uplink's
        default route wins. A table of the uplink's own is found by the check
        (fwmark: the mark's rule; vrf: the l3mdev rule)."""
        return False

    def describe(self, up):
        return {"vrf": None, "device": None, "mark": None, "table": self.table(up) if self.routed(up) else "main"}

    def rules(self, kernel, uplinks, families):
        """[{"family", "rule", "uplink", "present", "priority"}] of the policy rules it needs."""
        return []

    def check(self, up, field, seen):
        """(device, mark) of an inventory uplink; raises schema.SchemaError naming the field.
        *seen*: the devices and marks of the uplinks before it."""
        return "", 0

    def extra(self, up):
        """The inventory asks for a table of the uplink's own (the plan fills it in)."""
        return False

    def filled(self, up):
        """What the plan fills in for an extra uplink the inventory left open."""
        return {}

    def describe_routing(self, up):
        """The plan's routing entry's steering fields of an extra uplink."""
        return {}


def route_options(spec):
    """A ``routes`` entry with the defaults AnsibleModule fills in from the argument spec."""
    full = dict((name, option.get("default")) for name, option in model.ROUTES_ARGUMENT_SPEC["options"].items())
    full.update(spec)
    return full


def recorded_routes(up):
    """The routes the plan gave the uplink's table; documents written before the
    state recorded them have only the gateways."""
    if up.get("routes") is not None:
        return [route_options(r) for r in up["routes"]]
    return [route_options({"dst": "default", "gateway": gw}) for gw in (up.get("gateway"), up.get("gateway6")) if gw]


class Vrf(Steering):
    """Sockets bound to the uplink's VRF device (SO_BINDTODEVICE): the VRF's table."""

    name = "vrf"
    kernel_modules = ("vrf",)

    def key(self, up):
        return up.get("vrf") or None

    def slot(self, up):
        return (up["vrf"], 0, SLOT_UDP_SOURCE) if self.routed(up) else ("", 0, 0)

    def routing(self, doc, up):
        if not self.routed(up):
            return None, None
        return "vrf", dict(name=up["vrf"], table=up["table"], interfaces=[up["interface"]],
                           routes=recorded_routes(up), unreachable_default=True, state="present",
                           netns=None, force=bool(doc.get("force", False)))

    def retirement(self, params):
        # By name alone, as the vrf module's state=absent: another table now is still ours.
        return dict(params, state="absent", table=None, interfaces=[], routes=[])

    def probe(self, sock, up):
        if not self.routed(up):
            return Steering.probe(self, sock, up)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, up["vrf"].encode())

    def describe(self, up):
        return dict(Steering.describe(self, up), vrf=self.key(up))

    def rules(self, kernel, uplinks, families):
        if not any(self.routed(u) for u in uplinks):
            return []
        present = kernel.l3mdev_rules()
        return [{"family": family, "rule": "l3mdev", "uplink": None, "present": family in present,
                 "priority": L3MDEV_RULE_PRIORITY if family in present else None} for family in families]

    def check(self, up, field, seen):
        if up.get("mark") is not None:
            raise schema.SchemaError(field + ".mark", "is for fwmark steering; this host uses vrf steering")
        if up.get("vrf") is None:
            if up.get("table") is not None:
                raise schema.SchemaError(field + ".vrf", "a table without a vrf: give the VRF device name, or drop "
                                                         "the table for the main-table uplink")
            return "", 0
        dev = schema.ifname(up["vrf"], field + ".vrf", kind="device")
        if dev in seen:
            raise schema.SchemaError(field + ".vrf", "%s is used by two uplinks" % dev)
        seen.add(dev)
        return dev, 0

    def extra(self, up):
        return up.get("vrf") is not None

    def describe_routing(self, up):
        return {"vrf": up["vrf"]}


class Fwmark(Steering):
    """Sockets marked (SO_MARK) with the uplink's mark: an ``ip rule fwmark`` selects its table."""

    name = "fwmark"

    def key(self, up):
        return int(up["mark"]) if up.get("mark") else None

    def slot(self, up):
        return ("", int(up["mark"]), SLOT_UDP_SOURCE) if self.routed(up) else ("", 0, 0)

    def routing(self, doc, up):
        if not self.routed(up):
            return None, None
        return "fwmark", dict(table=up["table"], mark=up["mark"], mask=U32, interface=up["interface"],
                              priority=doc.get("rule_priority", DEFAULT_RULE_PRIORITY),
                              routes=recorded_routes(up), state="present", netns=None)

    def probe(self, sock, up):
        if not self.routed(up):
            return Steering.probe(self, sock, up)
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, int(up["mark"]))

    def describe(self, up):
        return dict(Steering.describe(self, up), mark=self.key(up))

    def rules(self, kernel, uplinks, families):
        present = kernel.fwmark_rules()
        out = []
        for family in families:
            for up in uplinks:
                if not self.routed(up):
                    continue
                found = [r for r in present if r["family"] == family and r["fwmark"] == int(up["mark"])
                         and r["fwmask"] == U32 and r["table"] == self.table(up)]
                out.append({"family": family, "rule": "fwmark %#x lookup %s" % (int(up["mark"]), self.table(up)),
                            "uplink": up.get("name"), "present": bool(found),
                            "priority": found[0]["priority"] if found else None})
        return out

    def check(self, up, field, seen):
        if up.get("vrf") is not None:
            raise schema.SchemaError(field + ".vrf", "is for vrf steering; this host uses fwmark steering")
        if up.get("mark") is None:
            return "", 0
        mark = schema.mark(up["mark"], field + ".mark")
        if mark in seen:
            raise schema.SchemaError(field + ".mark", "%#x is used by two uplinks" % mark)
        seen.add(mark)
        return "", mark

    def extra(self, up):
        return up.get("table") is not None or up.get("mark") is not None

    def filled(self, up):
        return {"mark": up["table"]} if up.get("mark") is None else {}

    def describe_routing(self, up):
        return {"mark": up["mark"]}


class Device(Steering):
    """Sockets bound to the uplink's own interface: the kernel uses that interface's
    routes in the main table (one default route per uplink, as NetworkManager keeps
    them). Nothing to route, nothing to retire."""

    name = "device"
    one_main_uplink = False
    udp_source = False  # nothing routed: no rule for a source address to select
    own_default_routes = True

    def slot(self, up):
        return up["interface"], 0, 0

    def strict_rp_filter_drops(self, up):
        return True

    def describe(self, up):
        return dict(Steering.describe(self, up), device=up.get("interface"))

    def check(self, up, field, seen):
        for key in ("vrf", "mark", "table"):
            if up.get(key) is not None:
                raise schema.SchemaError(field + "." + key, "device steering binds sockets to the uplink's own "
                                                            "interface and routes nothing: drop %s" % key)
        if up["interface"] in seen:
            raise schema.SchemaError(field + ".interface", "%s is used by two uplinks" % up["interface"])
        seen.add(up["interface"])
        return up["interface"], 0


PROVIDERS = dict((p.name, p) for p in (Vrf(), Fwmark(), Device()))
NAMES = tuple(PROVIDERS)


def provider(name):
    """The provider of steering *name*; raises schema.SchemaError for another."""
    schema.choice(name, "steering", NAMES)
    return PROVIDERS[name]


def of(doc):
    return provider(doc.get("steering") or "vrf")


def usable(kernel, steering, up, families):
    """(usable, reason): what a socket steered to this uplink would find. *kernel*:
    module_utils/netlink.Netlink (or its fake); *families*: {4, 6} to check."""
    interface = up["interface"]
    link = kernel.link(interface)
    if link is None:
        return False, "%s is gone" % interface
    if not link.up:
        return False, "%s is down" % interface
    if link.carrier is False:
        return False, "%s has no carrier" % interface
    vrf = steering.describe(up)["vrf"]
    master = kernel.master_name(link) if vrf else None
    if vrf and master != vrf:
        return False, "%s is not enslaved to %s (master: %s)" % (interface, vrf, master or "none")
    table = steering.table(up)
    for family in sorted(families):
        if not kernel.global_addresses(link.index, family):
            return False, "%s has no global IPv%d address" % (interface, family)
        if not kernel.default_route(table, family, link.index):
            return False, "no IPv%d default route via %s in table %s" % (
                family, interface, table if table != MAIN_TABLE else "main")
    return True, "%s usable" % interface
