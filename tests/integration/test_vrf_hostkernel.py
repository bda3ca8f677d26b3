"""netlb.multiwan.vrf on this machine's own kernel, which has no VRF.

The module must fail with a message saying so and what to do — not a
traceback — and leave the lab namespace exactly as it was.
"""
import pytest

from tests.integration.ansible_runner import failed_cleanly, run_cases, snapshot
from tests.lab.netlab import Lab, Uplink, kernel_has_vrf

pytestmark = pytest.mark.hostkernel


@pytest.fixture
def lab():
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="nlbvrf", server=False) as lab:
        yield lab


def test_kernel_without_vrf_fails_clearly_and_changes_nothing(lab):
    if kernel_has_vrf():
        pytest.skip("this kernel has VRF support; the no-VRF message cannot be shown here")
    wifi = lab.uplinks[1]
    args = {"name": "wifi-vrf", "table": 10, "interfaces": ["wlp1s0"], "netns": lab.client_netns,
            "routes": [{"gateway": wifi.gateway}]}
    before = snapshot(lab.client_netns)
    for check in (True, False):
        run = run_cases([{"id": "create", "args": args}], check=check)
        result = run["results"]["create"]
        assert result["failed"] is True and result["changed"] is False
        assert "has no VRF support" in result["msg"]
        assert "modprobe vrf" in result["msg"] and "fwmark" in result["msg"]
        assert failed_cleanly(result) and "Traceback" not in run["output"]
        assert snapshot(lab.client_netns) == before


def test_validation_runs_before_the_kernel_check(lab):
    # Bad input is reported as such, whatever the kernel: the field comes first.
    run = run_cases([{"id": "bad", "args": {"name": "wifi-vrf", "table": 255, "netns": lab.client_netns}}])
    assert run["results"]["bad"]["msg"].startswith("table: 255 is the kernel's 'local' table")
