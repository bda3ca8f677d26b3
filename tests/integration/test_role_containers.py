"""playbooks/site.yml (role netlb.multiwan.balancer) on a blank host under a live systemd.

One systemd container (tests/lab/containers.py: Debian 12, systemd as PID 1, no clang,
this machine's kernel) plays the original laptop with fwmark steering: usb0 (main
table, 40 Mbit/s) and wlp1s0 (table 100, mark 0x100, 20 Mbit/s). The controller runs on
this machine over SSH. In order: check + diff on the blank host, a real run, iperf3 from
the balanced cgroup and from the systemd slice, a second run, an invalid inventory,
balancer_state=absent, then provisioning again and a container restart: systemd boots
again and the role's units must bring balancing back with no Ansible run.

VRF steering with the same role runs in the VM lab (test_role_vm.py).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.integration import udp_probe
from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import fwmark_laptop_vars, laptop
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import GUEST_CGROUP2, in_cgroup
from tests.lab.netlab import SERVER4, iperf_local_hosts

# The first test pays the module fixture: six site.yml runs, traffic and a container restart.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CGROUP = "multiwan"
SNAPSHOT = {
    "link": "ip -d link show",
    "addr": "ip addr show",
    "route4": "ip route show table all",
    "route6": "ip -6 route show table all",
    "rule4": "ip rule show",
    "rule6": "ip -6 rule show",
    "cgroups": "find %s -mindepth 1 -maxdepth 1 -type d -name 'multiwan*' | sort" % GUEST_CGROUP2,
    # Our programs only: systemd's own (sd_fw_*) get new ids whenever it restarts a unit.
    "cgroup_progs": "bpftool cgroup tree %s | grep -E '^/|mw_' || true" % GUEST_CGROUP2,
    "pins": "find /sys/fs/bpf -mindepth 1 | sort",
    "units": "ls /etc/systemd/system | grep -i netlb || true",
}
IPERF_CGROUP = in_cgroup(CGROUP, "iperf3 -c %s -P10 -t2 -J" % SERVER4)
IPERF_SLICE = "systemd-run --slice=multiwan --wait --pipe --quiet iperf3 -c %s -P10 -t2 -J" % SERVER4
UDP_SOCKETS, UDP_DATAGRAMS, UDP_PORT = 100, 3, 9999


def unconnected_udp(fleet, guest) -> dict:
    """Unconnected UDP sockets from the balanced cgroup (the probe copied into the
    container); received in the lab's internet namespace on this machine."""
    script = Path(udp_probe.__file__).read_text()
    fleet.exec(guest, ["sh", "-c", "cat > /root/udp_probe.py"], input=script)
    lab = fleet.lab(guest)
    server = lab._in(lab.inet_netns, udp_probe.serve_argv(sys.executable, udp_probe.__file__, port=UDP_PORT,
                                                          expect=UDP_SOCKETS * UDP_DATAGRAMS))
    send = in_cgroup(CGROUP, udp_probe.send_command("python3", "/root/udp_probe.py", dst=SERVER4, port=UDP_PORT,
                                                    sockets=UDP_SOCKETS, datagrams=UDP_DATAGRAMS))
    return udp_probe.collect(server, lambda: fleet.ssh(guest, send))


@pytest.fixture(scope="module")
def facts():
    with laptop(ContainerFleet, containers_available, "nlbrole") as (tmp, fleet, guest):
        usb, wifi = guest.uplinks
        host = fwmark_laptop_vars(tmp, fleet, guest)
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host}}}))
        bad = json.loads(inventory.read_text())
        bad["multiwan"]["hosts"]["laptop"]["balancer_uplinks"][1]["weight"] = 0
        bad_inventory = Path(tmp, "bad.json")
        bad_inventory.write_text(json.dumps(bad))

        def site(inv: Path, *extra: str) -> dict:
            return site_over_ssh(fleet, inv, *extra)

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def snapshot() -> dict:
            return {key: ssh(command) for key, command in SNAPSHOT.items()}

        f: dict = {"addresses": {"usb0": usb.address, "wlp1s0": wifi.address}}
        f["blank"] = snapshot()
        f["check"] = site(inventory, "--check", "--diff")
        f["after_check"] = snapshot()
        f["run1"] = site(inventory)
        f["applied"] = snapshot()
        # The modules applied the state; the units are for the next boot.
        f["units_active"] = ssh("systemctl is-enabled netlb-multiwan-bpf.service netlb-multiwan-uplink-wifi.service")
        f["iperf_cgroup"] = iperf_local_hosts(fleet.ssh(guest, IPERF_CGROUP))
        f["iperf_slice"] = iperf_local_hosts(fleet.ssh(guest, IPERF_SLICE))
        f["udp"] = unconnected_udp(fleet, guest)
        f["run2"] = site(inventory)
        status = fleet.ssh(guest, "netlb-multiwan-status")
        f["status"] = {"rc": status.returncode, "text": status.stdout + status.stderr}
        f["before_invalid"] = snapshot()
        f["invalid"] = site(bad_inventory)
        f["after_invalid"] = snapshot()
        f["absent"] = site(inventory, "-e", "balancer_state=absent")
        f["after_absent"] = snapshot()

        f["run3"] = site(inventory)
        fleet.restart(guest)
        # The NICs come back after systemd (as a hot-plugged USB modem would): the uplink
        # unit fails once and retries every 3 s until its interface is there.
        units = "systemctl is-active netlb-multiwan-bpf.service netlb-multiwan-uplink-wifi.service"
        f["restarted_units"] = ssh(f"for i in $(seq 60); do [ \"$({units} | sort -u)\" = active ] && break; sleep 0.5; done; {units}")
        f["restarted_rules"] = ssh("ip rule show")
        f["restarted_progs"] = ssh(SNAPSHOT["cgroup_progs"])
        f["iperf_after_restart"] = iperf_local_hosts(fleet.ssh(guest, IPERF_CGROUP))
        f["udp_after_restart"] = unconnected_udp(fleet, guest)
        f["journal"] = ssh("journalctl -b --no-pager -u 'netlb-multiwan-*' | tail -40")
    return f


def assert_same(before: dict, after: dict) -> None:
    for key in before:
        assert before[key] == after[key], "`%s` changed:\n--- before\n%s\n--- after\n%s" % (key, before[key], after[key])


def test_check_diff_on_blank_host_reports_changes_and_changes_nothing(facts):
    assert facts["check"]["rc"] == 0 and facts["check"]["changed"] > 0, facts["check"]["output"]
    assert_same(facts["blank"], facts["after_check"])


def test_site_routes_the_fwmark_uplink_and_attaches_the_program(facts):
    assert facts["run1"]["rc"] == 0, facts["run1"]["output"]
    applied = facts["applied"]
    assert re.search(r"fwmark 0x100 lookup 100", applied["rule4"]), applied["rule4"]
    assert "cgroup_inet4_connect" in applied["cgroup_progs"] or "connect4" in applied["cgroup_progs"]


def test_role_units_run_under_live_systemd(facts):
    assert facts["units_active"].split() == ["enabled", "enabled"], facts["units_active"]


def test_iperf_from_the_cgroup_uses_both_uplinks(facts):
    assert set(facts["iperf_cgroup"]) == set(facts["addresses"].values()), facts["iperf_cgroup"]


def test_iperf_started_in_the_slice_uses_both_uplinks(facts):
    assert set(facts["iperf_slice"]) == set(facts["addresses"].values()), facts["iperf_slice"]


def test_second_run_changes_nothing(facts):
    assert facts["run2"]["rc"] == 0 and facts["run2"]["changed"] == 0, facts["run2"]["output"]


def test_status_has_no_problems(facts):
    assert facts["status"]["rc"] == 0 and "problems: none" in facts["status"]["text"], facts["status"]["text"]


def test_invalid_inventory_fails_before_any_change(facts):
    assert facts["invalid"]["rc"] != 0
    assert "balancer_uplinks[1].weight: must be an integer 1-1000, got 0" in facts["invalid"]["output"]
    assert_same(facts["before_invalid"], facts["after_invalid"])


def test_absent_restores_the_blank_host(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"]
    assert_same(facts["blank"], facts["after_absent"])


def test_balancing_is_back_after_a_container_restart_without_ansible(facts):
    assert facts["run3"]["rc"] == 0, facts["run3"]["output"]
    assert facts["restarted_units"].split() == ["active", "active"], facts["restarted_units"] + facts["journal"]
    assert "fwmark 0x100 lookup 100" in facts["restarted_rules"], facts["restarted_rules"] + facts["journal"]
    assert set(facts["iperf_after_restart"]) == set(facts["addresses"].values()), facts["iperf_after_restart"]


@pytest.mark.parametrize("when", ["udp", "udp_after_restart"])
def test_unconnected_udp_keeps_one_uplink_per_socket(facts, when):
    """sendto() without connect(): every datagram of a socket, the first one included, from one
    uplink's address (the role's source rule routes it), sockets alternating (round_robin)."""
    by_socket = facts[when]
    assert len(by_socket) == UDP_SOCKETS, by_socket
    assert udp_probe.spread(by_socket, UDP_DATAGRAMS) == {facts["addresses"]["usb0"]: 50,
                                                          facts["addresses"]["wlp1s0"]: 50}
