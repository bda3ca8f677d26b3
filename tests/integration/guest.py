"""Scenario drivers that run inside a UML guest and report one JSON line.

Guest side: ``report(main, marker)`` runs ``main()`` and prints its facts (or
the traceback) after ``marker``. Host side: ``guest_facts(module, marker)``
boots a guest, runs ``python -m module`` there and returns the facts, so the
pytest tests only assert.
"""
from __future__ import annotations

import json
import sys
import traceback

import pytest

from tests.lab.uml import run_in_uml, uml_kernel


def report(main, marker: str) -> None:
    try:
        facts = main()
    except Exception:
        facts = {"driver_error": traceback.format_exc()}
    print(marker + json.dumps(facts), flush=True)
    sys.exit(1 if "driver_error" in facts else 0)


def guest_facts(module: str, marker: str, timeout: float, env: dict | None = None) -> dict:
    if uml_kernel() is None:
        pytest.skip("user-mode-linux kernel (linux.uml) not installed: run `make deps`")
    result = run_in_uml(".venv/bin/python -m " + module, timeout=timeout, env=env)
    lines = [ln for ln in result.output.splitlines() if ln.startswith(marker)]
    assert lines, "guest gave no result (rc %s):\n%s" % (result.returncode, result.output[-5000:])
    data = json.loads(lines[-1][len(marker):])
    assert "driver_error" not in data, data.get("driver_error")
    return data


def assert_same(before: dict, after: dict) -> None:
    """Kernel snapshots must be identical, key by key (readable failure)."""
    for key in before:
        assert before[key] == after[key], "`%s` changed:\n--- before\n%s\n--- after\n%s" % (
            key, before[key], after[key])
