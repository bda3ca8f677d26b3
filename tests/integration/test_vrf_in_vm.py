"""The VRF tests under pytest inside a VM lab guest (Debian's kernel under QEMU, with VRF).

test_vrf.py (the vrf module) and test_bpf_vrf.py (VRF steering, DNS through
127.0.0.53) run their scenarios in a network namespace of whatever kernel runs
them, and are deselected on a kernel without VRF (mark needs_vrf). Here both run
in one guest, whose kernel has VRF, so that very path is exercised on every
machine: the guest's pytest must run each of their tests, and all must pass
(NETLB_NO_SKIP=1 there too).
"""
import inspect
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from tests.integration import test_bpf_vrf, test_vrf
from tests.lab.vm import run_in_vm, vm_available

# pytest inside an emulated guest (~18 min measured; its own limit is 2400 s).
pytestmark = [pytest.mark.vm, pytest.mark.timeout(2700)]

MODULES = [test_vrf, test_bpf_vrf]


def expected_tests() -> Counter:
    """module.test name -> number of cases, for every needs_vrf module."""
    tests = Counter()
    for module in MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("test_"):
                cases = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
                tests["%s.%s" % (module.__name__.rsplit(".", 1)[1], name)] = len(cases[0].args[1]) if cases else 1
    return tests


def test_vrf_tests_pass_in_a_namespace_of_a_vm_guest_kernel():
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    paths = " ".join("tests/integration/%s.py" % m.__name__.rsplit(".", 1)[1] for m in MODULES)
    with tempfile.TemporaryDirectory(prefix="netlb-vrf-junit-") as share:
        junit = Path(share, "junit.xml")
        # Python runs 15-25x slower in the guest: each test's limit scaled to match (the
        # first test of a scenario pays its module fixture's playbook runs).
        result = run_in_vm(".venv/bin/python -m pytest -q -p no:cacheprovider --timeout=1800 --durations=3 "
                           "--junitxml=%s %s" % (junit, paths), env={"NETLB_NO_SKIP": "1"}, shares=(share,),
                           timeout=2400)
        assert junit.exists(), result.output[-5000:]
        outcomes = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            bad = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            name = "%s.%s" % (case.get("classname").rsplit(".", 1)[1], case.get("name"))
            outcomes[name] = bad[0] if bad else "passed"
    report = "\n".join("%s %s" % (v, k) for k, v in sorted(outcomes.items())) + "\n" + result.output[-5000:]
    print(result.output[-3000:])  # the guest's pytest summary and its slowest set-ups, for the log
    assert result.returncode == 0, report
    assert Counter(name.split("[", 1)[0] for name in outcomes) == expected_tests(), report
    assert set(outcomes.values()) == {"passed"}, report
