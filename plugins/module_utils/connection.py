# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Find the TCP sessions that carry the current Ansible connection.

Enslaving the interface an SSH session runs over moves its routes into the
VRF table and drops the session: the operator is cut off. Two sources are
combined because each alone misses cases:

* SSH_CONNECTION / SSH_CLIENT in the environment (plain ssh logins);
* the established TCP sockets held by this process's ancestors (sshd keeps
  the session socket), which still works after sudo has reset the
  environment for ``become``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

TCP_ESTABLISHED = "01"


def _hex_to_ip(text):
    """/proc/net/tcp{,6} address field (host byte order words) -> IP string."""
    raw = bytes(bytearray.fromhex(text))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    words = struct.unpack(">4I", raw)
    packed = struct.pack("<4I", *words)
    return socket.inet_ntop(socket.AF_INET6, packed)


def _unmap(ip):
    # Dual-stack sshd reports IPv4 peers as ::ffff:a.b.c.d
    if ip.startswith("::ffff:") and "." in ip:
        return ip[len("::ffff:"):]
    return ip


def sessions_from_env(environ):
    """(local_ip, peer_ip) pairs from SSH_CONNECTION / SSH_CLIENT."""
    found = set()
    conn = environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4:
        found.add((_unmap(conn[2]), _unmap(conn[0])))
    client = environ.get("SSH_CLIENT", "").split()
    if len(client) == 3 and not conn:
        found.add((None, _unmap(client[0])))
    return found


def _ancestors(proc, pid):
    seen = []
    while pid and pid > 1 and pid not in seen and len(seen) < 64:
        seen.append(pid)
        try:
            with open(os.path.join(proc, str(pid), "stat")) as handle:
                stat = handle.read()
        except (IOError, OSError):
            break
        # The command name may hold spaces and parentheses: parse after the last ')'.
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


def _socket_inodes(proc, pid):
    inodes = set()
    fddir = os.path.join(proc, str(pid), "fd")
    try:
        fds = os.listdir(fddir)
    except (IOError, OSError):
        return inodes
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fddir, fd))
        except (IOError, OSError):
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _established(proc, pid):
    """{inode: (local_ip, peer_ip)} of established TCP sockets seen by ``pid``."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, str(pid), "net", name)) as handle:
                lines = handle.readlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_ESTABLISHED:
                continue
            local_ip = _hex_to_ip(fields[1].split(":")[0])
            peer_ip = _hex_to_ip(fields[2].split(":")[0])
            table[fields[9]] = (_unmap(local_ip), _unmap(peer_ip))
    return table


def sessions_from_ancestors(proc="/proc", pid=None):
    """(local_ip, peer_ip) of TCP sockets held by this process and its ancestors.

    Loopback sessions are skipped: they never cross an uplink.
    """
    pid = pid or os.getpid()
    found = set()
    established = None
    for ancestor in _ancestors(proc, pid):
        inodes = _socket_inodes(proc, ancestor)
        if not inodes:
            continue
        if established is None:
            established = _established(proc, pid)
        for inode in inodes:
            if inode in established:
                found.add(established[inode])
    return set(s for s in found if not _is_loopback(s[1]))


def _is_loopback(ip):
    return ip is None or ip.startswith("127.") or ip == "::1"


def current_sessions(environ=None, proc="/proc"):
    environ = os.environ if environ is None else environ
    return set(s for s in sessions_from_env(environ) if not _is_loopback(s[1])) | sessions_from_ancestors(proc)
