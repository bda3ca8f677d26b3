# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's TCP sockets over sock_diag (NETLINK_SOCK_DIAG), and their destruction.

What the tracker needs to reset the connections stuck on an uplink that went
down: each socket's addresses, the device it is bound to, its mark and its
cgroup, read the way `ss -e` reads them, and SOCK_DESTROY, what `ss -K` sends
(the kernel needs CONFIG_INET_DIAG_DESTROY; the application then gets
ECONNABORTED at once, instead of retransmitting into a dead link for up to
tcp_retries2, ~15 minutes). Only the caller's network namespace is seen: the
sockets of other namespaces are neither listed nor destroyed.

Stdlib only (struct and a netlink socket): it runs in the tracker, on the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import ipaddress
import os
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY, SOCK_DESTROY = 20, 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_MARK, INET_DIAG_ULP_INFO, INET_DIAG_CGROUP_ID, INET_ULP_INFO_NAME = 15, 19, 21, 1
# Asking for tcp_info brings the ULP's name too (tcp_diag_get_aux): "mptcp" on a subflow.
INET_DIAG_INFO = 2
INET_DIAG_INFO_EXT = 1 << (INET_DIAG_INFO - 1)
INET_DIAG_REQ_PROTOCOL, IPPROTO_MPTCP = 3, 262
MPTCP_INFO_FLAG_FALLBACK = 1
# TCP states (include/net/tcp_states.h): the connections an application still uses.
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_CLOSE_WAIT = 1, 2, 8
STUCK_STATES = (1 << TCP_ESTABLISHED) | (1 << TCP_SYN_SENT) | (1 << TCP_CLOSE_WAIT)

NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then struct inet_diag_sockid
# (sport and dport in network order, src and dst as 16 bytes, bound device, cookie).
REQUEST = struct.Struct("=BBBBI")
SOCKID = struct.Struct("!HH16s16s")
SOCKID_TAIL = struct.Struct("=IQ")
MSG_HEAD = struct.Struct("=BBBB")            # struct inet_diag_msg up to its sockid
MSG_TAIL = struct.Struct("=IIIII")           # expires, rqueue, wqueue, uid, inode
MSG_LEN = MSG_HEAD.size + SOCKID.size + SOCKID_TAIL.size + MSG_TAIL.size
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
            ipaddress.ip_network("::ffff:127.0.0.0/104"))


class SocketDiagError(Exception):
    pass


class TcpSocket(object):
    """One socket as sock_diag shows it: ``family``, ``state``, ``src``/``dst``
    (ipaddress objects), ``sport``/``dport``, ``bound_ifindex`` (0: not bound to a
    device), ``cookie``, ``mark`` (None when not shown: CAP_NET_ADMIN only) and
    ``cgroup_id`` (None before Linux 5.7), ``ulp`` ("mptcp" on an MPTCP subflow)."""

    def __init__(self, family, state, sockid, mark=None, cgroup_id=None, ulp=None):
        self.family, self.state = family, state
        (self.sport, self.dport, src, dst), (self.bound_ifindex, self.cookie) = sockid
        size = 4 if family == socket.AF_INET else 16
        self.src = ipaddress.ip_address(src[:size])
        self.dst = ipaddress.ip_address(dst[:size])
        self.mark, self.cgroup_id, self.ulp = mark, cgroup_id, ulp
        self._sockid = sockid

    @property
    def loopback(self):
        return any(self.dst in net for net in LOOPBACK if net.version == self.dst.version)

    def __repr__(self):
        return "%s:%d -> %s:%d" % (self.src, self.sport, self.dst, self.dport)


def _request(family, states, sockid=None, ext=0, protocol=socket.IPPROTO_TCP):
    sport, dport, src, dst = sockid[0] if sockid else (0, 0, b"\0" * 16, b"\0" * 16)
    ifindex, cookie = sockid[1] if sockid else (0, 0xFFFFFFFFFFFFFFFF)  # INET_DIAG_NOCOOKIE
    # IPPROTO_MPTCP (262) does not fit the request's protocol byte: an attribute names it.
    named = struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, protocol) if protocol > 255 else b""
    return (REQUEST.pack(family, protocol if protocol <= 255 else 0, ext, 0, states)
            + SOCKID.pack(sport, dport, src, dst) + SOCKID_TAIL.pack(ifindex, cookie) + named)


def _attributes(blob, offset, end):
    out = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", blob, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = blob[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


class NetlinkSocket(object):
    """A raw netlink socket of the caller's network namespace: one request at a
    time, its answer read to the end."""

    def __init__(self, protocol):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def exchange(self, kind, flags, payload):
        """Send one request; ([(kind, blob, start, end)] of the answer's messages, the
        error code: 0, or the errno of an NLMSG_ERROR). A dump ends at NLMSG_DONE, any
        other request at its acknowledgement (send it with NLM_F_ACK)."""
        self.seq += 1
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, self.seq, 0) + payload)
        out = []
        while True:
            blob = self.sock.recv(1 << 16)
            offset = 0
            while offset + NLMSGHDR.size <= len(blob):
                length, msg_kind, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(blob, offset)
                if length < NLMSGHDR.size:
                    raise SocketDiagError("malformed netlink message")
                body = offset + NLMSGHDR.size
                if msg_seq == self.seq:
                    if msg_kind == NLMSG_DONE:
                        return out, 0
                    if msg_kind == NLMSG_ERROR:
                        return out, -struct.unpack_from("=i", blob, body)[0]
                    out.append((msg_kind, blob, body, offset + length))
                offset += (length + 3) & ~3


class SockDiag(NetlinkSocket):
    """A NETLINK_SOCK_DIAG socket of the caller's network namespace."""

    def __init__(self):
        super(SockDiag, self).__init__(NETLINK_SOCK_DIAG)

    def tcp(self, states=STUCK_STATES, families=(socket.AF_INET, socket.AF_INET6)):
        """Every TCP socket of the namespace in *states* (a bit per TCP state)."""
        out = []
        for family in families:
            messages, code = self.exchange(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                                           _request(family, states, ext=INET_DIAG_INFO_EXT))
            if code == errno.ENOENT:  # no such family (IPv6 disabled): nothing there
                continue
            if code:
                raise SocketDiagError("sock_diag: %s" % os.strerror(code))
            out += [self._parse(blob, start, end) for kind, blob, start, end in messages
                    if kind == SOCK_DIAG_BY_FAMILY and end - start >= MSG_LEN]
        return out

    @staticmethod
    def _parse(blob, start, end):
        family, state, _timer, _retrans = MSG_HEAD.unpack_from(blob, start)
        sockid = (SOCKID.unpack_from(blob, start + MSG_HEAD.size),
                  SOCKID_TAIL.unpack_from(blob, start + MSG_HEAD.size + SOCKID.size))
        attrs = _attributes(blob, start + MSG_LEN, end)
        mark = struct.unpack("=I", attrs[INET_DIAG_MARK][:4])[0] if INET_DIAG_MARK in attrs else None
        cgroup = struct.unpack("=Q", attrs[INET_DIAG_CGROUP_ID][:8])[0] if INET_DIAG_CGROUP_ID in attrs else None
        ulp = attrs.get(INET_DIAG_ULP_INFO)
        name = _attributes(ulp, 0, len(ulp)).get(INET_ULP_INFO_NAME, b"") if ulp else b""
        return TcpSocket(family, state, sockid, mark, cgroup, ulp=name.split(b"\0", 1)[0].decode() or None)

    def mptcp(self, families=(socket.AF_INET, socket.AF_INET6)):
        """[(family, state, flags, extra subflows)] of every MPTCP socket of the namespace
        that is connected (flags: mptcp_info's, MPTCP_INFO_FLAG_FALLBACK when it fell back
        to TCP); [] when the kernel has no MPTCP diag."""
        out = []
        for family in families:
            messages, code = self.exchange(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                                           _request(family, STUCK_STATES, ext=INET_DIAG_INFO_EXT,
                                                    protocol=IPPROTO_MPTCP))
            if code in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
                continue
            if code:
                raise SocketDiagError("sock_diag: %s" % os.strerror(code))
            for kind, blob, start, end in messages:
                if kind != SOCK_DIAG_BY_FAMILY or end - start < MSG_LEN:
                    continue
                msg_family, state, _timer, _retrans = MSG_HEAD.unpack_from(blob, start)
                info = _attributes(blob, start + MSG_LEN, end).get(INET_DIAG_INFO, b"")
                subflows = struct.unpack_from("=B", info, 0)[0] if len(info) >= 12 else 0
                flags = struct.unpack_from("=I", info, 8)[0] if len(info) >= 12 else 0
                out.append((msg_family, state, flags, subflows))
        return out

    def destroy(self, sock):
        """SOCK_DESTROY of one socket (found by its addresses, ports, device and cookie).
        False when it is already gone; SocketDiagError when the kernel refuses."""
        _messages, code = self.exchange(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK,
                                        _request(sock.family, 1 << sock.state | STUCK_STATES, sock._sockid))
        if code == 0:
            return True
        if code == errno.ENOENT:
            return False
        if code == errno.EOPNOTSUPP:
            raise SocketDiagError("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY is off)")
        raise SocketDiagError("sock_diag destroy: %s" % os.strerror(code))


def cgroup_ids(path):
    """The ids of the cgroup at *path* and of every cgroup below it (a cgroup's id is
    its directory's inode number in the cgroup2 file system)."""
    ids = set()
    for root, _dirs, _files in os.walk(path):
        try:
            ids.add(os.stat(root).st_ino)
        except OSError:
            continue  # removed meanwhile
    return ids
