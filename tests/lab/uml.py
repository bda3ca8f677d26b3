"""Run a shell script inside a user-mode-linux (UML) guest.

The host kernel has no VRF; Debian's ``linux.uml`` (Linux 6.1) has it as a
module.  The guest boots with the host's root file system read-only through
hostfs; ``uml-guest-init.sh`` (PID 1) chroots into an overlay on a tmpfs so
nothing written in the guest reaches host files, mounts the kernel file systems,
loads ``vrf``, then runs the script with bash (no ``-e``) in *cwd* with
``NETLB_IN_UML=1`` and powers off.

Results come back through a host temp dir mounted read-write in the guest with
hostfs: ``output`` (the script's combined stdout/stderr, never kernel messages)
and ``rc``.  A guest that dies or times out yields a non-zero return code
(124 timeout, 125 no exit status) and an explanation appended to ``output``.

``UmlGuest`` is the same guest started in the background, optionally with
network devices (tests/lab/fleet.py boots several that way).

CLI: ``python -m tests.lab.uml [--timeout N] [-e K=V] -- 'shell script'``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ._common import Terminated, cleanup_on_signals, exited, kill_tree

REPO_ROOT = str(Path(__file__).resolve().parents[2])
GUEST_INIT = str(Path(__file__).resolve().with_name("uml-guest-init.sh"))
REAPER = str(Path(__file__).resolve().with_name("_reaper.py"))

RC_TIMEOUT = 124
RC_NO_STATUS = 125

# Paths go on the kernel command line and into a hostfs mount option: no spaces,
# commas or quotes.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEM = re.compile(r"^[0-9]+[KMG]?$")
_KERNEL_ARG = re.compile(r"^[A-Za-z0-9_.:=,/+-]+$")
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Boot chatter that Debian's UML kernel prints even with "quiet".
_CONSOLE_NOISE = re.compile(
    r"^(SELinux: |mmapper_init|Failed to initialize ubd|sysrq: Power Off|reboot: Power down)"
)


@dataclass
class UmlResult:
    returncode: int
    output: str
    boot_seconds: float | None = None  # host time from exec to script start
    elapsed: float = 0.0  # host time from exec to guest exit
    console: str = ""  # guest console (init messages, kernel warnings)


def uml_kernel() -> str | None:
    """Path of the UML kernel ($NETLB_UML_KERNEL or linux.uml on PATH), or None."""
    cand = os.environ.get("NETLB_UML_KERNEL") or shutil.which("linux.uml")
    if not cand and os.access("/usr/bin/linux.uml", os.X_OK):
        cand = "/usr/bin/linux.uml"
    return cand if cand and os.access(cand, os.X_OK) else None


def _temp_base(mem_bytes: int) -> str | None:
    """UML backs guest RAM with a file in $TMPDIR (it warns if that is not a
    tmpfs).  Prefer /dev/shm when it has room for the whole guest memory."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    if st.f_bavail * st.f_frsize > mem_bytes * 1.5 and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def _mem_bytes(mem: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(mem[-1], 1)
    return int(mem.rstrip("KMG")) * mult


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


class UmlGuest:
    """A guest running *script* in the background (what run_in_uml waits for).

    ``start()`` boots it and returns at once; ``output()``, ``has_started()`` and
    ``has_exited()`` watch it; ``close()`` kills it and removes its temp dir (also
    on exceptions when used as a context manager).  *netns* runs linux.uml in that
    network namespace, where the tap devices of its NICs live; *kernel_args* are
    extra UML options such as ``vec0:transport=tap,ifname=TAP``."""

    def __init__(
        self,
        script: str,
        *,
        mem: str = "1G",
        env: dict[str, str] | None = None,
        cwd: str = REPO_ROOT,
        netns: str | None = None,
        kernel_args: tuple[str, ...] | list[str] = (),
    ) -> None:
        if os.environ.get("NETLB_IN_UML") == "1":
            raise RuntimeError("already inside a UML guest: nested UML is not supported")
        kernel = uml_kernel()
        if kernel is None:
            raise RuntimeError("linux.uml not found (apt-get install user-mode-linux)")
        if not _MEM.match(mem):
            raise ValueError(f"bad mem size {mem!r} (e.g. 512M, 1G)")
        for name in env or {}:
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
        for arg in kernel_args:
            if not _KERNEL_ARG.match(arg):
                raise ValueError(f"bad kernel argument {arg!r} (no spaces or quotes)")
        if netns is not None and not _NETNS.match(netns):
            raise ValueError(f"bad network namespace name {netns!r}")
        if not _SAFE_PATH.match(GUEST_INIT):
            raise RuntimeError(f"guest init path not usable on a kernel command line: {GUEST_INIT}")
        self.kernel, self.script, self.mem, self.env, self.cwd = kernel, script, mem, dict(env or {}), cwd
        self.netns, self.kernel_args = netns, list(kernel_args)
        self.tmp: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0

    def __enter__(self) -> UmlGuest:
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

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="netlb-uml-", dir=_temp_base(_mem_bytes(self.mem)))
        if not _SAFE_PATH.match(self.tmp):
            raise RuntimeError(f"temp dir path not usable on a kernel command line: {self.tmp}")
        xfer = self.xfer
        xfer.mkdir()
        script = self.script
        (xfer / "script.sh").write_text(script if script.endswith("\n") else script + "\n")
        lines = [f"export NETLB_CWD={shlex.quote(self.cwd)}"]
        lines += [f"export {k}={shlex.quote(str(v))}" for k, v in self.env.items()]
        (xfer / "env").write_text("\n".join(lines) + "\n")
        umldir = Path(self.tmp, "uml")  # pid file / mconsole socket, default ~/.uml
        umldir.mkdir()

        cmd = [
            self.kernel,
            f"mem={self.mem}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            "init=/bin/bash",  # runs the init script below; no exec bit needed
            "con=null",
            "con0=fd:0,fd:1",
            "ssl=null",
            f"uml_dir={umldir}",
            "quiet",
            *self.kernel_args,
            f"NETLB_XFER={xfer}",  # unknown key=value -> init's environment
            "--",
            GUEST_INIT,
        ]
        # `ip netns exec` execs the reaper: proc.pid stays the reaper's pid.
        in_netns = ["ip", "netns", "exec", self.netns] if self.netns else []
        host_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TMPDIR": self.tmp}
        with open(Path(self.tmp, "console"), "wb") as console:
            self.t0 = time.monotonic()
            # linux.uml forks helpers; the reaper kills and reaps all of them.
            self.proc = subprocess.Popen(
                [*in_netns, sys.executable, "-I", REAPER, "--rmtree-if-orphaned", self.tmp, *cmd],
                stdin=subprocess.DEVNULL,
                stdout=console,
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
        """Kill the guest (if still running) and remove its temp dir.  Idempotent."""
        try:
            self.kill()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def console(self) -> str:
        """The guest console (init messages, kernel warnings) so far."""
        return _read(Path(self.tmp, "console")) if self.tmp else ""

    def failure_notes(self, msg: str) -> str:
        """*msg* plus what the init and the console said, to explain a dead guest."""
        notes = _read(self.xfer / "init-error").strip()
        tail = "\n".join(ln for ln in self.console().splitlines()[-40:] if not _CONSOLE_NOISE.match(ln))
        return (
            f"[netlb-uml] {msg}\n"
            + (f"[netlb-uml] {notes}\n" if notes else "")
            + (f"[netlb-uml] console tail:\n{tail}\n" if tail.strip() else "")
        )


def run_in_uml(
    script: str,
    *,
    timeout: float = 900,
    mem: str = "1G",
    env: dict[str, str] | None = None,
    cwd: str = REPO_ROOT,
    stream: TextIO | None = None,
) -> UmlResult:
    """Boot a UML guest, run *script* with bash in *cwd*, return its result.

    *env* is added to the guest environment (PATH, HOME=/root, NETLB_IN_UML=1
    are set already).  If *stream* is given, the output is also echoed there
    live.  The UML process tree and the temp dir are removed in every case
    (timeout, exception, Ctrl-C, SIGTERM)."""
    guest = UmlGuest(script, mem=mem, env=env, cwd=cwd)
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
            msg = f"guest exited (linux.uml status {guest.proc.returncode}) without reporting an exit status"
        if msg:
            why = ("" if not output or output.endswith("\n") else "\n") + guest.failure_notes(msg)
            output += why
            if stream is not None:
                stream.write(why)
                stream.flush()
        return UmlResult(rc, output, boot, elapsed, guest.console())
    finally:
        guest.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the guest: the reaper SIGKILLs linux.uml's process group and reaps
    it; if the reaper does not finish in time, kill the whole tree ourselves."""
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
        prog="python -m tests.lab.uml",
        description="Run a shell script (bash, no -e) inside a user-mode-linux guest "
        "with VRF; exit with its status (124 timeout, 125 guest died).",
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--mem", default="1G")
    p.add_argument("--cwd", default=REPO_ROOT)
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("--no-stream", action="store_true", help="print the output only at the end")
    p.add_argument("--times", action="store_true", help="report boot/total time on stderr")
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- 'shell script'")
    a = p.parse_args(argv)
    words = a.script[1:] if a.script[:1] == ["--"] else a.script
    if not words:
        p.error("no script given")
    env = dict(kv.split("=", 1) for kv in a.env)
    try:
        res = run_in_uml(
            " ".join(words),
            timeout=a.timeout,
            mem=a.mem,
            env=env,
            cwd=a.cwd,
            stream=None if a.no_stream else sys.stdout,
        )
    except KeyboardInterrupt:
        print("\n[netlb-uml] interrupted; guest killed", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"[netlb-uml] {e}; guest killed", file=sys.stderr)
        return 128 + e.signum
    if a.no_stream:
        sys.stdout.write(res.output)
        sys.stdout.flush()
    if a.times:
        boot = f"{res.boot_seconds:.2f}" if res.boot_seconds is not None else "n/a"
        print(f"[netlb-uml] boot-to-script {boot} s, total {res.elapsed:.2f} s", file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
