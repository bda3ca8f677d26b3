"""Run a command as a child sub-reaper so that its whole process tree can be
killed *and reaped* (no zombies left for pgrep to see).

Usage: python _reaper.py [--rmtree-if-orphaned DIR] CMD [ARGS...]
(run by path: imports nothing local)

linux.uml forks helper processes; if linux.uml is killed they are reparented to
the system's PID 1, which may reap them late or never (containers).  Here they
are reparented to this process instead, which waits for all of them.

- The command runs in its own process group.
- SIGTERM/SIGINT/SIGHUP, or the death of our parent (PR_SET_PDEATHSIG, so even a
  SIGKILLed test runner cleans up), SIGKILL that whole group.
- Exits once no descendant is left, with the command's status (128+signal if
  it was killed).  If our parent died meanwhile, it can no longer remove its
  temp dir: --rmtree-if-orphaned DIR does it for it.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    orphan_dir = None
    if argv[:1] == ["--rmtree-if-orphaned"] and len(argv) >= 2:
        orphan_dir, argv = argv[1], argv[2:]
    if not argv:
        print("usage: _reaper.py [--rmtree-if-orphaned DIR] CMD [ARGS...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("_reaper: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 2
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

    child = 0

    def kill_group(_signum: int = 0, _frame: object = None) -> None:
        if child:
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, kill_group)
    if os.getppid() != parent:  # parent died before PDEATHSIG was armed
        return 1

    # Block the signals across fork so the handler cannot run before `child` is set.
    blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, 0)
            # A guest kernel panic aborts linux.uml: no core files anywhere.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
            for s in blocked:
                signal.signal(s, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    try:
        os.setpgid(child, child)  # also here, to close the race with the child
    except OSError:
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    status = 0
    while True:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            break  # no descendant left (orphans are ours to reap too)
        except InterruptedError:
            continue
        if pid == child:
            status = os.waitstatus_to_exitcode(st)
            # Helpers left behind by the command: kill them, keep reaping.
            kill_group()
    if orphan_dir and os.getppid() != parent:
        shutil.rmtree(orphan_dir, ignore_errors=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
