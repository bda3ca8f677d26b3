"""tests/lab/_common.cleanup_on_signals: SIGTERM turns into Terminated once, so the
cleanup the first signal starts (a lab's namespaces, a fleet's guests) runs to its end
even when a second SIGTERM follows (`timeout` and a pkill, a CI runner and its job)."""
import subprocess
import sys
import textwrap
from pathlib import Path

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
