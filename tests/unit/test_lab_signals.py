"""tests/lab/_common.cleanup_on_signals: SIGTERM turns into Terminated once, so the
cleanup the first signal starts (a lab's namespaces, a fleet's guests) runs to its end
even when a second SIGTERM follows (`timeout` and a pkill, a CI runner and its job)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from tests.lab._common import Terminated, cleanup_on_signals
    with cleanup_on_signals():  # as a Lab or a Fleet: the cleanup runs inside it
        try:
            print("ready", flush=True)
            time.sleep(30)
        except Terminated:
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, in the middle of the cleanup
            time.sleep(0.2)
            print("cleaned up", flush=True)
    print("default again", signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)
""")


def test_a_second_sigterm_does_not_interrupt_the_cleanup():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.terminate()
    out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert out.split("\n")[:2] == ["cleaned up", "default again True"], out


# -- ownership of a lab's names: a killed run's leftovers are removed by the next run
def test_a_dead_owner_leaves_its_names_to_the_next_run(tmp_path, monkeypatch):
    from tests.lab import _common

    monkeypatch.setattr(_common, "OWNERS_DIR", str(tmp_path))
    (tmp_path / "fleet-x").write_text("999999999 1\n")  # no such process
    assert _common.claim("fleet-x") is True
    assert _common.claim("fleet-x") is False  # ours now
    _common.release("fleet-x")
    assert not (tmp_path / "fleet-x").exists()
    assert _common.claim("fleet-x") is False  # nobody's


def test_a_live_owner_keeps_its_names(tmp_path, monkeypatch):
    from tests.lab import _common

    monkeypatch.setattr(_common, "OWNERS_DIR", str(tmp_path))
    live = "%d %s\n" % (os.getppid(), _common._start_time(os.getppid()))
    (tmp_path / "lab-y").write_text(live)
    with pytest.raises(_common.InUse, match="lab-y is in use by the live process %d" % os.getppid()):
        _common.claim("lab-y")
    _common.release("lab-y")  # not ours: kept
    assert (tmp_path / "lab-y").read_text() == live
    # A reused pid is another process: its start time differs.
    (tmp_path / "lab-y").write_text("%d 1\n" % os.getppid())
    assert _common.claim("lab-y") is True
