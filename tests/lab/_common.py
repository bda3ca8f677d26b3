"""Small helpers shared by the lab modules."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP so that ``finally`` blocks and
    ``__exit__`` clean up (the default action would kill us without cleanup)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def stop_group(proc: subprocess.Popen[str], grace: float = 30) -> None:
    """SIGTERM *proc* (the labs, guests and containers it made take themselves down),
    then SIGKILL its process group (it runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_and_clean_up(argv: list[str], timeout: float, grace: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    """subprocess.run for a child that makes labs, guests or containers: on a timeout
    or when we are interrupted (pytest-timeout, Ctrl-C), stop_group gives it SIGTERM and
    *grace* seconds to remove what it made, instead of SIGKILL. Output captured (text)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)  # type: ignore[call-overload]
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_group(proc, grace)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into a `Terminated` exception for the duration.

    Ctrl-C already raises KeyboardInterrupt.  Only possible from the main thread;
    elsewhere this is a no-op (pytest-xdist workers etc. still get Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, _frame: object) -> None:
        # Once: a second signal (`timeout` and a pkill both sending one) would raise again
        # inside the cleanup the first one started, and leave a namespace or a guest behind.
        for s in old:
            if signal.getsignal(s) is raise_terminated:
                signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Keep a handler that is already non-default (e.g. installed by a caller).
    for s, h in old.items():
        if h in (signal.SIG_DFL, None):
            signal.signal(s, raise_terminated)
    try:
        yield
    finally:
        for s, h in old.items():
            if h in (signal.SIG_DFL, None):
                signal.signal(s, signal.SIG_DFL)


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces/parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(root: int) -> set[int]:
    """PIDs of all live descendants of *root* (not including root)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    out: set[int] = set()
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def pids_in_group(pgid: int) -> set[int]:
    out = set()
    for pid in _all_pids():
        st = _proc_stat(pid)
        if st and st[1] == pgid:
            out.add(pid)
    return out


def kill_tree(pid: int, pgid: int | None = None, timeout: float = 5.0) -> bool:
    """SIGKILL a process, all its descendants and its process group; wait until
    they are gone.  Returns True if nothing is left.  *pid* must not have been
    reaped yet (else its number could have been reused).

    Descendants are collected before the kill because killed parents orphan
    their children (which then get reparented and become hard to find)."""
    victims = descendants(pid) | {pid}
    if pgid is not None:
        victims |= pids_in_group(pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for v in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(v, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        # Zombies count as gone; the caller reaps its child afterwards (until
        # then the pid cannot be reused, so re-killing it is safe).
        alive = {v for v in victims if _alive(v)}
        if pgid is not None:
            alive |= {p for p in pids_in_group(pgid) if _alive(p)}
        if not alive:
            return True
        if time.monotonic() > deadline:
            return False
        for v in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(v, signal.SIGKILL)
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :][:1] not in (b"Z", b"X")


def exited(pid: int) -> bool:
    """True if our child *pid* has exited, without reaping it (WNOWAIT)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


# -- who owns a lab's names --------------------------------------------------
# A run killed without cleanup (SIGKILL, a session or CI job stopped) leaves its
# namespaces, containers and guests behind, and the next run that uses the same
# names would refuse to start. Each run records itself as the owner of the names
# it uses; a later run that finds the owner dead removes the leftovers itself,
# one that finds it alive refuses (two runs at once on one machine).
OWNERS_DIR = "/run/netlb-lab-owners"


class InUse(RuntimeError):
    pass


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): a pid plus this
    names one process, even once the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def claim(name: str) -> bool:
    """Record this process as the owner of the lab resources called *name*.

    True when a previous owner died without releasing them: its leftovers are the
    caller's to remove. InUse when another live process owns them."""
    os.makedirs(OWNERS_DIR, mode=0o755, exist_ok=True)
    path = os.path.join(OWNERS_DIR, name)
    me = "%d %s\n" % (os.getpid(), _start_time(os.getpid()))
    stale = False
    try:
        with open(path) as f:
            owner = f.read()
    except FileNotFoundError:
        pass
    else:
        if owner != me:
            fields = owner.split()
            if len(fields) == 2 and fields[0].isdigit() and _start_time(int(fields[0])) == fields[1]:
                raise InUse(f"{name} is in use by the live process {fields[0]} (another test run?)")
            stale = True
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(me)
    os.replace(tmp, path)
    return stale


def release(name: str) -> None:
    """Give up the ownership claim() recorded (only this process's own)."""
    path = os.path.join(OWNERS_DIR, name)
    with contextlib.suppress(FileNotFoundError):
        with open(path) as f:
            if f.read() != "%d %s\n" % (os.getpid(), _start_time(os.getpid())):
                return
        os.unlink(path)
