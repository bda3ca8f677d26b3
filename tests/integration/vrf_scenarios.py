"""The vrf module's scenarios, run in a network namespace of a VRF-capable kernel.

Executed by tests/integration/test_vrf.py in a namespace made for it
(guest.netns_facts), on this machine's kernel or inside a VM lab guest; the
tests assert on the facts printed here (one JSON document after RESULT_MARKER):
kernel snapshots between steps, module results, traffic.

The topology is the original write-up's laptop: usb0 carries the default route
in the main table; wlp1s0 goes into wifi-vrf (table 10) with its link route and
a default route via its gateway.
"""
from __future__ import annotations

import subprocess

from tests.integration.guest import report
from tests.integration.ansible_runner import run_cases, snapshot
from tests.lab.netlab import Lab, Uplink, stream_local_hosts

RESULT_MARKER = "NETLB-SCENARIO-RESULT "


def vrf_args(wifi: Uplink, **over) -> dict:
    args = {
        "name": "wifi-vrf",
        "table": 10,
        "interfaces": ["wlp1s0"],
        "routes": [{"dst": "default", "gateway": wifi.gateway}, {"dst": "default", "gateway": wifi.gateway6}],
    }
    args.update(over)
    return args


def invalid_cases(usb: Uplink, wifi: Uplink) -> list[dict]:
    """(id, args, expected field) — each must fail cleanly and change nothing."""
    cases = [
        ("bad_name", vrf_args(wifi, name="wifi;reboot"), "name"),
        ("long_name", vrf_args(wifi, name="a-very-long-vrf-name"), "name"),
        ("reserved_table", vrf_args(wifi, table=254), "table"),
        ("table_zero", vrf_args(wifi, table=0), "table"),
        ("table_of_other_vrf", vrf_args(wifi, table=20), "table"),
        ("other_vrf_table_change", vrf_args(wifi, name="other-vrf", table=21, interfaces=[], routes=[]), "table"),
        ("missing_interface", vrf_args(wifi, interfaces=["wlp1s0", "wwan0"]), "interfaces[1]"),
        ("unreachable_gateway", vrf_args(wifi, routes=[{"gateway": "203.0.113.99"}]), "routes[0].gateway"),
        ("bad_prefix", vrf_args(wifi, routes=[{"dst": "10.0.0.0/33", "gateway": wifi.gateway}]), "routes[0].dst"),
        ("missing_netns", vrf_args(wifi, netns="no-such-ns"), "netns"),
        ("not_a_vrf", vrf_args(wifi, name="usb0", interfaces=[]), "name"),
        ("lo_enslaved", vrf_args(wifi, interfaces=["lo"]), "interfaces[0]"),
        ("primary_uplink", vrf_args(wifi, interfaces=["wlp1s0", "usb0"]), "interfaces[1]"),
    ]
    result = [{"id": cid, "args": args, "field": field} for cid, args, field in cases]
    # The operator's SSH session arrives over wlp1s0: enslaving it would cut it off.
    result.append({
        "id": "ssh_session_interface",
        "args": vrf_args(wifi),
        "env": {"SSH_CONNECTION": "100.64.0.1 50022 %s 22" % wifi.address},
        "field": "interfaces",
    })
    return result


def traffic(lab: Lab, bind_dev: str | None) -> dict:
    """iperf3 source addresses, unbound (main table) or bound to a device."""
    extra = ["--bind-dev", bind_dev] if bind_dev else []
    try:
        result = lab.iperf3(parallel=2, seconds=1, extra=extra)
        return {"local_hosts": sorted(set(stream_local_hosts(result)))}
    except Exception as exc:  # recorded, asserted on by the host side
        return {"error": str(exc)}


def split(run: dict, **steps: list[str]) -> dict:
    """One playbook run of several steps' cases -> {step: the run with that step's results}."""
    return {step: {**run, "results": {cid: run["results"][cid] for cid in ids if cid in run["results"]}}
            for step, ids in steps.items()}


def main() -> dict:
    """Each ansible-playbook run costs half a minute in an emulated guest: steps that
    cannot disturb each other share one (the namespace scenario rides along with the
    main one; absent's second run with the invalid cases, which must change nothing)."""
    facts: dict = {}
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="lab", client_netns=None) as lab, \
            Lab([Uplink("eth0"), Uplink("eth1")], name="ns", client_netns="auto", server=False) as ns_lab:
        usb, wifi = lab.uplinks
        facts["uplinks"] = {"usb0": usb.address, "wlp1s0": wifi.address,
                            "wlp1s0_gateway": wifi.gateway, "wlp1s0_gateway6": wifi.gateway6}
        create = {"id": "create", "args": vrf_args(wifi)}
        absent = {"id": "absent", "args": {"name": "wifi-vrf", "state": "absent"}}
        # The netns option: the same module acting inside a named namespace.
        ns, isp = ns_lab.client_netns, ns_lab.uplinks[1]
        ns_args = {"name": "isp-vrf", "table": 30, "interfaces": ["eth1"], "netns": ns,
                   "routes": [{"gateway": isp.gateway}]}
        ns_create = {"id": "ns_create", "args": ns_args}
        ns_absent = {"id": "ns_absent", "args": {"name": "isp-vrf", "netns": ns, "state": "absent"}}

        facts["blank"] = snapshot()
        facts["ns_blank"] = snapshot(ns)
        facts["check_create"] = run_cases([create], check=True, diff=True)
        facts["after_check_create"] = snapshot()

        facts.update(split(run_cases([create, ns_create], diff=True), create=["create"], ns_create=["ns_create"]))
        facts["created"] = snapshot()
        facts["ns_created"] = snapshot(ns)
        facts["ns_root_untouched"] = "isp-vrf" not in subprocess.run(
            ["ip", "link", "show"], capture_output=True, text=True).stdout
        facts["traffic_main"] = traffic(lab, None)
        facts["traffic_vrf"] = traffic(lab, "wifi-vrf")
        facts.update(split(run_cases([create, ns_create], diff=True), create_again=["create"], ns_again=["ns_create"]))
        facts["after_create_again"] = snapshot()

        facts["check_absent"] = run_cases([absent], check=True, diff=True)
        facts["after_check_absent"] = snapshot()
        facts.update(split(run_cases([absent, ns_absent], diff=True), absent=["absent"], ns_absent=["ns_absent"]))
        facts["after_absent"] = snapshot()
        facts["ns_after_absent"] = snapshot(ns)

        # Invalid input, next to a VRF the module does not manage; with absent's second run.
        subprocess.run(["ip", "link", "add", "other-vrf", "type", "vrf", "table", "20"], check=True)
        cases = invalid_cases(usb, wifi)
        facts["invalid_expected"] = {c["id"]: c["field"] for c in cases}
        facts["before_invalid"] = snapshot()
        again = {**absent, "id": "absent_again"}
        run = run_cases([again] + [{k: v for k, v in c.items() if k != "field"} for c in cases])
        facts.update(split(run, absent_again=["absent_again"], invalid=[c["id"] for c in cases]))
        facts["after_invalid"] = snapshot()
        subprocess.run(["ip", "link", "del", "other-vrf"], check=True)
    return facts


if __name__ == "__main__":
    report(main, RESULT_MARKER)
