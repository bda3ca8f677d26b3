"""netlb.multiwan.vrf on a kernel without VRF: the facts test_vrf_hostkernel.py asserts on.

Runs on this machine when its kernel lacks VRF, and inside a VM lab guest booted
with ``module_blacklist=vrf`` everywhere, so the case never depends on the host.
"""
from __future__ import annotations

from tests.integration.ansible_runner import failed_cleanly, run_cases, snapshot
from tests.integration.guest import report
from tests.lab.netlab import Lab, Uplink, kernel_has_vrf

RESULT_MARKER = "NETLB-NOVRF-RESULT "


def main() -> dict:
    facts: dict = {"kernel_has_vrf": kernel_has_vrf(), "runs": []}
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="nlbvrf", server=False) as lab:
        wifi = lab.uplinks[1]
        args = {"name": "wifi-vrf", "table": 10, "interfaces": ["wlp1s0"], "netns": lab.client_netns,
                "routes": [{"gateway": wifi.gateway}]}
        before = snapshot(lab.client_netns)
        for check in (True, False):
            run = run_cases([{"id": "create", "args": args}], check=check)
            result = run["results"]["create"]
            facts["runs"].append({
                "check": check, "failed": result.get("failed"), "changed": result.get("changed"),
                "msg": result.get("msg", ""), "clean": failed_cleanly(result),
                "traceback_in_output": "Traceback" in run["output"],
                "unchanged": snapshot(lab.client_netns) == before,
            })
    return facts


if __name__ == "__main__":
    report(main, RESULT_MARKER)
