# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The program's pinned maps: their byte layout (files/bpf/multiwan.h) and
converging them to a runtime state with bpftool.

Runtime state, per uplink slot: weight, drained, down, the addresses that
steer its unconnected UDP; for the host: the policy, the excluded prefixes and
ports, and the network namespace whose sockets are steered. From it the control plane computes the
selection (module_utils/selection.py), writes it to the entry of mw_selection
the program is not reading, then flips mw_control.active, so a connect never
sees half a table. Nothing is rewritten when the maps already hold the state:
converging twice changes nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import socket
import struct

from ansible_collections.netlb.multiwan.plugins.module_utils import selection

MAX_UPLINKS = 16
POLICY_IDS = {"random": 0, "weighted": 1, "round_robin": 1, "hash_dst": 2}   # MW_POLICY_*


class DatapathError(Exception):
    pass


def live_weights(uplinks, policy):
    """{slot: weight} of the uplinks the program may pick: not drained, not
    down, weight > 0. round_robin rotates over them with equal weights."""
    out = {}
    for slot, up in enumerate(uplinks):
        if up.get("drained") or up.get("down") or int(up.get("weight", 1)) <= 0:
            continue
        out[slot] = 1 if policy == "round_robin" else int(up.get("weight", 1))
    return out


def selection_value(uplinks, policy):
    weights = live_weights(uplinks, policy)
    rotation = selection.rotation(weights)
    table = selection.buckets(weights)
    return (struct.pack("=I", len(rotation))
            + bytes(bytearray(rotation + [0] * (selection.ROTATION_MAX - len(rotation))))
            + bytes(bytearray(table)))


def uplink_state_value(up):
    return struct.pack("=III", int(up.get("weight", 1)), 1 if up.get("drained") else 0, 1 if up.get("down") else 0)


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


def host_value(netns_cookie):
    return struct.pack("=Q", netns_cookie or 0)


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
    """struct mw_uplink_addr: the first IPv4 and IPv6 address of ["a.b.c.d/32", "x::y/128", ...]."""
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


class Maps(object):
    """The pinned maps of one attachment (``<pin_dir>/maps``), through a runner
    with ``json(*args)`` and ``run(*args)`` (module_utils/bpftool.Bpftool)."""

    NAMES = ("mw_control", "mw_selection", "mw_cursor", "mw_uplink_state", "mw_counters",
             "mw_exclude4", "mw_exclude6", "mw_exclude_ports", "mw_host", "mw_uplink_addr", "mw_udp_sockets")

    def __init__(self, bpftool, maps_dir):
        self.bpftool, self.maps_dir = bpftool, maps_dir.rstrip("/")

    def path(self, name):
        return "%s/%s" % (self.maps_dir, name)

    def lookup(self, name, key):
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
                 netns_cookie=0):
        """Make the maps hold this runtime state. Returns the list of changes
        ("uplink 1 state", "selection", "exclude 10.0.0.0/8", ...).

        ``exclude_ports``: [{"proto", "first", "last"}]; ``sources``: {slot:
        [addresses]} whose source rules exist (other slots get none), None to
        leave the addresses as they are;
        ``netns_cookie``: the namespace whose sockets are steered (0: all)."""
        if len(uplinks) > MAX_UPLINKS:
            raise DatapathError("at most %d uplinks" % MAX_UPLINKS)
        if policy not in POLICY_IDS:
            raise DatapathError("unknown policy %r" % policy)
        changes = []
        for slot, up in enumerate(uplinks):
            want = uplink_state_value(up)
            if self.lookup("mw_uplink_state", u32_key(slot)) != want:
                changes.append("uplink %d state" % slot)
                if not check_mode:
                    self.update("mw_uplink_state", u32_key(slot), want)
        control = self.lookup("mw_control", u32_key(0)) or control_value(0, "random")
        active, current_policy = struct.unpack("=II", control[:8])
        active &= 1
        want = selection_value(uplinks, policy)
        if self.lookup("mw_selection", u32_key(active)) != want or current_policy != POLICY_IDS[policy]:
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
        changes += self.converge_value("mw_host", u32_key(0), host_value(netns_cookie), "host namespace", check_mode)
        for slot in range(len(uplinks) if sources is not None else 0):
            changes += self.converge_value("mw_uplink_addr", u32_key(slot),
                                           uplink_addr_value((sources or {}).get(slot)),
                                           "uplink %d source addresses" % slot, check_mode)
        return changes
