"""Run a shell script inside a QEMU guest booting Debian's own kernel (VRF-capable).

The host kernel may lack VRF; Debian's ``linux-image-*-amd64`` has it as a module. The
guest (tests/lab/vmkernel.py prepares its kernel and initramfs under ``.build/vm``)
boots with the host's ``/`` shared read-only over 9p, under an overlay whose writable
layer is a tmpfs (or a virtio disk): nothing the guest writes reaches host files. The
second stage init (``vm-guest-init.sh``, PID 1) mounts the kernel file systems, loads
``vrf``, then runs the script with bash (no ``-e``) in *cwd* with ``NETLB_IN_VM=1`` and
powers off.

Results come back through a host temp dir shared read-write over 9p: ``output`` (the
script's combined stdout/stderr, never kernel messages) and ``rc``. A guest that dies
or times out yields a non-zero return code (124 timeout, 125 no exit status) and an
explanation appended to ``output``.

Accelerator: KVM where a probe boot of this very kernel succeeds with it (cached per
host and guest kernel), TCG otherwise; ``NETLB_VM_ACCEL=tcg|kvm`` forces one. A bare
"/dev/kvm opens" proves nothing: on PVM hosts (``/sys/module/kvm_pvm``) KVM_CREATE_VM
works, yet a stock kernel hangs at boot.

``VmGuest`` is the same guest started in the background, optionally with NICs on
taps (tests/lab/fleet.py boots several that way), read-write host directories, a
persistent disk for the writable layer (a real reboot keeps it) and systemd as PID 1.

Guest kernel: ``kernel_series="6.1"`` (the default: Debian 12's own) or ``"6.12"``
(bookworm-backports), per guest (vmkernel.SERIES).

CLI: ``python -m tests.lab.vm [--timeout N] [-e K=V] [--kernel 6.12] -- 'shell script'``;
``python -m tests.lab.vm --info [--kernel 6.12]`` prepares the kernel and prints what would be used.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sysconfig
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ._common import Terminated, cleanup_on_signals, exited, kill_tree
from .vmkernel import DEFAULT_SERIES, SERIES, GuestKernel, VmSetupError, ensure_kernel, ensure_python_image, vm_dir

REPO_ROOT = str(Path(__file__).resolve().parents[2])
STAGE2 = str(Path(__file__).resolve().with_name("vm-guest-init.sh"))
REAPER = str(Path(__file__).resolve().with_name("_reaper.py"))
IN_GUEST = "NETLB_IN_VM"  # set to 1 in every guest's environment

RC_TIMEOUT = 124
RC_NO_STATUS = 125

# Paths go on the kernel command line and into QEMU options: no spaces, commas or quotes.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEM = re.compile(r"^[0-9]+[MG]$")
_KERNEL_ARG = re.compile(r"^[A-Za-z0-9_.]+=[A-Za-z0-9_.,-]+$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONSOLE_NOISE = re.compile(r"^(reboot: Power down|ACPI: PM: Preparing to enter system sleep state S5)")


INITS = ("script", "systemd", "systemd-service")


class VmError(RuntimeError):
    pass


@dataclass
class VmResult:
    returncode: int
    output: str
    boot_seconds: float | None = None  # host time from exec to script start
    elapsed: float = 0.0  # host time from exec to guest exit
    console: str = ""  # guest console (kernel and init messages)


@dataclass(frozen=True)
class Nic:
    tap: str  # tap device in the guest's netns (made by the caller)
    mac: str
    name: str  # what the guest calls it


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def vm_available() -> str | None:
    """None when guests can boot here, else the reason (one line: what to install or set)."""
    if os.uname().machine != "x86_64":
        return f"the VM lab boots Debian's amd64 kernel; this machine is {os.uname().machine}"
    if qemu_binary() is None:
        return "qemu-system-x86_64 not found: apt-get install qemu-system-x86 (or run `make deps`)"
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(ln.split()[1]) for ln in f if ln.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        avail = 1 << 30
    if avail < 1 << 20:  # KiB
        return f"not enough memory for a 1 GiB guest: {avail >> 10} MiB available"
    return None


def _accel_cache(series: str = DEFAULT_SERIES) -> Path:
    return vm_dir() / ("accel.json" if series == DEFAULT_SERIES else f"accel-{series}.json")


def accelerator(kernel: GuestKernel, series: str = DEFAULT_SERIES) -> tuple[str, str]:
    """("kvm" | "tcg", why), probed once per host kernel and guest kernel (*kernel*, the
    kernel of *series*)."""
    forced = os.environ.get("NETLB_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, "NETLB_VM_ACCEL"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "tcg", "KVM here is PVM (kvm_pvm), which boots no stock kernel"
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as e:
        return "tcg", f"/dev/kvm: {e.strerror}"
    key = f"{os.uname().release} {kernel.release}"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(_accel_cache(series).read_text())
        if cached.get("key") == key:
            return cached["accel"], cached["why"] + " (cached)"
    t0 = time.monotonic()
    try:
        probe = run_in_vm("true", timeout=60, accel="kvm", mem="512M", kernel_series=series)
        ok = probe.returncode == 0
    except (VmError, OSError):
        ok = False
    accel, why = ("kvm", "a probe boot with KVM worked") if ok else ("tcg", "a probe boot with KVM failed")
    why += f" ({time.monotonic() - t0:.1f} s)"
    with contextlib.suppress(OSError):
        _accel_cache(series).write_text(json.dumps({"key": key, "accel": accel, "why": why}))
    return accel, why


def describe(kernel_series: str = DEFAULT_SERIES) -> str:
    """One line: guest kernel and accelerator (what demo and tests print)."""
    kernel = ensure_kernel(kernel_series)
    accel, why = accelerator(kernel, kernel_series)
    return f"{kernel.description}, accelerator {accel.upper()}: {why}"


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


class VmGuest:
    """A guest running *script* in the background (what run_in_vm waits for).

    ``start()`` boots it and returns at once; ``output()``, ``has_started()`` and
    ``has_exited()`` watch it; ``close()`` kills it and removes its temp dir (also on
    exceptions when used as a context manager). *netns* runs QEMU in that network
    namespace, where the taps of *nics* live. *shares* are host directories mounted
    read-write at the same path in the guest. *disk* is a raw ext4 image that holds the
    guest's writes instead of a tmpfs, so that they survive a reboot (see make_disk);
    with *allow_reboot* a reboot inside the guest boots it again instead of ending it.
    *init* "systemd" runs systemd as PID 1 and the script as a unit after multi-user.target
    (the guest powers off when it ends); "systemd-service" runs the script as a long-lived
    service ordered before network.target, ready when it sends sd_notify READY=1 (a fleet
    guest, whose uplinks stand for a real host's NICs). *kernel_args* go on
    the guest kernel's command line (e.g. ``module_blacklist=vrf``: a kernel without VRF).
    *kernel_series* picks the guest kernel: "6.1" (Debian 12's) or "6.12" (bookworm-backports)."""

    def __init__(
        self,
        script: str,
        *,
        mem: str = "1G",
        env: dict[str, str] | None = None,
        cwd: str = REPO_ROOT,
        netns: str | None = None,
        nics: list[Nic] | tuple[Nic, ...] = (),
        shares: list[str] | tuple[str, ...] = (),
        disk: str | None = None,
        allow_reboot: bool = False,
        init: str = "script",
        accel: str | None = None,
        smp: int = 2,
        kernel_args: list[str] | tuple[str, ...] = (),
        kernel_series: str = DEFAULT_SERIES,
    ) -> None:
        if os.environ.get(IN_GUEST) == "1":
            raise VmError("already inside a lab guest: nested guests are not supported")
        reason = vm_available()
        if reason:
            raise VmError(reason)
        if not _MEM.match(mem):
            raise ValueError(f"bad mem size {mem!r} (e.g. 512M, 1G)")
        for name in env or {}:
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
        for nic in nics:
            if not (_MAC.match(nic.mac) and _IFNAME.match(nic.tap) and _IFNAME.match(nic.name)):
                raise ValueError(f"bad NIC {nic}")
        for path in [*shares, *([disk] if disk else []), cwd, STAGE2]:
            if not _SAFE_PATH.match(path):
                raise ValueError(f"path not usable in QEMU options or on a kernel command line: {path!r}")
        if netns is not None and not _NETNS.match(netns):
            raise ValueError(f"bad network namespace name {netns!r}")
        for arg in kernel_args:
            if not _KERNEL_ARG.match(arg):
                raise ValueError(f"bad kernel argument {arg!r} (name=value of [A-Za-z0-9_.,-])")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, not {init!r}")
        if kernel_series not in SERIES:
            raise ValueError(f"kernel_series must be one of {', '.join(SERIES)}, not {kernel_series!r}")
        self.script, self.mem, self.env, self.cwd = script, mem, dict(env or {}), cwd
        self.netns, self.nics, self.shares, self.disk = netns, list(nics), list(shares), disk
        self.allow_reboot, self.init, self.accel, self.smp = allow_reboot, init, accel, smp
        self.kernel_args, self.kernel_series = list(kernel_args), kernel_series
        self.tmp: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0
        self.kernel: GuestKernel | None = None
        self.python_image: Path | None = None

    def __enter__(self) -> VmGuest:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def xfer(self) -> Path:
        assert self.tmp is not None, "guest not started"
        return Path(self.tmp, "xfer")

    def _qemu_argv(self, kernel: GuestKernel, accel: str) -> list[str]:
        append = ["console=ttyS0", "quiet", "panic=-1", "8250.nr_uarts=1", "tsc=reliable",
                  f"NETLB_STAGE2={STAGE2}", f"NETLB_UPPER={'disk' if self.disk else 'tmpfs'}", *self.kernel_args]  # fmt: skip
        argv = [
            qemu_binary() or "qemu-system-x86_64",
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-machine", "pc", "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi",
            "-cpu", "host" if accel == "kvm" else os.environ.get("NETLB_VM_CPU", "max"),
            "-smp", str(self.smp), "-m", self.mem,
            "-serial", f"file:{self.tmp}/console",
            "-kernel", str(kernel.vmlinux), "-initrd", str(kernel.initramfs), "-append", " ".join(append),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.xfer},mount_tag=xfer,security_model=none",
            "-device", "virtio-rng-pci",
        ]  # fmt: skip
        for i, path in enumerate(self.shares):
            argv += ["-virtfs", f"local,path={path},mount_tag=share{i},security_model=none"]
        # vda: the Python image (read-only); vdb: the writable layer's disk.
        argv += ["-drive", f"file={self.python_image},format=raw,if=virtio,readonly=on"]
        if self.disk:
            argv += ["-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe"]
        for i, nic in enumerate(self.nics):
            argv += ["-netdev", f"tap,id=n{i},ifname={nic.tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=n{i},mac={nic.mac}"]  # fmt: skip
        if not self.allow_reboot:
            argv.append("-no-reboot")
        return argv

    def start(self) -> None:
        self.kernel = ensure_kernel(self.kernel_series)
        self.python_image, python_trees = ensure_python_image()
        accel = self.accel or accelerator(self.kernel, self.kernel_series)[0]
        self.tmp = tempfile.mkdtemp(prefix="netlb-vm-")
        if not _SAFE_PATH.match(self.tmp):
            raise VmError(f"temp dir path not usable in QEMU options: {self.tmp}")
        xfer = self.xfer
        xfer.mkdir()
        script = self.script
        (xfer / "script.sh").write_text(script if script.endswith("\n") else script + "\n")
        lines = [f"export NETLB_CWD={shlex.quote(self.cwd)}",
                 f"export NETLB_MODULES_DIR={shlex.quote(str(self.kernel.modules))}",
                 f"export NETLB_INIT={self.init}",
                 f"export NETLB_NICS={shlex.quote(' '.join(f'{n.mac}={n.name}' for n in self.nics))}",
                 f"export NETLB_SHARES={shlex.quote(' '.join(self.shares))}",
                 f"export NETLB_PYTHON_TREES={shlex.quote(' '.join(python_trees))}",
                 f"export NETLB_PYTHON_SITE={shlex.quote(sysconfig.get_path('purelib'))}"]  # fmt: skip
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in self.env.items()]
        (xfer / "env").write_text("\n".join(lines) + "\n")
        cmd = self._qemu_argv(self.kernel, accel)
        # `ip netns exec` execs the reaper: proc.pid stays the reaper's pid.
        in_netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        host_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TMPDIR": self.tmp}
        with open(Path(self.tmp, "qemu.log"), "wb") as log:
            self.t0 = time.monotonic()
            self.proc = subprocess.Popen(
                [*in_netns, sys.executable, "-I", REAPER, "--rmtree-if-orphaned", self.tmp, *cmd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=host_env,
                cwd=self.tmp,
                start_new_session=True,  # away from our terminal's Ctrl-C
            )

    def output(self) -> str:
        """The script's output so far."""
        return _read(self.xfer / "output")

    def has_started(self) -> bool:
        """Has the init started the script (the guest is booted)?"""
        return (self.xfer / "started").exists()

    def has_exited(self) -> bool:
        return self.proc is None or exited(self.proc.pid)  # not reaped: kill() needs the pid

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:  # not reaped yet
            _stop(self.proc)
            self.proc.wait()

    def close(self) -> None:
        """Kill the guest (if still running) and remove its temp dir. Idempotent."""
        try:
            self.kill()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def console(self) -> str:
        """The guest console (kernel and init messages) so far."""
        return _read(Path(self.tmp, "console")) if self.tmp else ""

    def failure_notes(self, msg: str) -> str:
        """*msg* plus what the init, QEMU and the console said, to explain a dead guest."""
        assert self.tmp is not None
        notes = (_read(self.xfer / "init-error") + _read(Path(self.tmp, "qemu.log"))).strip()
        tail = "\n".join(ln for ln in self.console().splitlines()[-40:] if not _CONSOLE_NOISE.search(ln))
        return (
            f"[netlb-vm] {msg}\n"
            + (f"[netlb-vm] {notes}\n" if notes else "")
            + (f"[netlb-vm] console tail:\n{tail}\n" if tail.strip() else "")
        )


def make_disk(path: str, size: str = "4G") -> None:
    """A sparse raw ext4 image for VmGuest(disk=...): the guest's writable layer."""
    with open(path, "wb") as f:
        f.truncate(int(size.rstrip("G")) << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", path],
                   check=True, capture_output=True)  # fmt: skip


def run_in_vm(
    script: str,
    *,
    timeout: float = 900,
    mem: str = "1G",
    env: dict[str, str] | None = None,
    cwd: str = REPO_ROOT,
    stream: TextIO | None = None,
    shares: list[str] | tuple[str, ...] = (),
    disk: str | None = None,
    allow_reboot: bool = False,
    init: str = "script",
    accel: str | None = None,
    kernel_args: list[str] | tuple[str, ...] = (),
    kernel_series: str = DEFAULT_SERIES,
) -> VmResult:
    """Boot a guest, run *script* with bash in *cwd*, return its result.

    *env* is added to the guest environment (PATH, HOME=/root, NETLB_IN_VM=1 are set
    already). If *stream* is given, the output is also echoed there live. The QEMU
    process tree and the temp dir are removed in every case (timeout, exception,
    Ctrl-C, SIGTERM). *kernel_series*: the guest kernel, "6.1" (default) or "6.12"."""
    guest = VmGuest(script, mem=mem, env=env, cwd=cwd, shares=shares, disk=disk, allow_reboot=allow_reboot,
                    init=init, accel=accel, kernel_args=kernel_args, kernel_series=kernel_series)  # fmt: skip
    try:
        with cleanup_on_signals():
            guest.start()
            assert guest.proc is not None
            out_path = guest.xfer / "output"
            boot: float | None = None
            streamed = 0
            timed_out = False
            while True:
                done = guest.has_exited()
                if boot is None and guest.has_started():
                    boot = time.monotonic() - guest.t0
                if stream is not None:
                    streamed = _echo_new(out_path, streamed, stream)
                if done:
                    break
                if time.monotonic() - guest.t0 > timeout:
                    timed_out = True
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - guest.t0
            guest.kill()

        output = guest.output()
        rc_text = _read(guest.xfer / "rc").strip()
        if timed_out:
            rc = RC_TIMEOUT
            msg = f"guest timed out after {timeout:g} s and was killed"
        elif rc_text.lstrip("-").isdigit():
            rc, msg = int(rc_text), ""
        else:
            rc = RC_NO_STATUS
            msg = f"guest exited (QEMU status {guest.proc.returncode}) without reporting an exit status"
        if msg:
            why = ("" if not output or output.endswith("\n") else "\n") + guest.failure_notes(msg)
            output += why
            if stream is not None:
                stream.write(why)
                stream.flush()
        return VmResult(rc, output, boot, elapsed, guest.console())
    finally:
        guest.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the guest: the reaper SIGKILLs QEMU's process group and reaps it; if the
    reaper does not finish in time, kill the whole tree ourselves."""
    if not exited(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not exited(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    kill_tree(proc.pid, proc.pid)


def _echo_new(path: Path, offset: int, stream: TextIO) -> int:
    """Write what was appended to *path* since *offset* to *stream*."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        # Only whole UTF-8 sequences: cut before a trailing partial one.
        cut = len(data)
        for i in range(1, min(4, len(data)) + 1):
            b = data[-i]
            if b & 0xC0 == 0xC0:  # lead byte of a multi-byte sequence
                need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
                if i < need:
                    cut = len(data) - i
                break
            if b < 0x80:
                break
        stream.write(data[:cut].decode("utf-8", "replace"))
        stream.flush()
        return offset + cut
    return offset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.lab.vm",
        description="Run a shell script (bash, no -e) inside a QEMU guest booting Debian's kernel "
        "(VRF-capable); exit with its status (124 timeout, 125 guest died).",
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--mem", default="1G")
    p.add_argument("--cwd", default=REPO_ROOT)
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("--systemd", action="store_true", help="systemd as PID 1, the script as a unit")
    p.add_argument("--no-stream", action="store_true", help="print the output only at the end")
    p.add_argument("--times", action="store_true", help="report boot/total time on stderr")
    p.add_argument("--info", action="store_true", help="prepare the kernel, print kernel and accelerator")
    p.add_argument("--kernel", default=DEFAULT_SERIES, choices=sorted(SERIES), help="guest kernel series")
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- 'shell script'")
    a = p.parse_args(argv)
    try:
        reason = vm_available()
        if reason:
            print(f"[netlb-vm] {reason}", file=sys.stderr)
            return 2
        if a.info:
            print(describe(a.kernel))
            return 0
        words = a.script[1:] if a.script[:1] == ["--"] else a.script
        if not words:
            p.error("no script given")
        env = dict(kv.split("=", 1) for kv in a.env)
        res = run_in_vm(" ".join(words), timeout=a.timeout, mem=a.mem, env=env, cwd=a.cwd,
                        init="systemd" if a.systemd else "script", kernel_series=a.kernel,
                        stream=None if a.no_stream else sys.stdout)  # fmt: skip
    except (VmSetupError, VmError) as e:
        print(f"[netlb-vm] {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[netlb-vm] interrupted; guest killed", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"[netlb-vm] {e}; guest killed", file=sys.stderr)
        return 128 + e.signum
    if a.no_stream:
        sys.stdout.write(res.output)
        sys.stdout.flush()
    if a.times:
        boot = f"{res.boot_seconds:.2f}" if res.boot_seconds is not None else "n/a"
        print(f"[netlb-vm] boot-to-script {boot} s, total {res.elapsed:.2f} s", file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
