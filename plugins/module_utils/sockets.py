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
INET_DIAG_MARK, INET_DIAG_CGROUP_ID = 15, 21
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
    ``cgroup_id`` (None before Linux 5.7)."""

    def __init__(self, family, state, sockid, mark=None, cgroup_id=None):
        self.family, self.state = family, state
        (self.sport, self.dport, src, dst), (self.bound_ifindex, self.cookie) = sockid
        size = 4 if family == socket.AF_INET else 16
        self.src = ipaddress.ip_address(src[:size])
        self.dst = ipaddress.ip_address(dst[:size])
        self.mark, self.cgroup_id = mark, cgroup_id
        self._sockid = sockid

    @property
    def loopback(self):
        return any(self.dst in net for net in LOOPBACK if net.version == self.dst.version)

    def __repr__(self):
        return "%s:%d -> %s:%d" % (self.src, self.sport, self.dst, self.dport)


def _request(family, states, sockid=None):
    sport, dport, src, dst = sockid[0] if sockid else (0, 0, b"\0" * 16, b"\0" * 16)
    ifindex, cookie = sockid[1] if sockid else (0, 0xFFFFFFFFFFFFFFFF)  # INET_DIAG_NOCOOKIE
    return (REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states) + SOCKID.pack(sport, dport, src, dst)
            + SOCKID_TAIL.pack(ifindex, cookie))


def _attributes(blob, offset, end):
    out = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", blob, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = blob[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


class SockDiag(object):
    """A NETLINK_SOCK_DIAG socket of the caller's network namespace."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def _send(self, kind, flags, payload):
        self.seq += 1
        self.sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(payload), kind, flags, self.seq, 0) + payload)
        return self.seq

    def tcp(self, states=STUCK_STATES, families=(socket.AF_INET, socket.AF_INET6)):
        """Every TCP socket of the namespace in *states* (a bit per TCP state)."""
        out = []
        for family in families:
            seq = self._send(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, _request(family, states))
            done = False
            while not done:
                blob = self.sock.recv(1 << 16)
                offset = 0
                while offset + NLMSGHDR.size <= len(blob):
                    length, kind, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(blob, offset)
                    body = offset + NLMSGHDR.size
                    if length < NLMSGHDR.size:
                        raise SocketDiagError("malformed netlink message")
                    if msg_seq == seq:
                        if kind == NLMSG_DONE:
                            done = True
                        elif kind == NLMSG_ERROR:
                            code = -struct.unpack_from("=i", blob, body)[0]
                            if code == errno.ENOENT:  # no such family (IPv6 disabled): nothing there
                                done = True
                            elif code:
                                raise SocketDiagError("sock_diag: %s" % os.strerror(code))
                        elif kind == SOCK_DIAG_BY_FAMILY and length >= NLMSGHDR.size + MSG_LEN:
                            out.append(self._parse(blob, body, offset + length))
                    offset += (length + 3) & ~3
        return out

    @staticmethod
    def _parse(blob, start, end):
        family, state, _timer, _retrans = MSG_HEAD.unpack_from(blob, start)
        sockid = (SOCKID.unpack_from(blob, start + MSG_HEAD.size),
                  SOCKID_TAIL.unpack_from(blob, start + MSG_HEAD.size + SOCKID.size))
        attrs = _attributes(blob, start + MSG_LEN, end)
        mark = struct.unpack("=I", attrs[INET_DIAG_MARK][:4])[0] if INET_DIAG_MARK in attrs else None
        cgroup = struct.unpack("=Q", attrs[INET_DIAG_CGROUP_ID][:8])[0] if INET_DIAG_CGROUP_ID in attrs else None
        return TcpSocket(family, state, sockid, mark, cgroup)

    def destroy(self, sock):
        """SOCK_DESTROY of one socket (found by its addresses, ports, device and cookie).
        False when it is already gone; SocketDiagError when the kernel refuses."""
        seq = self._send(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK,
                         _request(sock.family, 1 << sock.state | STUCK_STATES, sock._sockid))
        while True:
            blob = self.sock.recv(1 << 16)
            offset = 0
            while offset + NLMSGHDR.size <= len(blob):
                length, kind, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(blob, offset)
                if msg_seq == seq and kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", blob, offset + NLMSGHDR.size)[0]
                    if code in (0,):
                        return True
                    if code == errno.ENOENT:
                        return False
                    if code == errno.EOPNOTSUPP:
                        raise SocketDiagError("the kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY is off)")
                    raise SocketDiagError("sock_diag destroy: %s" % os.strerror(code))
                offset += (length + 3) & ~3


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
