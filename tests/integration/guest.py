"""Scenario drivers that run inside a VM lab guest (or a throw-away network
namespace of this kernel) and report one JSON line.

Driver side: ``report(main, marker)`` runs ``main()`` and prints its facts (or
the traceback) after ``marker``. Test side: ``guest_facts(module, marker)``
boots a guest, runs ``python -m module`` there and returns the facts;
``netns_facts`` does the same in a namespace made for it; the pytest tests only
assert.
"""
from __future__ import annotations

import json
import sys
import traceback

import pytest

from tests.integration.ansible_runner import ROOT
from tests.lab.netlab import run_in_netns
from tests.lab.vm import run_in_vm, vm_available


def report(main, marker: str) -> None:
    try:
        facts = main()
    except Exception:
        facts = {"driver_error": traceback.format_exc()}
    print(marker + json.dumps(facts), flush=True)
    sys.exit(1 if "driver_error" in facts else 0)


def guest_facts(module: str, marker: str, timeout: float, env: dict | None = None,
                shares: tuple[str, ...] = (), kernel_args: tuple[str, ...] = (), kernel_series: str = "6.1") -> dict:
    """*shares*: host directories the guest may write to (at the same path);
    *kernel_args*: for the guest kernel's command line; *kernel_series*: the guest's
    Debian kernel (tests/lab/vmkernel.SERIES)."""
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    result = run_in_vm(".venv/bin/python -m " + module, timeout=timeout, env=env, shares=shares,
                       kernel_args=kernel_args, kernel_series=kernel_series)
    return _facts(result.output, result.returncode, marker)


def netns_facts(module: str, marker: str, timeout: float) -> dict:
    """Run ``python -m module`` on this kernel in a network namespace made for it
    (tests/lab/netlab.run_in_netns), and return its facts."""
    proc = run_in_netns([sys.executable, "-m", module], timeout=timeout, cwd=str(ROOT))
    return _facts(proc.stdout + proc.stderr, proc.returncode, marker)


def _facts(output: str, returncode: int, marker: str) -> dict:
    lines = [ln for ln in output.splitlines() if ln.startswith(marker)]
    assert lines, "the scenario gave no result (rc %s):\n%s" % (returncode, output[-5000:])
    data = json.loads(lines[-1][len(marker):])
    assert "driver_error" not in data, data.get("driver_error")
    return data


def assert_same(before: dict, after: dict) -> None:
    """Kernel snapshots must be identical, key by key (readable failure)."""
    for key in before:
        assert before[key] == after[key], "`%s` changed:\n--- before\n%s\n--- after\n%s" % (
            key, before[key], after[key])
