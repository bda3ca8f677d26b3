# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``balancer_mptcp: upgrade``: the balanced applications' TCP sockets become MPTCP.

The program (files/bpf/mptcpify.bpf.c, installed beside the balancer's object) is an
fmod_ret on ``update_socket_protocol`` (Linux >= 6.6): a TCP socket that a task of a
balanced cgroup creates is MPTCP instead. It is its own object, loaded with bpftool
and attached by a bpf_link made through bpf(2) (bpftool 7.1 cannot attach tracing
programs), pinned under ``<first attachment's pin_dir>_mptcp/<object digest>/``: the
link outlives this process, a new object replaces the old one, and removing the pins
detaches it. Its cgroup table holds the attachments' cgroups, rewritten at every
apply (a slice recreated at boot is another cgroup).

``kernel_reason`` is the preflight: it loads the smallest fmod_ret program on the
hook and closes it, so that a kernel that cannot run the upgrade - trampoline programs
refused (this project's CI kernel), no ``update_socket_protocol`` (Linux < 6.6), no
BTF - is named before any change (the role asks it through balancer_facts).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import struct

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_link, bpf_object
from ansible_collections.netlb.multiwan.plugins.module_utils import cgroup as cg
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import BpftoolError, hex_number, per_cpu_values

OBJECT_NAME = "mptcpify.bpf.o"
PROGRAM = "mw_mptcpify"
CGROUPS_MAP = "mw_upgrade_cgroups"
COUNTERS_MAP = "mw_upgrade_counters"
MAX_CGROUPS = 8  # MW_UPGRADE_CGROUPS of the program
DEFAULT_PIN_BASE = "/sys/fs/bpf/netlb_multiwan"


class UpgradeError(Exception):
    pass


def object_path(doc):
    """Beside the balancer's object (the role installs both in its state directory)."""
    return os.path.join(os.path.dirname(doc["object"]), OBJECT_NAME)


def pin_base(doc):
    attachments = doc.get("attachments") or []
    return (attachments[0]["pin_dir"] if attachments else DEFAULT_PIN_BASE) + "_mptcp"


BTF_PATH = "/sys/kernel/btf/vmlinux"
HOOK = "update_socket_protocol"
BTF_KIND_FUNC = 12
# The bytes each kind of btf_type has after its 12-byte head: a fixed part, and so much per vlen.
_BTF_TAIL = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0), 15: (0, 12),
             17: (4, 0), 19: (0, 12)}


def btf_func_id(name, path=BTF_PATH):
    """The BTF type id of the kernel function *name*, None when the kernel's BTF has none;
    UpgradeError without readable BTF."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except (IOError, OSError):
        raise UpgradeError("the kernel has no BTF (%s), which fmod_ret programs need" % path)
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("=HBBIIIII", blob)
    if magic != 0xEB9F:
        raise UpgradeError("%s is not BTF of this byte order" % path)
    types, strings = hdr_len + type_off, hdr_len + str_off
    wanted = name.encode() + b"\0"
    offset, type_id = types, 1
    while offset < types + type_len:
        name_off, info, _size = struct.unpack_from("=III", blob, offset)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == BTF_KIND_FUNC and blob[strings + name_off:strings + name_off + len(wanted)] == wanted:
            return type_id
        fixed, each = _BTF_TAIL.get(kind, (0, 0))
        offset += 12 + fixed + each * vlen
        type_id += 1
    return None


def kernel_reason():
    """None when this kernel loads an fmod_ret program on update_socket_protocol, else why
    not: a probe program is loaded and closed at once (no object file needed, nothing
    stays loaded), so the role can ask before it changes anything."""
    try:
        func = btf_func_id(HOOK)
    except UpgradeError as exc:
        return str(exc)
    if func is None:
        return "the kernel has no %s hook (Linux < 6.6)" % HOOK
    try:
        bpf_link.fmod_ret_load_probe(func)
    except bpf_link.LinkError as exc:
        return why_not(str(exc))
    return None


def why_not(detail):
    """What a failed load says about the kernel, in a sentence."""
    if "update_socket_protocol" in detail or "No such process" in detail:
        return "the kernel has no update_socket_protocol hook (Linux < 6.6)"
    if "Operation not permitted" in detail:
        return ("this kernel refuses trampoline programs (fentry, fmod_ret): loading one fails with EPERM "
                "before the verifier runs")
    if "BTF" in detail:
        return "the kernel has no BTF (CONFIG_DEBUG_INFO_BTF), which fmod_ret programs need"
    lines = [line for line in detail.splitlines() if line.strip()]
    return "the upgrade program does not load: %s" % (lines[-1] if lines else "?")


def _full_cgroups(doc):
    mount = cg.cgroup2_mount()
    if mount is None:
        raise UpgradeError("no cgroup2 file system mounted")
    return [os.path.join(mount, a["cgroup"].lstrip("/")) for a in doc.get("attachments", [])][:MAX_CGROUPS]


def _fill_cgroups(maps_dir, cgroups):
    """The cgroup table to exactly *cgroups* (each an fd the kernel resolves to its cgroup)."""
    with bpf_link.pinned(os.path.join(maps_dir, CGROUPS_MAP)) as table:
        for index in range(MAX_CGROUPS):
            key = struct.pack("=I", index)
            if index < len(cgroups):
                with bpf_link.open_cgroup(cgroups[index]) as cgroup_fd:
                    bpf_link.map_update(table, key, struct.pack("=I", cgroup_fd))
            else:
                bpf_link.map_delete(table, key)


def _remove(directory):
    """Unpin everything under *directory*, the link first: the program stops upgrading sockets
    before its maps go."""
    link = os.path.join(directory, "link")
    if os.path.exists(link):
        os.unlink(link)
    shutil.rmtree(directory)


def attached_here(doc):
    """The pin directory of the attached upgrade program (its link pinned), or None."""
    base = pin_base(doc)
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if os.path.exists(os.path.join(base, name, "link")):
            return os.path.join(base, name)
    return None


def observe(doc, dump_map):
    """What status and metrics show of the upgrade: ({"attached", "upgraded" (TCP sockets
    of the balanced cgroups made MPTCP), "left_alone" (TCP sockets of other tasks)},
    problems); None when the document does not ask for it. *dump_map(path)*: bpftool's
    JSON dump of the pinned map, or raises ValueError naming why not."""
    if doc.get("mptcp") != "upgrade":
        return None, []
    here = attached_here(doc)
    out = {"attached": here is not None, "upgraded": None, "left_alone": None}
    if here is None:
        return out, ["mptcp: the upgrade program is not attached: the balanced applications' TCP stays TCP "
                     "(a role run or the boot unit attaches it)"]
    try:
        totals = dict((key, sum(hex_number(v) for v in per_cpu))
                      for key, per_cpu in per_cpu_values(dump_map(os.path.join(here, "maps", COUNTERS_MAP))).items())
    except ValueError as exc:
        return out, ["mptcp: the upgrade counters not read (%s)" % exc]
    out["upgraded"], out["left_alone"] = totals.get(0, 0), totals.get(1, 0)
    return out, []


def converge(doc, bpftool, check_mode=False):
    """The upgrade program attached when the document's mptcp is ``upgrade``, with the
    attachments' cgroups in its table; detached and unpinned otherwise. The actions."""
    base = pin_base(doc)
    present = sorted(os.listdir(base)) if os.path.isdir(base) else []
    if doc.get("mptcp") != "upgrade":
        if not present:
            return []
        if not check_mode:
            _remove(base)
        return ["mptcp: upgrade program detached (%s)" % base]
    path = object_path(doc)
    if check_mode and not os.path.isfile(path):
        return ["mptcp: attach the upgrade program %s" % path]
    digest = bpf_object.digest(path)[:16]
    here = os.path.join(base, digest)
    actions = []
    for stale in [d for d in present if d != digest]:
        actions.append("mptcp: upgrade program %s detached (another object)" % stale)
        if not check_mode:
            _remove(os.path.join(base, stale))
    if os.path.exists(os.path.join(here, "link")):
        if not check_mode:
            _fill_cgroups(os.path.join(here, "maps"), _full_cgroups(doc))
        return actions
    actions.append("mptcp: upgrade program attached (TCP sockets of %s become MPTCP)"
                   % ", ".join(a["cgroup"] for a in doc.get("attachments", [])))
    if check_mode:
        return actions
    if os.path.isdir(here):
        _remove(here)  # a half-made one: a run that stopped half-way
    os.makedirs(here)
    try:
        bpftool.text_runner.run("prog", "load", path, os.path.join(here, "prog"), "pinmaps", os.path.join(here, "maps"))
        _fill_cgroups(os.path.join(here, "maps"), _full_cgroups(doc))
        with bpf_link.pinned(os.path.join(here, "prog")) as prog:
            with bpf_link.Fd(bpf_link.tracing_link_create(prog)) as link:
                bpf_link.obj_pin(link, os.path.join(here, "link"))
    except (BpftoolError, bpf_link.LinkError, OSError) as exc:
        _remove(here)
        raise UpgradeError("the upgrade program was not attached: %s" % why_not(str(exc)))
    return actions
