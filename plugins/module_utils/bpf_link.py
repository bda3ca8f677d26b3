# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""cgroup bpf_links through the bpf(2) system call.

bpftool attaches cgroup programs the legacy way only (BPF_PROG_ATTACH).
Replacing a legacy-attached program means attaching the new one next to
the old one and then detaching the old one, so for a moment a socket runs
through both. A bpf_link (Linux >= 5.7) is swapped in place by
BPF_LINK_UPDATE: every socket sees exactly one of the two programs.

Everything here is plain ctypes on the kernel's ABI (union bpf_attr,
struct bpf_link_info); an architecture without a known syscall number, or
a kernel without cgroup links, reports ``LinkUnsupported`` and the caller
falls back to the legacy attach.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import os
import platform
import struct

# bpf(2) is new enough that every architecture has its own number.
SYSCALL_NR = {
    "x86_64": 321, "amd64": 321,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "i386": 357, "i686": 357,
    "armv7l": 386, "armv6l": 386,
    "ppc64le": 361, "ppc64": 361,
    "s390x": 351,
    "mips64": 5315,
}

# enum bpf_cmd
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_TRACING = 26
BPF_MAP_DELETE_ELEM = 3
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_DETACH = 34
BPF_F_REPLACE = 1 << 2
BPF_LINK_TYPE_CGROUP = 3
BPF_MODIFY_RETURN = 26  # enum bpf_attach_type: fmod_ret

# enum bpf_attach_type, by the short names of bpf_object.ATTACH_TYPES
ATTACH_TYPE_IDS = {
    "bind4": 8, "bind6": 9,
    "connect4": 10, "connect6": 11,
    "post_bind4": 12, "post_bind6": 13,
    "sendmsg4": 14, "sendmsg6": 15,
    "recvmsg4": 19, "recvmsg6": 20,
    "getpeername4": 29, "getpeername6": 30,
    "getsockname4": 31, "getsockname6": 32,
}
ATTR_SIZE = 64  # more than every command here reads; the kernel wants the tail zero


class LinkError(Exception):
    def __init__(self, what, err):
        super(LinkError, self).__init__("%s: %s" % (what, os.strerror(err)))
        self.errno = err


class LinkUnsupported(LinkError):
    """This kernel or architecture has no cgroup bpf_link: use the legacy attach."""


_libc = None


def _bpf(cmd, attr, what, size=ATTR_SIZE):
    global _libc
    nr = SYSCALL_NR.get(platform.machine())
    if nr is None:
        raise LinkUnsupported(what, errno.ENOSYS)
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr.ljust(size, b"\0"), size)
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), buf, ctypes.c_uint(size))
    if ret < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL) and cmd == BPF_LINK_CREATE:
            raise LinkUnsupported(what, err)
        raise LinkError(what, err)
    return ret, buf


def _path_attr(path, fd=0):
    """union bpf_attr for BPF_OBJ_PIN/GET: pathname pointer, bpf_fd, file_flags."""
    name = ctypes.create_string_buffer(os.fsencode(path))
    return name, struct.pack("=QII", ctypes.addressof(name), fd, 0)


def obj_get(path):
    """An fd for a pinned program or link."""
    name, attr = _path_attr(path)
    fd, _buf = _bpf(BPF_OBJ_GET, attr, "open %s" % path)
    del name
    return fd


def obj_pin(fd, path):
    name, attr = _path_attr(path, fd)
    _bpf(BPF_OBJ_PIN, attr, "pin %s" % path)
    del name


def link_create(prog_fd, cgroup_fd, hook):
    attr = struct.pack("=IIII", prog_fd, cgroup_fd, ATTACH_TYPE_IDS[hook], 0)
    fd, _buf = _bpf(BPF_LINK_CREATE, attr, "create a bpf_link at %s" % hook)
    return fd


def tracing_link_create(prog_fd):
    """Attach a loaded fentry/fexit/fmod_ret program (its target was fixed at load)."""
    attr = struct.pack("=IIII", prog_fd, 0, BPF_MODIFY_RETURN, 0)
    fd, _buf = _bpf(BPF_LINK_CREATE, attr, "attach the fmod_ret program")
    return fd


def fmod_ret_load_probe(btf_id):
    """Load (and close at once) the smallest fmod_ret program for the kernel function
    whose BTF id is *btf_id*: ``r0 = 0; exit``. LinkError with the kernel's errno."""
    insns = ctypes.create_string_buffer(struct.pack("=BBhi", 0xB7, 0, 0, 0) + struct.pack("=BBhi", 0x95, 0, 0, 0), 16)
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("=IIQQIIQII16sIIIIQIIQIII", BPF_PROG_TYPE_TRACING, 2, ctypes.addressof(insns),
                       ctypes.addressof(license_), 0, 0, 0, 0, 0, b"mw_probe", 0, BPF_MODIFY_RETURN, 0, 0, 0, 0, 0,
                       0, 0, btf_id, 0)
    fd, _buf = _bpf(BPF_PROG_LOAD, attr, "load an fmod_ret program", size=128)
    os.close(fd)
    del insns, license_


def obj_info(fd, size=64):
    """The first *size* bytes of the kernel's struct bpf_{prog,map,link}_info of *fd*."""
    info = ctypes.create_string_buffer(size)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, size, ctypes.addressof(info)), "read the object's info")
    return info.raw


def prog_id(prog_fd):
    """struct bpf_prog_info: type, id."""
    return struct.unpack_from("=II", obj_info(prog_fd), 0)[1]


def map_shape(map_fd):
    """(type, key size, value size) of a map: struct bpf_map_info begins type, id, key_size, value_size."""
    kind, _id, key_size, value_size = struct.unpack_from("=IIII", obj_info(map_fd), 0)
    return kind, key_size, value_size


def map_lookup(map_fd, key, value_size):
    """The value at *key*, None when there is none (not for per-CPU maps: one value per CPU)."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value_size)
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0),
             "look up in the map")
    except LinkError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return None
    finally:
        del k
    return v.raw


def map_keys(map_fd, key_size):
    """Every key of the map, in the kernel's order (BPF_MAP_GET_NEXT_KEY from none)."""
    out, previous = [], None
    following = ctypes.create_string_buffer(key_size)
    while True:
        k = ctypes.create_string_buffer(previous, key_size) if previous is not None else None
        attr = struct.pack("=IIQQ", map_fd, 0, ctypes.addressof(k) if k is not None else 0,
                           ctypes.addressof(following))
        try:
            _bpf(BPF_MAP_GET_NEXT_KEY, attr, "list the map's keys")
        except LinkError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return out
        previous = following.raw
        out.append(previous)


def map_update(map_fd, key, value):
    """BPF_MAP_UPDATE_ELEM of *key* and *value* (bytes, the map's sizes)."""
    k, v = ctypes.create_string_buffer(key, len(key)), ctypes.create_string_buffer(value, len(value))
    attr = struct.pack("=IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "update the map")
    del k, v


def map_delete(map_fd, key):
    """BPF_MAP_DELETE_ELEM; False when there was no such entry."""
    k = ctypes.create_string_buffer(key, len(key))
    try:
        _bpf(BPF_MAP_DELETE_ELEM, struct.pack("=IIQ", map_fd, 0, ctypes.addressof(k)), "delete from the map")
    except LinkError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return False
    finally:
        del k
    return True


def link_update(link_fd, new_prog_fd, old_prog_fd):
    """Swap the link's program, only if it still holds old_prog_fd's program."""
    attr = struct.pack("=IIII", link_fd, new_prog_fd, BPF_F_REPLACE, old_prog_fd)
    _bpf(BPF_LINK_UPDATE, attr, "update the bpf_link")


def link_detach(link_fd):
    """Detach now, whoever else holds the link (Linux >= 5.9; older: unpinning does it)."""
    _bpf(BPF_LINK_DETACH, struct.pack("=I", link_fd), "detach the bpf_link")


def link_info(link_fd):
    """{"id", "prog_id", "cgroup_id", "attach_type"} of a cgroup link, or None for another kind."""
    info = ctypes.create_string_buffer(64)
    attr = struct.pack("=IIQ", link_fd, 64, ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "read the bpf_link")
    kind, link_id, prog_id = struct.unpack_from("=III", info.raw, 0)
    if kind != BPF_LINK_TYPE_CGROUP:
        return None
    cgroup_id, attach_type = struct.unpack_from("=QI", info.raw, 16)
    names = dict((v, k) for k, v in ATTACH_TYPE_IDS.items())
    return {"id": link_id, "prog_id": prog_id, "cgroup_id": cgroup_id,
            "attach_type": names.get(attach_type, str(attach_type))}


def cgroup_id(path):
    """What the kernel calls a cgroup v2 directory: its kernfs inode number."""
    return os.stat(path).st_ino


class Fd(object):
    """Closes the descriptor however the block ends."""

    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self.fd

    def __exit__(self, *exc):
        os.close(self.fd)
        return False


def open_cgroup(path):
    return Fd(os.open(path, os.O_RDONLY | os.O_DIRECTORY))


def pinned(path):
    return Fd(obj_get(path))
