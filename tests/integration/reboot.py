"""Reboot a VM lab guest's root: save what a provisioned guest wrote, and boot a
fresh kernel on it running only what the host's boot would run.

The guest's root is an overlay whose upper layer (the guest's writes) lives on
a tmpfs at /run/netlb/scratch/upper (tests/lab/vm-initramfs-init.sh).
``save_root`` tars it to a host directory (shared read-write with the guest);
``booted_root`` (in a later guest, i.e. a fresh kernel) stacks it as the upper
layer of a new overlay, like the host's disk after a reboot, and
``run_boot_units`` runs the netlb units enabled in it: modules-load.d, then
every enabled netlb-multiwan unit's ExecStart in the order their Before=/After=
give. systemd is not PID 1 in the guest, so this replays its job for our units
(and `systemd-analyze verify` checks the unit files).
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

GUEST_UPPER = "/run/netlb/scratch/upper"
ROOT = "/run/netlb-reboot/root"
TARBALL = "upper.tar"
TAR_FLAGS = ["--xattrs", "--xattrs-include=*", "--numeric-owner"]
# Scratch that a real host would not keep across a reboot either.
NOT_PERSISTENT = ["./tmp", "./root/.ansible", "./root/.cache", "./var/tmp"]


def save_root(host_dir: str) -> None:
    """*host_dir*: a host directory the guest shares read-write (run_in_vm(shares=...))."""
    dest = os.path.join(host_dir, TARBALL)
    excludes = ["--exclude=" + p for p in NOT_PERSISTENT]
    subprocess.run(["tar", "-C", GUEST_UPPER, "-cpf", dest, *TAR_FLAGS, *excludes, "."], check=True)


@contextlib.contextmanager
def booted_root(host_dir: str):
    """The saved root mounted at ROOT with the kernel file systems a boot mounts."""
    base = os.path.dirname(ROOT)
    upper, work = base + "/upper", base + "/work"
    os.makedirs(base, exist_ok=True)
    mounts = []

    def mount(*argv: str) -> None:
        subprocess.run(["mount", *argv], check=True)
        mounts.append(argv[-1])

    mount("-t", "tmpfs", "tmpfs", base)
    for path in (upper, work, ROOT):
        os.makedirs(path, exist_ok=True)
    src = os.path.join(host_dir, TARBALL)
    subprocess.run(["tar", "-C", upper, "-xpf", src, *TAR_FLAGS], check=True)
    try:
        mount("-t", "overlay", "overlay", "-o", "lowerdir=/,upperdir=%s,workdir=%s" % (upper, work), ROOT)
        mount("-t", "proc", "proc", ROOT + "/proc")
        mount("-t", "sysfs", "sysfs", ROOT + "/sys")
        mount("-t", "cgroup2", "cgroup2", ROOT + "/sys/fs/cgroup")
        # The same bpffs instance as outside the chroot: pins are per mount.
        mount("--bind", "/sys/fs/bpf", ROOT + "/sys/fs/bpf")
        mount("-t", "tmpfs", "tmpfs", ROOT + "/run")
        mount("--rbind", "/dev", ROOT + "/dev")
        yield ROOT
    finally:
        for path in reversed(mounts):
            subprocess.run(["umount", "-l", path], check=False)


def _unit_field(text: str, key: str) -> list[str]:
    return [v for line in text.splitlines() if line.startswith(key + "=")
            for v in line.split("=", 1)[1].split()]


def enabled_units(root: str) -> list[str]:
    """netlb units enabled for boot (symlinks in any *.wants), in start order."""
    names = sorted({os.path.basename(p) for p in glob.glob(root + "/etc/systemd/system/*.wants/netlb-multiwan-*")})
    texts = {n: Path(root, "etc/systemd/system", n).read_text() for n in names}
    ordered: list[str] = []

    def visit(name: str, seen: tuple = ()) -> None:
        if name in ordered or name in seen:
            return
        before_me = [n for n in names if name in _unit_field(texts[n], "Before")]
        for dep in _unit_field(texts[name], "After") + before_me:
            if dep in texts:
                visit(dep, seen + (name,))
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def run_boot_units(root: str) -> dict:
    log: dict = {"modules": [], "units": [], "verify": None}
    for conf in sorted(glob.glob(root + "/etc/modules-load.d/netlb-*.conf")):
        for mod in Path(conf).read_text().split("\n"):
            if mod.strip() and not mod.startswith("#"):
                proc = subprocess.run(["modprobe", mod.strip()], capture_output=True, text=True)
                log["modules"].append({"module": mod.strip(), "rc": proc.returncode})
    units = enabled_units(root)
    unit_files = [Path(root, "etc/systemd/system", n) for n in units]
    verify = subprocess.run(["chroot", root, "systemd-analyze", "verify", "--man=no",
                             *["/etc/systemd/system/" + f.name for f in unit_files]],
                            capture_output=True, text=True)
    # Dependencies on device units and slices.target are resolved at boot only.
    log["verify"] = {"rc": verify.returncode, "output": verify.stdout + verify.stderr}
    for name, path in zip(units, unit_files):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.split("=", 1)[1])
                proc = subprocess.run(["chroot", root, *argv], capture_output=True, text=True, timeout=120)
                log["units"].append({"unit": name, "argv": argv, "rc": proc.returncode,
                                     "output": proc.stdout + proc.stderr})
    return log


def boot_view(cgroup: str) -> dict:
    """What must come back after a reboot, without what differs per boot by
    nature (ifindexes, MAC-derived link-local addresses, program ids)."""
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True).stdout)
    view = {"links": sorted("%s master=%s kind=%s table=%s up=%s" % (
        ln["ifname"], ln.get("master"), ln.get("linkinfo", {}).get("info_kind"),
        ln.get("linkinfo", {}).get("info_data", {}).get("table"), "UP" in ln.get("flags", []))
        for ln in links)}
    for key, argv in {"route4": ["ip", "route", "show", "table", "all"],
                      "route6": ["ip", "-6", "route", "show", "table", "all"],
                      "rule4": ["ip", "rule"], "rule6": ["ip", "-6", "rule"]}.items():
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        view[key] = sorted(ln for ln in out.splitlines() if "fe80" not in ln)
    proc = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True, text=True)
    try:
        progs = json.loads(proc.stdout or "[]")
        view["cgroup"] = sorted("%s %s" % (p["attach_type"], p["name"]) for p in progs)
    except (ValueError, TypeError, KeyError):
        view["cgroup"] = "bpftool: %s %s" % (proc.stdout, proc.stderr)
    view["pins"] = sorted(re.sub(r"/[0-9a-f]{16}(/|$)", r"/<digest>\1", str(p))
                          for p in Path("/sys/fs/bpf").rglob("*"))
    return view
