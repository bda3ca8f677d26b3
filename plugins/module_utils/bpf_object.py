# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a BPF ELF object holds, read without loading it, and cgroup attach types.

Enough of ELF64 to list the programs (function symbols) per section, so the
attach module knows which hook each program belongs to before it touches the
kernel (for check mode and for clear errors on a wrong file).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import struct

EM_BPF = 247
STT_FUNC = 2

# ELF section -> bpftool's attach type (the short spelling bpftool accepts).
SECTION_ATTACH_TYPES = {
    "cgroup/connect4": "connect4",
    "cgroup/connect6": "connect6",
    "cgroup/bind4": "bind4",
    "cgroup/bind6": "bind6",
    "cgroup/post_bind4": "post_bind4",
    "cgroup/post_bind6": "post_bind6",
    "cgroup/sendmsg4": "sendmsg4",
    "cgroup/sendmsg6": "sendmsg6",
    "cgroup/recvmsg4": "recvmsg4",
    "cgroup/recvmsg6": "recvmsg6",
    "cgroup/getpeername4": "getpeername4",
    "cgroup/getpeername6": "getpeername6",
    "cgroup/getsockname4": "getsockname4",
    "cgroup/getsockname6": "getsockname6",
    "cgroup/sock_create": "sock_create",
    "cgroup/sock": "sock_create",
    "cgroup/sock_release": "sock_release",
    "cgroup_skb/ingress": "ingress",
    "cgroup_skb/egress": "egress",
}

# bpftool's JSON prints the kernel's long names since v7 (libbpf 1.0); older
# releases printed the short ones. Both map to the short spelling.
LONG_ATTACH_TYPES = {
    "cgroup_inet4_connect": "connect4",
    "cgroup_inet6_connect": "connect6",
    "cgroup_inet4_bind": "bind4",
    "cgroup_inet6_bind": "bind6",
    "cgroup_inet4_post_bind": "post_bind4",
    "cgroup_inet6_post_bind": "post_bind6",
    "cgroup_udp4_sendmsg": "sendmsg4",
    "cgroup_udp6_sendmsg": "sendmsg6",
    "cgroup_udp4_recvmsg": "recvmsg4",
    "cgroup_udp6_recvmsg": "recvmsg6",
    "cgroup_inet4_getpeername": "getpeername4",
    "cgroup_inet6_getpeername": "getpeername6",
    "cgroup_inet4_getsockname": "getsockname4",
    "cgroup_inet6_getsockname": "getsockname6",
    "cgroup_inet_sock_create": "sock_create",
    "cgroup_inet_sock_release": "sock_release",
    "cgroup_inet_ingress": "ingress",
    "cgroup_inet_egress": "egress",
}
ATTACH_TYPES = sorted(set(SECTION_ATTACH_TYPES.values()))


def short_attach_type(name):
    """'cgroup_inet4_connect' or 'connect4' -> 'connect4'; unknown names unchanged."""
    return LONG_ATTACH_TYPES.get(name, name)


class ObjectError(Exception):
    pass


def digest(path):
    """sha256 of the object file: its identity (program tags change between kernels)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            sha.update(block)
    return sha.hexdigest()


def _cstr(blob, offset):
    end = blob.find(b"\0", offset)
    return blob[offset:end if end >= 0 else len(blob)].decode("ascii", "replace")


def programs(path):
    """[(section, function name)] of a BPF ELF object, in section order.

    Raises ObjectError when the file is not a 64-bit BPF ELF object.
    """
    with open(path, "rb") as handle:
        blob = handle.read()
    if len(blob) < 64 or blob[:4] != b"\x7fELF":
        raise ObjectError("not an ELF file")
    if blob[4] != 2:
        raise ObjectError("not a 64-bit ELF object (BPF objects are ELF64)")
    endian = "<" if blob[5] == 1 else ">"
    (machine,) = struct.unpack_from(endian + "H", blob, 18)
    if machine != EM_BPF:
        raise ObjectError("ELF machine %d is not BPF (%d): build it with clang -target bpf" % (machine, EM_BPF))
    shoff, = struct.unpack_from(endian + "Q", blob, 40)
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", blob, 58)
    if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(blob):
        raise ObjectError("truncated or damaged section table")
    sections = []
    for i in range(shnum):
        fields = struct.unpack_from(endian + "IIQQQQIIQQ", blob, shoff + i * shentsize)
        sections.append({"name_off": fields[0], "type": fields[1], "offset": fields[4], "size": fields[5],
                         "link": fields[6], "entsize": fields[9]})
    strtab = sections[shstrndx]
    names = blob[strtab["offset"]:strtab["offset"] + strtab["size"]]
    for sec in sections:
        sec["name"] = _cstr(names, sec["name_off"])
    result = []
    for sec in sections:
        if sec["type"] != 2:  # SHT_SYMTAB
            continue
        symstr = sections[sec["link"]]
        strings = blob[symstr["offset"]:symstr["offset"] + symstr["size"]]
        for off in range(sec["offset"], sec["offset"] + sec["size"], sec["entsize"] or 24):
            name_off, info, _other, shndx = struct.unpack_from(endian + "IBBH", blob, off)
            if info & 0xF != STT_FUNC or not 0 < shndx < len(sections):
                continue
            section = sections[shndx]["name"]
            if section in (".text",):
                continue  # subprograms, not entry points
            result.append((section, _cstr(strings, name_off)))
    return result


def hooks(path):
    """{attach type: program name} for the programs of an object with a cgroup hook."""
    found = {}
    for section, name in programs(path):
        attach = SECTION_ATTACH_TYPES.get(section)
        if attach:
            found[attach] = name
    return found
