"""Make `ansible_collections.netlb.multiwan` importable from this checkout.

The Makefile links .build/collections/ansible_collections/netlb/multiwan to the
repository root (what ansible-test and ansible-playbook also use); pytest runs
without the Makefile too, so the link is made here when missing.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "netlb", "multiwan")

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(os.path.relpath(ROOT, os.path.dirname(LINK)), LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With NETLB_NO_SKIP=1 (make test, CI) a skipped test is a failed test."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("NETLB_NO_SKIP") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = "skipped, but NETLB_NO_SKIP=1 forbids skips: %s" % reason
    if report.failed:
        record_failure(report)


def record_failure(report):
    """make test's part table names the tests that failed or timed out
    (scripts/timed.sh gives each part a file in NETLB_FAILED_TESTS)."""
    path = os.environ.get("NETLB_FAILED_TESTS")
    if not path:
        return
    how = "timed out" if "Timeout (>" in str(report.longrepr) else "failed"
    if report.when != "call":
        how += " in " + report.when
    context = os.environ.get("NETLB_TEST_CONTEXT")  # e.g. make compat's "ansible-core 2.15"
    with open(path, "a") as out:
        out.write("%s%s\t%s\n" % (context + ": " if context else "", report.nodeid, how))


def pytest_collection_modifyitems(config, items):
    """Tests marked needs_vrf are deselected (not skipped) on a kernel without VRF:
    test_vrf_in_vm.py runs them in a VM lab guest instead."""
    from tests.lab.netlab import kernel_has_vrf

    if kernel_has_vrf():
        return
    deselected = [item for item in items if item.get_closest_marker("needs_vrf")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("needs_vrf")]
