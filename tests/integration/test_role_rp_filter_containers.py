"""Strict reverse-path filtering (rp_filter=1, the default of several distributions)
on a host under a live systemd, with device and fwmark steering.

Device steering binds a socket to wlp1s0, whose default route (metric 600) the main
table does not prefer: the strict check for its replies picks usb0's route, drops them,
and the connect never completes. One systemd container plays the laptop (tests/
integration/laptop.py, NetworkManager's default route per uplink added) with conf.all
and both uplinks at 1; the controller runs on this machine over SSH. In order:
balancer_rp_filter: keep (nothing changed: wifi's connects fail, status says why), the
default loose (every connect completes over both uplinks, conf.all untouched), a second
run that changes nothing, absent (both back at 1); then fwmark steering on the same
strict host: nothing to loosen, every connect completes (wifi's source rule sends the
check into wifi's table). The engine's cases: tests/unit/test_rp_filter.py.
"""
from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import connect_loop
from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import device_laptop_vars, fwmark_laptop_vars, laptop
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import in_cgroup
from tests.lab.netlab import SERVER4

# The first test pays the module fixture: four site.yml runs and 300 connects.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]

CGROUP = "multiwan"
PORT = 7
CONNECTS = 100
SETTINGS = "for c in all usb0 wlp1s0; do printf '%s=' $c; cat /proc/sys/net/ipv4/conf/$c/rp_filter; done"
STRICT = "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.usb0.rp_filter=1 net.ipv4.conf.wlp1s0.rp_filter=1"


def settings(text: str) -> dict:
    return dict((k, int(v)) for k, v in (line.split("=") for line in text.split()))


@pytest.fixture(scope="module")
def facts():
    with laptop(ContainerFleet, containers_available, "nlbrpf") as (tmp, fleet, guest):
        usb, wifi = guest.uplinks
        lab = fleet.lab(guest)
        device = device_laptop_vars(tmp, fleet, guest)
        inventories = {"fwmark": fwmark_laptop_vars(tmp, fleet, guest),
                       "keep": {**device, "balancer_rp_filter": "keep"}, "loose": device}
        for name, host in inventories.items():
            inventories[name] = Path(tmp, name + ".json")
            inventories[name].write_text(json.dumps({"multiwan": {"hosts": {"laptop": host}}}))

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def connects() -> dict:
            """{(local address or None, error or None): count} of CONNECTS TCP connects."""
            proc = fleet.ssh(guest, in_cgroup(CGROUP, "python3 /root/connect_loop.py --dst %s --port %d --count %d "
                                                      "--timeout 0.5 --rate 1000" % (SERVER4, PORT, CONNECTS)))
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return dict(collections.Counter((c[1], c[3]) for c in json.loads(proc.stdout)["connects"]))

        def status() -> dict:
            proc = fleet.ssh(guest, "netlb-multiwan-status --json")
            return {"rc": proc.returncode, "json": json.loads(proc.stdout), "text": ssh("netlb-multiwan-status")}

        # NetworkManager's way: every connected uplink has its default route, the preferred one first.
        wifi_default = ["default", "via", wifi.gateway, "dev", "wlp1s0", "metric", "600"]
        lab.client_exec(["ip", "route", "add", *wifi_default])
        server = subprocess.Popen(lab._in(lab.inet_netns, [sys.executable, connect_loop.__file__, "--serve", str(PORT)]),
                                  stdin=subprocess.DEVNULL)
        try:
            fleet.exec(guest, ["sh", "-c", "cat > /root/connect_loop.py"], input=Path(connect_loop.__file__).read_text())
            f: dict = {"addresses": {"usb0": usb.address, "wlp1s0": wifi.address}}
            f["strict"] = ssh(STRICT + "; echo rc=$?")
            f["before"] = settings(ssh(SETTINGS))
            f["keep"] = site_over_ssh(fleet, inventories["keep"])
            f["keep_settings"] = settings(ssh(SETTINGS))
            f["keep_connects"] = connects()
            f["keep_status"] = status()
            f["loose"] = site_over_ssh(fleet, inventories["loose"])
            f["loose_settings"] = settings(ssh(SETTINGS))
            f["record"] = ssh("cat /var/lib/netlb-multiwan/rp_filter.json")
            f["loose_connects"] = connects()
            f["loose_status"] = status()
            f["again"] = site_over_ssh(fleet, inventories["loose"])
            f["absent"] = site_over_ssh(fleet, inventories["loose"], "-e", "balancer_state=absent")
            f["absent_settings"] = settings(ssh(SETTINGS))
            lab.client_exec(["ip", "route", "del", *wifi_default])
            f["fwmark"] = site_over_ssh(fleet, inventories["fwmark"])
            f["fwmark_settings"] = settings(ssh(SETTINGS))
            f["fwmark_connects"] = connects()
            f["fwmark_status"] = status()
            f["fwmark_absent"] = site_over_ssh(fleet, inventories["fwmark"], "-e", "balancer_state=absent")
        finally:
            server.kill()
            server.wait()
    return f


def test_the_host_starts_strict(facts):
    assert facts["strict"].strip().endswith("rc=0"), facts["strict"]
    assert facts["before"] == {"all": 1, "usb0": 1, "wlp1s0": 1}


def test_keep_changes_nothing_and_the_replies_on_wifi_are_dropped(facts):
    assert facts["keep"]["rc"] == 0, facts["keep"]["output"]
    assert facts["keep_settings"] == facts["before"]
    # round robin: every other socket is bound to wlp1s0, and none of them completes.
    assert facts["keep_connects"] == {(facts["addresses"]["usb0"], None): CONNECTS // 2,
                                      (None, "timeout"): CONNECTS // 2}, facts["keep_connects"]


def test_status_says_why_under_keep(facts):
    status = facts["keep_status"]
    assert status["rc"] == 1, status["text"]
    assert "wifi: strict reverse-path filtering (rp_filter=1) on wlp1s0 drops the replies" in status["text"], \
        status["text"]
    assert {u["name"]: u["rp_filter"] for u in status["json"]["uplinks"]} == {"mobile": 1, "wifi": 1}


def test_loose_loosens_the_uplinks_only_and_records_what_they_were(facts):
    assert facts["loose"]["rc"] == 0 and facts["loose"]["changed"] > 0, facts["loose"]["output"]
    assert facts["loose_settings"] == {"all": 1, "usb0": 2, "wlp1s0": 2}
    assert json.loads(facts["record"]) == {"usb0": 1, "wlp1s0": 1}


def test_every_connect_completes_over_both_uplinks(facts):
    assert facts["loose_connects"] == {(facts["addresses"]["usb0"], None): CONNECTS // 2,
                                       (facts["addresses"]["wlp1s0"], None): CONNECTS // 2}, facts["loose_connects"]


def test_status_has_no_problem_once_loose(facts):
    status = facts["loose_status"]
    assert status["rc"] == 0 and "problems: none" in status["text"], status["text"]
    assert {u["name"]: u["rp_filter"] for u in status["json"]["uplinks"]} == {"mobile": 2, "wifi": 2}


def test_second_run_changes_nothing(facts):
    assert facts["again"]["rc"] == 0 and facts["again"]["changed"] == 0, facts["again"]["output"]


def test_absent_puts_strict_back(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"]
    assert facts["absent_settings"] == {"all": 1, "usb0": 1, "wlp1s0": 1}


def test_fwmark_steering_needs_no_loosening_on_a_strict_host(facts):
    assert facts["fwmark"]["rc"] == 0, facts["fwmark"]["output"]
    assert facts["fwmark_settings"] == {"all": 1, "usb0": 1, "wlp1s0": 1}
    assert facts["fwmark_connects"] == {(facts["addresses"]["usb0"], None): CONNECTS // 2,
                                        (facts["addresses"]["wlp1s0"], None): CONNECTS // 2}, facts["fwmark_connects"]
    status = facts["fwmark_status"]
    assert status["rc"] == 0 and "problems: none" in status["text"], status["text"]
    assert facts["fwmark_absent"]["rc"] == 0, facts["fwmark_absent"]["output"]
