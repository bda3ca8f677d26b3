"""playbooks/site.yml over SSH on a fleet of three systemd containers, in one run.

tests/lab/containers.py starts the containers (Debian 12, systemd as PID 1, no clang)
on this machine's kernel; each has its own uplink lab (veths to an "internet" netns
with iperf3) and sshd on a management NIC that the role must leave alone. The
controller (ansible-playbook, ssh) runs in the fleet's management netns:

- host-a: usb0 (main, 40 Mbit/s) + wlp1s0 (20 Mbit/s)
- host-b: usb0 (main) + wlp1s0 + enp2s0 (10 Mbit/s)
- host-c: usb0 (main) + wlp1s0, fwmark steering everywhere

host-a and host-b put their extra uplinks into VRFs (wifi-vrf table 10, lte-vrf table
11) where this kernel has VRF, else into fwmark tables (100, 101; marks 0x100, 0x200):
VRF steering itself: test_role_vm (VM lab) and test_bpf_vrf (namespaces of a VRF kernel).

The program is one object for every host: three hosts with two and three uplinks,
VRF and fwmark steering, get the same bytes, compiled once on the controller (the
containers have no clang).

One fleet boot, two site.yml runs, one ssh per host for the kernel state and
one for iperf3; the tests below only assert on the collected facts.
"""
from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.ansible_runner import ROOT, ansible_bin, ansible_env, play_recap
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import GUEST_CGROUP2, MGMT_DEV, GuestSpec, in_cgroup
from tests.lab.netlab import SERVER4, Uplink, kernel_has_vrf, stream_local_hosts

# The first test pays the fleet: three containers and two site.yml runs.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CGROUP = "multiwan"
WIFI_MARK = 0x100
LTE_MARK = 0x200
VRF = kernel_has_vrf()
SPECS = [
    GuestSpec("host-a", [Uplink("usb0", 40), Uplink("wlp1s0", 20)]),
    GuestSpec("host-b", [Uplink("usb0", 40), Uplink("wlp1s0", 20), Uplink("enp2s0", 10)]),
    GuestSpec("host-c", [Uplink("usb0", 40), Uplink("wlp1s0", 20)]),
]
# One ssh per host: everything the kernel shows about links, rules and the cgroup.
STATE_COMMAND = (
    "printf '{\"link\": '; ip -d -j link show; "
    "printf ', \"rule\": '; ip -j rule show; "
    "printf ', \"route\": '; ip -j route show table main; "
    "printf ', \"cgroup\": '; bpftool -j cgroup show %s/%s; "
    "printf ', \"object\": \"%%s\"' \"$(sha256sum < /var/lib/netlb-multiwan/multiwan.bpf.o | cut -c1-64)\"; "
    "printf ', \"compilers\": \"%%s\"}' \"$(command -v clang llc 2>/dev/null | tr '\\n' ' ')\"" % (GUEST_CGROUP2, CGROUP)
)
IPERF_COMMAND = in_cgroup(CGROUP, "iperf3 -c %s -P10 -t2 -J" % SERVER4)


def balancer_vars(name: str, uplinks: list[Uplink]) -> dict:
    """The role's inventory of one host, from the addresses its guest lab assigned."""
    by_if = {u.interface: u for u in uplinks}

    def uplink(label, interface, **extra):
        return {"name": label, "interface": interface, "gateway": by_if[interface].gateway, **extra}

    vrf = VRF and name != "host-c"
    if vrf:
        routed = [uplink("wifi", "wlp1s0", vrf="wifi-vrf", table=10)]
        if name == "host-b":
            routed.append(uplink("lte", "enp2s0", vrf="lte-vrf", table=11))
    else:
        routed = [uplink("wifi", "wlp1s0", table=100, mark=WIFI_MARK)]
        if name == "host-b":
            routed.append(uplink("lte", "enp2s0", table=101, mark=LTE_MARK))
    return {
        "balancer_steering": "vrf" if vrf else "fwmark",
        "balancer_policy": "round_robin",  # ten streams are spread over every uplink
        "balancer_cgroup": CGROUP,
        "balancer_uplinks": [uplink("mobile", "usb0")] + routed,
    }


@pytest.fixture(scope="module")
def facts():
    reason = containers_available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="netlb-fleet-test-") as tmp, ContainerFleet(SPECS) as fleet:
        common = {
            "balancer_manage_packages": False,  # no package mirror reachable from the containers
            "balancer_build_on": "controller",
            "balancer_build_cache": str(Path(tmp, "build")),
        }
        hosts = {g.name: {**fleet.host_vars(g), **common, **balancer_vars(g.name, g.uplinks)}
                 for g in fleet.guests}
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": hosts}}))
        env = {**ansible_env(), **fleet.ansible_env(), "ANSIBLE_PIPELINING": "True"}
        argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site.yml")]

        def site() -> dict:
            started = time.monotonic()
            proc = fleet.controller_run(argv, env=env, timeout=1800)
            output = proc.stdout + proc.stderr
            return {"rc": proc.returncode, "output": output, "recap": play_recap(output),
                    "seconds": round(time.monotonic() - started)}

        def probe(guest) -> dict:
            state = fleet.ssh(guest, STATE_COMMAND)
            iperf = fleet.ssh(guest, IPERF_COMMAND)
            try:
                local_hosts = stream_local_hosts(json.loads(iperf.stdout))
            except (ValueError, KeyError):
                local_hosts = "iperf3 failed (rc %d): %s %s" % (iperf.returncode, iperf.stdout[-1500:], iperf.stderr)
            return {"state": json.loads(state.stdout) if state.returncode == 0 else state.stderr,
                    "local_hosts": local_hosts,
                    "uplinks": {u.interface: u.address for u in guest.uplinks},
                    "gateways": {u.interface: u.gateway for u in guest.uplinks},
                    "mgmt_address": guest.address}

        run1 = site()
        builds = sorted(p.name for p in Path(tmp, "build").iterdir())
        with ThreadPoolExecutor(len(fleet.guests)) as pool:
            probes = dict(zip([g.name for g in fleet.guests], pool.map(probe, fleet.guests)))
        run2 = site()
        # What systemd saw, when a run failed.
        consoles = {g.name: fleet.exec(g, ["journalctl", "-b", "--no-pager", "-n", "60"]).stdout
                    for g in fleet.guests if run1["rc"] or run2["rc"]}
    return {"run1": run1, "run2": run2, "hosts": probes, "consoles": consoles, "builds": builds}


def task_results(output: str, task: str) -> list[str]:
    """The per-host result lines ("changed: [host-a -> localhost]", ...) of one task."""
    lines, inside = [], False
    for line in output.splitlines():
        if line.startswith("TASK ["):
            inside = line.startswith("TASK [%s" % task)
        elif inside and line.split(":")[0] in ("ok", "changed", "skipping", "failed"):
            lines.append(line.split(":")[0])
    return lines


def test_one_object_compiled_once_for_every_host(facts):
    hosts = facts["hosts"]
    assert all(isinstance(h["state"], dict) for h in hosts.values()), hosts
    digests = set(h["state"]["object"] for h in hosts.values())
    assert len(digests) == 1 and len(digests.pop()) == 64, hosts
    assert [h["state"]["compilers"].strip() for h in hosts.values()] == ["", "", ""]   # no clang, no llc
    assert len(facts["builds"]) == 1, facts["builds"]
    assert task_results(facts["run1"]["output"], "netlb.multiwan.balancer : Compile").count("changed") == 1, \
        facts["run1"]["output"]


def links(state: dict) -> dict:
    return {link["ifname"]: link for link in state["link"]}


def test_first_run_provisions_every_host(facts):
    run = facts["run1"]
    assert run["rc"] == 0, run["output"] + "\n".join(facts["consoles"].values())
    assert set(run["recap"]) == {s.name for s in SPECS}, run["output"]
    for host, counts in run["recap"].items():
        assert counts["changed"] > 0 and counts["failed"] == 0 and counts["unreachable"] == 0, (host, counts)


def test_second_run_changes_nothing_on_any_host(facts):
    run = facts["run2"]
    assert run["rc"] == 0, run["output"] + "\n".join(facts["consoles"].values())
    assert {h: c["changed"] for h, c in run["recap"].items()} == {s.name: 0 for s in SPECS}, run["output"]


PLANNED_VRFS = {"host-a": {"wifi-vrf": (10, ["wlp1s0"])},
                "host-b": {"wifi-vrf": (10, ["wlp1s0"]), "lte-vrf": (11, ["enp2s0"])}}
PLANNED_MARKS = {"host-a": [(WIFI_MARK, "100")], "host-b": [(WIFI_MARK, "100"), (LTE_MARK, "101")],
                 "host-c": [(WIFI_MARK, "100")]}


@pytest.mark.parametrize("host", [s.name for s in SPECS])
def test_each_host_routes_its_extra_uplinks_as_planned(facts, host):
    state = facts["hosts"][host]["state"]
    assert isinstance(state, dict), state
    if VRF and host in PLANNED_VRFS:
        assert_vrfs(state, PLANNED_VRFS[host])
    else:
        assert_fwmark_rules(state, PLANNED_MARKS[host])


def assert_vrfs(state, vrfs):
    by_name = links(state)
    for vrf, (table, members) in vrfs.items():
        info = by_name[vrf]["linkinfo"]
        assert info["info_kind"] == "vrf" and info["info_data"]["table"] == table, by_name[vrf]
        for member in members:
            assert by_name[member].get("master") == vrf, by_name[member]
    enslaved = {name for name, link in by_name.items() if link.get("master")}
    assert enslaved == {m for _, members in vrfs.values() for m in members}
    # The kernel's l3mdev rule sends VRF-bound sockets to their tables; no fwmark rules here.
    assert [r for r in state["rule"] if "l3mdev" in r], state["rule"]
    assert not [r for r in state["rule"] if "fwmark" in r], state["rule"]


def assert_fwmark_rules(state, marks):
    assert not [link for link in state["link"] if link.get("linkinfo", {}).get("info_kind") == "vrf"]
    assert not [r for r in state["rule"] if "l3mdev" in r], state["rule"]
    marked = [r for r in state["rule"] if "fwmark" in r]
    assert sorted((int(r["fwmark"], 16), r["table"]) for r in marked) == marks, state["rule"]


@pytest.mark.parametrize("host", [s.name for s in SPECS])
def test_management_interface_is_left_alone(facts, host):
    probe = facts["hosts"][host]
    state = probe["state"]
    assert isinstance(state, dict), state
    mgmt = links(state)[MGMT_DEV]
    assert "master" not in mgmt, mgmt
    # The main table's only default route is still the lab's primary uplink.
    defaults = [r for r in state["route"] if r["dst"] == "default"]
    assert [(r["dev"], r["gateway"]) for r in defaults] == [("usb0", probe["gateways"]["usb0"])], state["route"]


@pytest.mark.parametrize("host", [s.name for s in SPECS])
def test_program_attached_to_the_balancer_cgroup(facts, host):
    state = facts["hosts"][host]["state"]
    assert isinstance(state, dict), state
    attached = {p["attach_type"] for p in state["cgroup"]}
    assert {"cgroup_inet4_connect", "cgroup_inet6_connect"} <= attached, state["cgroup"]


@pytest.mark.parametrize("host", [s.name for s in SPECS])
def test_iperf_from_the_cgroup_uses_every_uplink(facts, host):
    probe = facts["hosts"][host]
    assert isinstance(probe["local_hosts"], list), probe["local_hosts"]
    assert set(probe["local_hosts"]) == set(probe["uplinks"].values()), probe
