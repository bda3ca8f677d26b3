"""netlb.multiwan.vrf on a kernel without VRF.

The module must fail with a message saying so and what to do — not a
traceback — and leave the lab namespace exactly as it was. Shown on this
machine's kernel when it lacks VRF; where it has VRF, in a VM lab guest booted
with vrf blacklisted (tests/integration/novrf_scenario.py): never skipped, and one
guest boot saved where this kernel already proves it. The blacklisted-module
branch of vrf_support is unit-tested (tests/unit/test_vrf_support.py).
"""
import pytest

from tests.integration import novrf_scenario
from tests.integration.ansible_runner import run_cases
from tests.integration.guest import guest_facts
from tests.lab.netlab import Lab, Uplink, kernel_has_vrf

KERNELS = ([pytest.param("vm-vrf-blacklisted", marks=[pytest.mark.vm, pytest.mark.timeout(1200)])] if kernel_has_vrf()
           else [pytest.param("this-kernel", marks=pytest.mark.hostkernel)])


@pytest.fixture
def lab():
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="nlbvrf", server=False) as lab:
        yield lab


@pytest.fixture(params=KERNELS)
def no_vrf(request):
    if request.param == "this-kernel":
        return novrf_scenario.main()
    return guest_facts("tests.integration.novrf_scenario", novrf_scenario.RESULT_MARKER, timeout=900,
                       kernel_args=("module_blacklist=vrf",))


def test_kernel_without_vrf_fails_clearly_and_changes_nothing(no_vrf):
    assert no_vrf["kernel_has_vrf"] is False
    assert [run["check"] for run in no_vrf["runs"]] == [True, False]
    for run in no_vrf["runs"]:
        assert run["failed"] is True and run["changed"] is False, run
        assert "has no VRF support" in run["msg"], run
        assert "modprobe vrf" in run["msg"] and "fwmark" in run["msg"], run
        assert run["clean"] and not run["traceback_in_output"], run
        assert run["unchanged"], run


@pytest.mark.hostkernel
def test_validation_runs_before_the_kernel_check(lab):
    # Bad input is reported as such, whatever the kernel: the field comes first.
    run = run_cases([{"id": "bad", "args": {"name": "wifi-vrf", "table": 255, "netns": lab.client_netns}}])
    assert run["results"]["bad"]["msg"].startswith("table: 255 is the kernel's 'local' table")
