# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""MPTCP paths: an endpoint per uplink, so that one connection uses every uplink.

An MPTCP connection starts with one subflow, placed by the program like any TCP
socket; the kernel's path manager then opens one more subflow from each
``subflow`` endpoint (a local address, what ``ip mptcp endpoint`` lists). With an
endpoint on every uplink's address, bound to the uplink's interface, each extra
subflow leaves through its uplink: fwmark steering's ``from <address>`` rules send
it to the uplink's table, device steering's main table has the interface's own
route. (VRF steering is refused: the extra subflows are not bound to the VRFs.)

``balancer_mptcp: paths`` keeps, at every apply and at every change of the runtime
state (tracker, drain, budget), an endpoint for each address of every uplink the
program may pick: ``subflow``, plus ``backup`` for an uplink of a tier above the
active one (the kernel sends on it only when no other subflow can). An uplink that
is down, drained or spent has none: the path manager closes its subflows and opens
no new one, and adds them again when it returns. The subflows limit is raised to
the number of endpoints (never lowered); the endpoints this made and the limit from
before are recorded beside the program (``mptcp.json`` in the state directory), so
that ``off`` or ``absent`` removes exactly those and puts the limit back. An
endpoint the operator made for the same address is left alone.

PathManager speaks the kernel's generic netlink family ``mptcp_pm`` itself
(standard library only: the tracker runs it on the host), as ``ip mptcp`` does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import json
import os
import socket
import struct

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath
from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write, read_json
from ansible_collections.netlb.multiwan.plugins.module_utils.sockets import (NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
                                                                             NetlinkSocket, _attributes)

MODES = ("off", "paths", "upgrade")
DEFAULT_STATE_DIR = "/var/lib/netlb-multiwan"
RECORD_NAME = "mptcp.json"
ENABLED_SYSCTL = "/proc/sys/net/mptcp/enabled"
MAX_SUBFLOWS = 8  # the kernel's MPTCP_PM_ADDR_MAX... limit on subflows per connection

NETLINK_GENERIC, GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 16, 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
GENL_HEADER = struct.Struct("=BBH")  # cmd, version, reserved
NLA_F_NESTED = 0x8000
# include/uapi/linux/mptcp.h (mptcp_pm_cmd, mptcp_pm_attr, mptcp_pm_addr_attr)
CMD_ADD_ADDR, CMD_DEL_ADDR, CMD_GET_ADDR, CMD_SET_LIMITS, CMD_GET_LIMITS, CMD_SET_FLAGS = 1, 2, 3, 5, 6, 7
ATTR_ADDR, ATTR_RCV_ADD_ADDRS, ATTR_SUBFLOWS = 1, 2, 3
ADDR_FAMILY, ADDR_ID, ADDR_ADDR4, ADDR_ADDR6, ADDR_FLAGS, ADDR_IF_IDX = 1, 2, 3, 4, 6, 7
FLAG_SIGNAL, FLAG_SUBFLOW, FLAG_BACKUP, FLAG_FULLMESH = 1, 2, 4, 8
FLAG_NAMES = ((FLAG_SIGNAL, "signal"), (FLAG_SUBFLOW, "subflow"), (FLAG_BACKUP, "backup"), (FLAG_FULLMESH, "fullmesh"))


class MptcpError(OSError):
    """The kernel refused a request (an errno from the path manager)."""


def _attr(kind, payload):
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def flag_names(flags):
    return [name for bit, name in FLAG_NAMES if flags & bit]


class Endpoint(object):
    def __init__(self, ident, address, flags, ifindex):
        self.id, self.address, self.flags, self.ifindex = ident, address, flags, ifindex

    def __repr__(self):
        return "%s id %d %s ifindex %d" % (self.address, self.id, " ".join(flag_names(self.flags)), self.ifindex)


class PathManager(NetlinkSocket):
    """The in-kernel path manager of the caller's network namespace."""

    def __init__(self):
        super(PathManager, self).__init__(NETLINK_GENERIC)
        try:
            messages, code = self.exchange(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK,
                                           GENL_HEADER.pack(CTRL_CMD_GETFAMILY, 1, 0)
                                           + _attr(CTRL_ATTR_FAMILY_NAME, b"mptcp_pm\0"))
            if code:
                raise MptcpError("the kernel has no MPTCP path manager (CONFIG_MPTCP off, or Linux < 5.6): %s"
                                 % os.strerror(code))
            kind, blob, start, end = messages[0]
            attrs = _attributes(blob, start + GENL_HEADER.size, end)
            self.family = struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][:2])[0]
        except BaseException:
            self.close()
            raise

    def _request(self, command, attrs=b"", flags=NLM_F_REQUEST | NLM_F_ACK):
        messages, code = self.exchange(self.family, flags, GENL_HEADER.pack(command, 1, 0) + attrs)
        if code:
            raise MptcpError("mptcp_pm: %s" % os.strerror(code))
        return [_attributes(blob, start + GENL_HEADER.size, end) for kind, blob, start, end in messages
                if kind == self.family]

    @staticmethod
    def _address(address, ident=0, flags=None, ifindex=None):
        ip = ipaddress.ip_address(address)
        body = _attr(ADDR_FAMILY, struct.pack("=H", socket.AF_INET if ip.version == 4 else socket.AF_INET6))
        body += _attr(ADDR_ADDR4 if ip.version == 4 else ADDR_ADDR6, ip.packed)
        if ident:
            body += _attr(ADDR_ID, struct.pack("=B", ident))
        if flags is not None:
            body += _attr(ADDR_FLAGS, struct.pack("=I", flags))
        if ifindex:
            body += _attr(ADDR_IF_IDX, struct.pack("=i", ifindex))
        return _attr(ATTR_ADDR | NLA_F_NESTED, body)

    def endpoints(self):
        out = []
        for attrs in self._request(CMD_GET_ADDR, flags=NLM_F_REQUEST | NLM_F_DUMP):
            nested = attrs.get(ATTR_ADDR)
            if nested is None:
                continue
            addr = _attributes(nested, 0, len(nested))
            packed = addr.get(ADDR_ADDR4) or addr.get(ADDR_ADDR6)
            if packed is None:
                continue
            out.append(Endpoint(struct.unpack("=B", addr.get(ADDR_ID, b"\0")[:1])[0],
                                str(ipaddress.ip_address(packed[:4] if ADDR_ADDR4 in addr else packed[:16])),
                                struct.unpack("=I", addr.get(ADDR_FLAGS, b"\0\0\0\0")[:4])[0],
                                struct.unpack("=i", addr.get(ADDR_IF_IDX, b"\0\0\0\0")[:4])[0]))
        return out

    def add(self, address, flags, ifindex):
        self._request(CMD_ADD_ADDR, self._address(address, flags=flags, ifindex=ifindex))

    def delete(self, endpoint):
        try:
            self._request(CMD_DEL_ADDR, self._address(endpoint.address, ident=endpoint.id))
        except MptcpError as exc:
            if "No such file" not in str(exc) and os.strerror(errno.EINVAL) not in str(exc):
                raise

    def set_flags(self, endpoint, flags):
        """Only ``backup`` and ``fullmesh`` can change on an endpoint."""
        self._request(CMD_SET_FLAGS, self._address(endpoint.address, ident=endpoint.id, flags=flags))

    def limits(self):
        """(subflows, add_addr_accepted)."""
        attrs = self._request(CMD_GET_LIMITS)[0]
        return (struct.unpack("=I", attrs[ATTR_SUBFLOWS][:4])[0], struct.unpack("=I", attrs[ATTR_RCV_ADD_ADDRS][:4])[0])

    def set_limits(self, subflows, add_addr_accepted):
        self._request(CMD_SET_LIMITS, _attr(ATTR_RCV_ADD_ADDRS, struct.pack("=I", add_addr_accepted))
                      + _attr(ATTR_SUBFLOWS, struct.pack("=I", subflows)))


def mode(doc):
    return doc.get("mptcp") or "off"


def enabled(path=ENABLED_SYSCTL):
    """None when the kernel can carry MPTCP here, else why not."""
    try:
        with open(path) as handle:
            if handle.read().strip() != "1":
                return "net.mptcp.enabled is 0 on this host"
    except (IOError, OSError):
        return "the kernel has no MPTCP (CONFIG_MPTCP off, or Linux < 5.6)"
    return None


def check(doc, path=ENABLED_SYSCTL, upgrade_reason=None):
    """Why this host cannot have the document's MPTCP mode, or None: the role's preflight
    (balancer_facts) and the apply's check phase. ``upgrade`` loads a probe program."""
    if mode(doc) == "off":
        return None
    if doc.get("steering") == "vrf":
        return ("MPTCP needs fwmark or device steering: the kernel's extra subflows leave from each uplink's "
                "address unbound to its VRF, which vrf steering routes nowhere")
    reason = enabled(path)
    if reason is None and mode(doc) == "upgrade":
        from ansible_collections.netlb.multiwan.plugins.module_utils import mptcp_upgrade

        reason = (upgrade_reason or mptcp_upgrade.kernel_reason)()
    return reason


def uplink_addresses(uplinks, link, families=(4, 6)):
    """{address: (uplink, interface index)} of the global addresses on the uplinks' interfaces."""
    out = {}
    for up in uplinks:
        iface = link.link(up["interface"])
        for family in families if iface is not None else ():
            for address in link.global_addresses(iface.index, family):
                out[address.split("/")[0]] = (up, iface.index)
    return out


def wanted(doc, uplinks, link):
    """{address: (uplink name, interface index, flags)} of the endpoints the runtime
    state *uplinks* (health.runtime_uplinks) asks for."""
    if mode(doc) == "off":
        return {}
    tier = datapath.active_tier(uplinks)
    pickable = [up for up in uplinks if datapath.pickable(up)]
    families = (4, 6) if doc.get("ipv6", True) else (4,)
    return dict((address, (up["name"], index, FLAG_SUBFLOW | (FLAG_BACKUP if int(up.get("tier", 1)) > tier else 0)))
                for address, (up, index) in uplink_addresses(pickable, link, families).items())


def record_path(doc):
    return os.path.join(doc.get("state_dir") or DEFAULT_STATE_DIR, RECORD_NAME)


def converge(doc, uplinks, link, check_mode=False, path_manager=PathManager):
    """The endpoints and the subflows limit to what *doc* and the runtime state
    *uplinks* ask for (nothing when MPTCP is off: what an earlier run made goes); the
    changes, as "mptcp: ...". MptcpError when the kernel refuses."""
    where = record_path(doc)
    record = read_json(where)
    want = wanted(doc, uplinks, link)
    if not want and not record:
        return []
    actions = []
    ours = set(record.get("endpoints", []))
    with path_manager() as pm:
        have = dict((ep.address, ep) for ep in pm.endpoints())
        for address, (name, ifindex, flags) in sorted(want.items()):
            ep = have.get(address)
            if ep is not None and address not in ours:
                continue  # the operator's own: left alone
            if ep is not None and ep.ifindex == ifindex and ep.flags & ~FLAG_BACKUP == flags & ~FLAG_BACKUP:
                if ep.flags != flags:
                    actions.append("mptcp: endpoint %s (%s) now %s" % (address, name, " ".join(flag_names(flags))))
                    if not check_mode:
                        pm.set_flags(ep, flags)
                continue
            if ep is not None:
                actions.append("mptcp: delete endpoint %r" % ep)
                if not check_mode:
                    pm.delete(ep)
            actions.append("mptcp: add endpoint %s dev %s (%s) %s"
                           % (address, link.link(index=ifindex).name, name, " ".join(flag_names(flags))))
            if not check_mode:
                pm.add(address, flags, ifindex)
            ours.add(address)
        for address in sorted(ours - set(want)):
            if address in have:
                actions.append("mptcp: delete endpoint %s" % address)
                if not check_mode:
                    pm.delete(have[address])
            ours.discard(address)
        limits = pm.limits()
        before = record.get("limits")
        need = min(MAX_SUBFLOWS, len(want))
        if want and limits[0] < need:
            actions.append("mptcp: limits subflows %d (was %d)" % (need, limits[0]))
            before = before or list(limits)
            if not check_mode:
                pm.set_limits(need, limits[1])
        elif not want and before:
            actions.append("mptcp: limits subflows %d (as before)" % before[0])
            if not check_mode:
                pm.set_limits(before[0], limits[1])
            before = None
    new = dict((k, v) for k, v in (("endpoints", sorted(ours)), ("limits", before)) if v)
    if not check_mode and new != record:
        if new:
            atomic_write(where, json.dumps(new, indent=2, sort_keys=True) + "\n", make_dir=True)
        elif os.path.exists(where):
            os.unlink(where)
    return actions


def fallbacks_since_boot(netstat="/proc/net/netstat"):
    """Connections this host opened as MPTCP that the far end answered as plain TCP
    (MPTcpExt MPCapableFallbackSYNACK of this namespace), None when not counted."""
    try:
        with open(netstat) as handle:
            lines = [line.split() for line in handle if line.startswith("MPTcpExt:")]
    except (IOError, OSError):
        return None
    if len(lines) < 2 or "MPCapableFallbackSYNACK" not in lines[0]:
        return None
    return int(lines[1][lines[0].index("MPCapableFallbackSYNACK")])


def observe(doc, uplinks, link, path_manager=PathManager, diag=None, netstat="/proc/net/netstat"):
    """What status and metrics show of MPTCP: ({"mode", "endpoints": {uplink: [address
    and flags]}, "connections", "fell_back" (open ones that fell back to TCP),
    "fallbacks_since_boot", "subflows": {uplink: established subflows}}, problems).
    None when MPTCP is off and nothing of it was made."""
    from ansible_collections.netlb.multiwan.plugins.module_utils import sockets

    if mode(doc) == "off" and not read_json(record_path(doc)):
        return None, []
    by_address = dict((address, up["name"]) for address, (up, _index) in uplink_addresses(uplinks, link).items())
    out = {"mode": mode(doc), "endpoints": dict((up["name"], []) for up in uplinks), "connections": 0,
           "fell_back": 0, "fallbacks_since_boot": fallbacks_since_boot(netstat),
           "subflows": dict((up["name"], 0) for up in uplinks)}
    problems = []
    try:
        with path_manager() as pm:
            have = dict((ep.address, ep) for ep in pm.endpoints())
    except (MptcpError, OSError) as exc:
        return out, ["mptcp: endpoints not read (%s)" % exc]
    for address, ep in sorted(have.items()):
        if address in by_address:
            out["endpoints"][by_address[address]].append("%s %s" % (address, " ".join(flag_names(ep.flags))))
    for address, (name, ifindex, flags) in sorted(wanted(doc, uplinks, link).items()):
        ep = have.get(address)
        if ep is None or not ep.flags & FLAG_SUBFLOW:
            problems.append("mptcp: uplink %s has no subflow endpoint for %s: its subflows are not opened "
                            "(a tracker or role run puts it back)" % (name, address))
    try:
        with (diag or sockets.SockDiag)() as d:
            for _family, state, flags, _extra in d.mptcp():
                if state == sockets.TCP_ESTABLISHED:
                    out["connections"] += 1
                    out["fell_back"] += 1 if flags & sockets.MPTCP_INFO_FLAG_FALLBACK else 0
            for sock in d.tcp(states=1 << sockets.TCP_ESTABLISHED):
                name = by_address.get(str(sock.src))
                if sock.ulp == "mptcp" and name is not None:
                    out["subflows"][name] += 1
    except (sockets.SocketDiagError, OSError) as exc:
        problems.append("mptcp: connections not read (sock_diag: %s)" % exc)
    return out, problems
