"""The role with balancer_persist: false, on a blank host under a live systemd.

Without persistence nothing brings the balancer back at boot, but the host is balanced
until then: the state document is written (the maps, the CLI, status and the tracker
read it), the tracker and the slice run from runtime units (/run/systemd/system) and
no unit is enabled. One systemd container plays the laptop with fwmark steering
(tests/integration/laptop.py); the controller runs on this machine over SSH. In order:
a run on the blank host, traffic from the cgroup and the slice, a second run that
changes nothing, a run without the slice (its attachment detached and unpinned), absent,
and the host is as blank as before.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import fwmark_laptop_vars, laptop
from tests.integration.test_role_containers import IPERF_CGROUP, IPERF_SLICE, SNAPSHOT, assert_same
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.netlab import iperf_local_hosts

# The first test pays the module fixture: three site.yml runs and traffic.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

UNITS = {**SNAPSHOT, "runtime_units": "ls /run/systemd/system | grep -E 'netlb|multiwan' || true"}


@pytest.fixture(scope="module")
def facts():
    with laptop(ContainerFleet, containers_available, "nlbnopers") as (tmp, fleet, guest):
        usb, wifi = guest.uplinks
        host = {**fwmark_laptop_vars(tmp, fleet, guest), "balancer_persist": False}
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host}}}))

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def snapshot() -> dict:
            return {key: ssh(command) for key, command in UNITS.items()}

        f: dict = {"addresses": {usb.address, wifi.address}}
        f["blank"] = snapshot()
        f["run1"] = site_over_ssh(fleet, inventory)
        f["applied"] = snapshot()
        f["enabled"] = ssh("ls /etc/systemd/system/*.wants /etc/systemd/system/*/ 2>/dev/null | grep -i netlb || true")
        f["active"] = ssh("systemctl is-active netlb-multiwan-track.service multiwan.slice")
        f["document"] = ssh("python3 -c 'import json; print(json.load(open(\"/etc/netlb-multiwan/balancer.json\"))[\"steering\"])'")
        f["iperf_cgroup"] = iperf_local_hosts(fleet.ssh(guest, IPERF_CGROUP))
        f["iperf_slice"] = iperf_local_hosts(fleet.ssh(guest, IPERF_SLICE))
        f["run2"] = site_over_ssh(fleet, inventory)
        status = fleet.ssh(guest, "netlb-multiwan-status")
        f["status"] = {"rc": status.returncode, "text": status.stdout + status.stderr}
        # The slice taken out of the inventory: its attachment is detached and unpinned.
        f["no_slice"] = site_over_ssh(fleet, inventory, "-e", "balancer_slice=")
        f["pins_no_slice"] = ssh("ls /sys/fs/bpf")
        f["progs_no_slice"] = ssh(UNITS["cgroup_progs"])
        f["absent"] = site_over_ssh(fleet, inventory, "-e", "balancer_state=absent")
        f["after_absent"] = snapshot()
    return f


def test_the_run_provisions_a_blank_host(facts):
    assert facts["run1"]["rc"] == 0 and facts["run1"]["changed"] > 0, facts["run1"]["output"]
    assert "fwmark 0x100 lookup 100" in facts["applied"]["rule4"], facts["applied"]["rule4"]
    assert "connect4" in facts["applied"]["cgroup_progs"], facts["applied"]["cgroup_progs"]
    assert facts["document"].strip() == "fwmark", facts["document"]


def test_only_runtime_units_nothing_enabled_for_the_next_boot(facts):
    assert facts["applied"]["units"].strip() == "", facts["applied"]["units"]
    assert facts["enabled"].strip() == "", facts["enabled"]
    assert facts["applied"]["runtime_units"].split() == ["multiwan.slice", "netlb-multiwan-track.service"], \
        facts["applied"]["runtime_units"]
    assert facts["active"].split() == ["active", "active"], facts["active"]


def test_traffic_from_the_cgroup_and_the_slice_uses_both_uplinks(facts):
    assert set(facts["iperf_cgroup"]) == facts["addresses"], facts["iperf_cgroup"]
    assert set(facts["iperf_slice"]) == facts["addresses"], facts["iperf_slice"]


def test_second_run_changes_nothing_and_status_has_no_problems(facts):
    assert facts["run2"]["rc"] == 0 and facts["run2"]["changed"] == 0, facts["run2"]["output"]
    assert facts["status"]["rc"] == 0 and "problems: none" in facts["status"]["text"], facts["status"]["text"]


def test_a_slice_taken_out_of_the_inventory_keeps_no_program(facts):
    assert facts["no_slice"]["rc"] == 0 and facts["no_slice"]["changed"] > 0, facts["no_slice"]["output"]
    assert [p for p in facts["pins_no_slice"].split() if p.startswith("netlb")] == ["netlb_multiwan"], \
        facts["pins_no_slice"]
    assert "multiwan.slice" not in facts["progs_no_slice"] and "connect4" in facts["progs_no_slice"], \
        facts["progs_no_slice"]


def test_absent_restores_the_blank_host(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"]
    assert_same(facts["blank"], facts["after_absent"])
