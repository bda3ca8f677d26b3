# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The program's pinned maps: their byte layout (files/bpf/multiwan.h) and
converging them to a runtime state with bpftool.

Runtime state, per uplink slot: how it is steered (VRF device, interface or
mark), weight, drained, down, the addresses that steer its unconnected UDP; for
the host: the policy, the excluded prefixes and ports, and the network namespace
whose sockets are steered. The program is the same object on every host: the
slots and the tables computed from them (module_utils/selection.py) are one
generation, written to the entry of mw_selection the program is not reading,
then mw_control.active flips, so a connect never sees half a table, nor a slot
order other than the one its weights were computed for. Nothing is rewritten
when the maps already hold the state: converging twice changes nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import socket
import struct
import zlib

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_link, selection
from ansible_collections.netlb.multiwan.plugins.module_utils import steering as steering_providers

MAX_UPLINKS = 16
POLICY_IDS = {"random": 0, "weighted": 1, "round_robin": 1, "hash_dst": 2}   # MW_POLICY_*
# Why a socket was left alone, in MW_SKIP_* order: mw_counters[MAX_UPLINKS + i].
SKIP_REASONS = ("no_uplink", "local", "excluded", "bound", "foreign_netns", "type")
HOST_EXCLUDE4, HOST_EXCLUDE6, HOST_EXCLUDE_PORTS = 1, 2, 4   # MW_HOST_*


class DatapathError(Exception):
    pass


def pickable(up):
    """Up (as the tracker says), not drained, its budget not spent (when_spent: drain), weight > 0."""
    return not (up.get("drained") or up.get("down") or up.get("spent") or int(up.get("weight", 1)) <= 0)


def active_tier(uplinks):
    """The tier new connections go to: the lowest with a pickable uplink; None when none is."""
    tiers = [int(up.get("tier", 1)) for up in uplinks if pickable(up)]
    return min(tiers) if tiers else None


def live_weights(uplinks, policy):
    """{slot: weight} of the uplinks the program may pick: the pickable ones of the
    active tier (a higher tier is a backup: it takes every new connection while the
    lower ones have no pickable uplink, and none once one returns). round_robin
    rotates over them with equal weights."""
    tier = active_tier(uplinks)
    return dict((slot, 1 if policy == "round_robin" else int(up.get("weight", 1)))
                for slot, up in enumerate(uplinks) if pickable(up) and int(up.get("tier", 1)) == tier)


IFNAMSIZ = 16
SLOT_USABLE, SLOT_UDP_SOURCE = steering_providers.SLOT_USABLE, steering_providers.SLOT_UDP_SOURCE
SLOT = struct.Struct("=%dsII4s16sI" % IFNAMSIZ)   # struct mw_slot
NO_ADDRESSES = b"\0" * 20


def uplink_id(up):
    """The uplink's id in its slot, whatever the slot: an unconnected UDP socket finds
    its uplink again by it after the inventory reordered the uplinks. Never 0. (Lists of
    uplinks without names, the benchmarks', are told apart by interface.)"""
    return zlib.crc32((up.get("name") or up["interface"]).encode()) or 1


def slot_value(provider, up, usable, addresses):
    """struct mw_slot of *up* steered by *provider*; *addresses*: the 20 bytes of uplink_addr_value."""
    dev, mark, flags = provider.slot(up)
    return SLOT.pack(dev.encode(), mark, flags | (SLOT_USABLE if usable else 0), addresses[:4], addresses[4:],
                     uplink_id(up))


def selection_value(uplinks, policy, steering="vrf", addresses=None):
    """struct mw_selection: the tables and the slots they pick from, one generation.
    *addresses*: {slot: 20 bytes} (none: no source for unconnected UDP)."""
    provider = steering_providers.provider(steering)
    weights = live_weights(uplinks, policy)
    rotation = selection.rotation(weights)
    table = selection.buckets(weights)
    slots = b"".join(slot_value(provider, up, slot in weights, (addresses or {}).get(slot, NO_ADDRESSES))
                     for slot, up in enumerate(uplinks))
    return (struct.pack("=II", len(rotation), len(uplinks))
            + slots + b"\0" * (SLOT.size * (MAX_UPLINKS - len(uplinks)))
            + bytes(bytearray(rotation + [0] * (selection.ROTATION_MAX - len(rotation))))
            + bytes(bytearray(table)))


def selection_slots(value):
    """[(device, mark, addresses)] of the slots of a struct mw_selection."""
    if not value or len(value) < 8:
        return []
    count = min(struct.unpack("=I", value[4:8])[0], MAX_UPLINKS)
    out = []
    for i in range(count):
        dev, mark, _flags, ip4, ip6, _id = SLOT.unpack_from(value, 8 + i * SLOT.size)
        out.append((dev.rstrip(b"\0").decode(), mark, ip4 + ip6))
    return out


def control_value(active, policy):
    return struct.pack("=II", active, POLICY_IDS[policy])


PORT_WORDS = 1024  # struct mw_ports: 65536 bits per protocol
PROTOCOLS = ("tcp", "udp")
SO_NETNS_COOKIE = 71


def ports_value(exclude_ports):
    """struct mw_ports of [{"proto", "first", "last"}]: one bit per excluded port."""
    words = dict((proto, [0] * PORT_WORDS) for proto in PROTOCOLS)
    for entry in exclude_ports:
        bits = words[entry["proto"]]
        for port in range(int(entry["first"]), int(entry["last"]) + 1):
            bits[port >> 6] |= 1 << (port & 63)
    return b"".join(struct.pack("=%dQ" % PORT_WORDS, *words[proto]) for proto in PROTOCOLS)


def host_value(netns_cookie, flags=0):
    """struct mw_host: the namespace steered, and which exclusion maps hold anything."""
    return struct.pack("=QII", netns_cookie or 0, flags, 0)


def own_netns_cookie():
    """This process's network namespace cookie; 0 where the kernel cannot say (before 5.14)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return 0
    try:
        return struct.unpack("=Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    except OSError:
        return 0
    finally:
        sock.close()


def uplink_addr_value(addresses):
    """The addresses of a struct mw_slot (ip4, ip6): the first IPv4 and IPv6 address of
    ["a.b.c.d/32", "x::y/128", ...]."""
    ip4, ip6 = b"\0" * 4, b"\0" * 16
    for text in reversed(list(addresses or [])):
        addr = ipaddress.ip_interface(text).ip
        if addr.version == 4:
            ip4 = addr.packed
        else:
            ip6 = addr.packed
    return ip4 + ip6


def lpm_key(prefix):
    net = ipaddress.ip_network(prefix, strict=False)
    return net.version, struct.pack("=I", net.prefixlen) + net.network_address.packed


def u32_key(value):
    return struct.pack("=I", value)


def hex_args(data):
    return ["%02x" % b for b in bytearray(data)]


def from_hex(values):
    return bytes(bytearray(int(v, 16) for v in values))


# Per-CPU maps hold a value per CPU: read through bpftool, which lays them out.
_PERCPU_MAP_TYPES = (5, 6, 10)  # BPF_MAP_TYPE_PERCPU_HASH, _PERCPU_ARRAY, _LRU_PERCPU_HASH


def _direct(path, read):
    """read(map fd, (type, key size, value size)) on the map pinned at *path* through bpf(2),
    or None when that cannot be done here (not a pinned map: a test's tree; a per-CPU map;
    an architecture without the syscall number): the caller asks bpftool instead."""
    try:
        with bpf_link.pinned(path) as fd:
            shape = bpf_link.map_shape(fd)
            if shape[0] in _PERCPU_MAP_TYPES:
                return None
            return (read(fd, shape),)
    except (bpf_link.LinkError, OSError):
        return None


class Maps(object):
    """The pinned maps of one attachment (``<pin_dir>/maps``), through a runner
    with ``json(*args)`` and ``run(*args)`` (module_utils/bpftool.Bpftool). Reads go
    through bpf(2) where they can: a run that changes nothing reads every map of every
    attachment, and a bpftool process per read was most of the apply's time."""

    NAMES = ("mw_control", "mw_selection", "mw_cursor", "mw_counters",
             "mw_exclude4", "mw_exclude6", "mw_exclude_ports", "mw_host", "mw_udp_sockets")

    def __init__(self, bpftool, maps_dir):
        self.bpftool, self.maps_dir = bpftool, maps_dir.rstrip("/")

    def path(self, name):
        return "%s/%s" % (self.maps_dir, name)

    def lookup(self, name, key):
        found = _direct(self.path(name), lambda fd, shape: bpf_link.map_lookup(fd, key, shape[2]))
        if found is not None:
            return found[0]
        data = self.bpftool.json("map", "lookup", "pinned", self.path(name), "key", "hex", *hex_args(key))
        if not isinstance(data, dict) or "value" not in data:
            return None
        return from_hex(data["value"])

    def update(self, name, key, value):
        argv = ["map", "update", "pinned", self.path(name), "key", "hex"] + hex_args(key) + ["value", "hex"]
        self.bpftool.run(*(argv + hex_args(value)))

    def delete(self, name, key):
        self.bpftool.run("map", "delete", "pinned", self.path(name), "key", "hex", *hex_args(key))

    def keys(self, name):
        found = _direct(self.path(name), lambda fd, shape: bpf_link.map_keys(fd, shape[1]))
        if found is not None:
            return found[0]
        return [from_hex(entry["key"]) for entry in (self.bpftool.json("map", "dump", "pinned", self.path(name)) or [])]

    def pinned(self, name):
        """A program built before the map existed has no pin: nothing to converge there."""
        return os.path.exists(self.path(name))

    def converge_value(self, name, key, want, change, check_mode):
        if not self.pinned(name) or self.lookup(name, key) == want:
            return []
        if not check_mode:
            self.update(name, key, want)
        return [change]

    def converge(self, uplinks, policy, exclude=(), check_mode=False, exclude_ports=(), sources=None,
                 netns_cookie=0, steering="vrf"):
        """Make the maps hold this runtime state. Returns the list of changes
        ("selection", "exclude 10.0.0.0/8", ...).

        ``uplinks``: the document's, in slot order, with ``down`` from the tracker;
        ``steering``: the document's; ``exclude_ports``: [{"proto", "first", "last"}];
        ``sources``: {slot: [addresses]} whose source rules exist (other slots get
        none), None to keep the addresses the selection in force gives each uplink
        (by its device or mark: the slots may have moved);
        ``netns_cookie``: the namespace whose sockets are steered (0: all)."""
        if len(uplinks) > MAX_UPLINKS:
            raise DatapathError("at most %d uplinks" % MAX_UPLINKS)
        if policy not in POLICY_IDS:
            raise DatapathError("unknown policy %r" % policy)
        changes = []
        control = self.lookup("mw_control", u32_key(0)) or control_value(0, "random")
        active, current_policy = struct.unpack("=II", control[:8])
        active &= 1
        current = self.lookup("mw_selection", u32_key(active))
        if sources is None:
            kept = dict(((dev, mark), addresses) for dev, mark, addresses in selection_slots(current))
            addresses = dict((slot, kept.get(steering_providers.provider(steering).slot(up)[:2], NO_ADDRESSES))
                             for slot, up in enumerate(uplinks))
        else:
            addresses = dict((slot, uplink_addr_value(sources.get(slot))) for slot in range(len(uplinks)))
        want = selection_value(uplinks, policy, steering, addresses)
        if current != want or current_policy != POLICY_IDS[policy]:
            changes.append("selection")
            if not check_mode:
                self.update("mw_selection", u32_key(1 - active), want)
                self.update("mw_control", u32_key(0), control_value(1 - active, policy))
        wanted = {}
        for prefix in exclude:
            version, key = lpm_key(prefix)
            wanted[key] = ("mw_exclude%d" % version, str(ipaddress.ip_network(prefix, strict=False)))
        for name in ("mw_exclude4", "mw_exclude6"):
            for key in self.keys(name):
                if key not in wanted:
                    changes.append("exclude removed (%s)" % name)
                    if not check_mode:
                        self.delete(name, key)
                else:
                    del wanted[key]
        for key, (name, text) in sorted(wanted.items()):
            changes.append("exclude %s" % text)
            if not check_mode:
                self.update(name, key, b"\x01")
        changes += self.converge_value("mw_exclude_ports", u32_key(0), ports_value(exclude_ports),
                                       "excluded ports", check_mode)
        # After the exclusions: a flag is set once its map holds what it says.
        flags = ((HOST_EXCLUDE4 if any(lpm_key(p)[0] == 4 for p in exclude) else 0)
                 | (HOST_EXCLUDE6 if any(lpm_key(p)[0] == 6 for p in exclude) else 0)
                 | (HOST_EXCLUDE_PORTS if exclude_ports else 0))
        changes += self.converge_value("mw_host", u32_key(0), host_value(netns_cookie, flags),
                                       "host namespace and exclusions", check_mode)
        return changes
