"""balancer_steering: device - balancing with no routing change, on this machine's kernel (no VRF).

One systemd container plays a laptop the way NetworkManager leaves one: usb0 (40 Mbit/s)
and wlp1s0 (20 Mbit/s) each with a default route of its own, metrics 0 and 600. The role
binds each new socket of the balanced cgroup to an uplink's own interface, so the kernel
uses that interface's default route: no VRF, no table, no rule. In order: a blank-host
snapshot, site.yml, the same snapshot (links, routes, rules byte-identical), iperf3 -P10
from the cgroup, a second run (nothing changes), an uplink with no default route (the run
fails before any change, naming it), absent (the blank host again).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from tests.integration.ansible_runner import site_over_ssh
from tests.integration.test_role_containers import SNAPSHOT, assert_same
from tests.integration.laptop import device_laptop_vars, laptop
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import GUEST_CGROUP2, in_cgroup
from tests.lab.netlab import SERVER4, received_mbps, stream_local_hosts

# The first test pays the module fixture: the site.yml runs and traffic.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CGROUP = "multiwan"
ROUTING = dict((key, SNAPSHOT[key]) for key in ("link", "route4", "route6", "rule4", "rule6"))
PROGS = "bpftool cgroup tree %s | grep -E '^/|mw_' || true" % GUEST_CGROUP2
IPERF_CGROUP = in_cgroup(CGROUP, "iperf3 -c %s -P10 -t3 -J" % SERVER4)


@pytest.fixture(scope="module")
def facts():
    with laptop(ContainerFleet, containers_available, "nlbdev") as (tmp, fleet, guest):
        usb, wifi = guest.uplinks
        lab = fleet.lab(guest)
        # NetworkManager's way: every connected uplink has its default route, the preferred one first.
        lab.client_exec(["ip", "route", "add", "default", "via", wifi.gateway, "dev", "wlp1s0", "metric", "600"])
        lab.client_exec(["ip", "-6", "route", "add", "default", "via", wifi.gateway6, "dev", "wlp1s0",
                         "metric", "600"])
        host = device_laptop_vars(tmp, fleet, guest)
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host}}}))
        # An uplink with no default route (the management NIC has only its link route).
        unrouted = json.loads(inventory.read_text())
        unrouted["multiwan"]["hosts"]["laptop"]["balancer_uplinks"].append({"name": "lte", "interface": "mgmt0"})
        unrouted_inventory = Path(tmp, "unrouted.json")
        unrouted_inventory.write_text(json.dumps(unrouted))

        def ssh(command: str) -> str:
            return "".join(getattr(fleet.ssh(guest, command), stream) for stream in ("stdout", "stderr"))

        def snapshot() -> dict:
            return dict((key, ssh(ROUTING[key])) for key in ROUTING)

        f: dict = {"addresses": {"usb0": usb.address, "wlp1s0": wifi.address}}
        f["blank"] = snapshot()
        f["run1"] = site_over_ssh(fleet, inventory)
        f["applied"] = snapshot()
        f["progs"] = ssh(PROGS)
        iperf = fleet.ssh(guest, IPERF_CGROUP)
        f["iperf"] = json.loads(iperf.stdout) if iperf.returncode == 0 else {"error": iperf.stdout + iperf.stderr}
        f["run2"] = site_over_ssh(fleet, inventory)
        f["status"] = ssh("netlb-multiwan-status; echo rc=$?")
        f["journal"] = ssh("journalctl -b --no-pager -u 'netlb-multiwan-*' | tail -40")
        f["health"] = ssh("cat /run/netlb-multiwan/health.json")
        f["unrouted"] = site_over_ssh(fleet, unrouted_inventory)
        f["after_unrouted"] = snapshot()
        f["progs_after_unrouted"] = ssh(PROGS)
        f["absent"] = site_over_ssh(fleet, inventory, "-e", "balancer_state=absent")
        f["after_absent"] = snapshot()
        f["progs_after_absent"] = ssh(PROGS)
    return f


def test_provisioning_changes_no_link_route_or_rule(facts):
    assert facts["run1"]["rc"] == 0, facts["run1"]["output"][-4000:]
    assert_same(facts["blank"], facts["applied"])
    assert "mw_connect4" in facts["progs"] and "mw_sendmsg4" not in facts["progs"], facts["progs"]


def test_iperf_from_the_cgroup_uses_both_uplinks_at_the_links_rate(facts):
    result = facts["iperf"]
    assert "error" not in result, result
    hosts = collections.Counter(stream_local_hosts(result))
    assert set(hosts) == set(facts["addresses"].values()), hosts
    # Aggregation: one link alone tops out at 40 of the 60 Mbit/s.
    assert received_mbps(result) >= 0.90 * 60, "received %.1f Mbit/s" % received_mbps(result)


def test_second_run_changes_nothing_and_status_sees_no_problem(facts):
    assert facts["run2"]["rc"] == 0 and facts["run2"]["changed"] == 0, facts["run2"]["output"][-3000:] + facts["journal"]
    assert "problems: none" in facts["status"] and "rc=0" in facts["status"], facts["status"]
    assert "device wlp1s0 (main routes)" in facts["status"], facts["status"]


def test_the_tracker_probes_the_gateways_the_inventory_does_not_name(facts):
    """Device steering needs no gateway in the inventory: the tracker takes the one of
    each uplink's default route."""
    health = json.loads(facts["health"])["uplinks"]
    assert {name: h["state"] for name, h in health.items()} == {"mobile": "up", "wifi": "up"}, facts["journal"]


def test_an_uplink_without_a_default_route_fails_before_any_change(facts):
    run = facts["unrouted"]
    assert run["rc"] != 0
    assert "no default route goes via mgmt0" in run["output"], run["output"][-4000:]
    assert_same(facts["applied"], facts["after_unrouted"])
    assert facts["progs_after_unrouted"] == facts["progs"]


def test_absent_leaves_the_blank_host(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"][-4000:]
    assert_same(facts["blank"], facts["after_absent"])
    assert "mw_" not in facts["progs_after_absent"], facts["progs_after_absent"]
