"""`balancer_mptcp: upgrade` through playbooks/site.yml, on Debian's 6.12 in the VM lab.

A fleet guest booting Debian's 6.12 (tests/lab/vmkernel.py), its uplink lab shaped to
16 + 8 Mbit/s (an emulated guest's Python keeps up), reached over SSH as users reach
their hosts; no systemd in it (the role converges it all the same and starts nothing).
site.yml with fwmark steering and `balancer_mptcp: upgrade`: the preflight's probe
passes, the role installs and attaches both programs and an MPTCP endpoint per uplink,
a second run changes nothing. Then an unmodified client (plain socket() + connect(),
tests/integration/mptcp_transfer.py without --mptcp) in the balanced cgroup gets one
MPTCP connection with a subflow per uplink and >= 90% of the two links' measured
ceilings; a process outside the cgroup gets plain TCP; towards a plain TCP server the
upgraded client falls back and works; the status command counts what the program did.

The engine-level checks (detach, idempotence of the pins, Debian 6.1 refused) are in
test_mptcp_upgrade_vm.py; this machine's kernel refuses upgrade in preflight
(test_role_mptcp_containers.py).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration import mptcp_transfer
from tests.integration.ansible_runner import ROOT, site_over_ssh
from tests.lab import demo
from tests.lab.fleet import Fleet, GuestSpec, in_cgroup
from tests.lab.netlab import SERVER4, Uplink
from tests.lab.vm import vm_available

# A 6.12 guest's boot, two site.yml runs and four transfers under TCG: ~6-8 min.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

RATES = {"usb0": 16, "wlp1s0": 8}
CGROUP = "multiwan"
LAB_INET = demo.GUEST_INET_NETNS
PYTHON = shlex.quote(str(ROOT / ".venv" / "bin" / "python"))
TRANSFER = shlex.quote(mptcp_transfer.__file__)
MPTCP_PORT, PLAIN_PORT = 5400, 5401
SECONDS = 10


def inventory(fleet, guest, directory: str) -> Path:
    usb, wifi = guest.uplinks
    host = {
        **fleet.host_vars(guest),
        "balancer_uplinks": [{"name": "mobile", "interface": usb.interface, "gateway": usb.gateway},
                             {"name": "wifi", "interface": wifi.interface, "gateway": wifi.gateway,
                              "table": 100, "mark": 0x100}],
        "balancer_steering": "fwmark",
        "balancer_policy": "round_robin",
        "balancer_mptcp": "upgrade",
        "balancer_cgroup": CGROUP,
        "balancer_manage_packages": False,  # no package mirror: the guest runs on this machine's packages
        "balancer_build_on": "controller",
        "balancer_build_cache": str(Path(directory, "build")),
    }
    path = Path(directory, "inventory.json")
    path.write_text(json.dumps({"multiwan": {"hosts": {guest.name: host}}}))
    return path


def send(fleet, guest, port: int, *options: str, in_balanced_cgroup: bool = True) -> dict:
    command = "%s %s send --dst %s --port %d --seconds %d %s" % (PYTHON, TRANSFER, SERVER4, port, SECONDS,
                                                                 " ".join(options))
    proc = fleet.ssh(guest, in_cgroup(CGROUP, command) if in_balanced_cgroup else command, timeout=SECONDS + 180)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "rc %d: %s" % (proc.returncode, (proc.stdout + proc.stderr).strip()[-2000:])}


@pytest.fixture(scope="module")
def facts():
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    spec = GuestSpec("laptop", [Uplink(i, rate) for i, rate in RATES.items()], kernel_series="6.12")
    out: dict = {}
    with Fleet([spec], name="nlbmup") as fleet, tempfile.TemporaryDirectory(prefix="netlb-mptcp-up-") as tmp:
        guest = fleet.guests[0]
        demo.Laptop(fleet, guest).widen_buckets()  # tbf buckets an emulated guest's late timers can fill
        out["uname"] = fleet.ssh(guest, "uname -r").stdout.strip()
        path = inventory(fleet, guest, tmp)
        out["first"] = site_over_ssh(fleet, path, timeout=1200)
        out["second"] = site_over_ssh(fleet, path, timeout=1200)
        out["endpoints"] = fleet.ssh(guest, "ip mptcp endpoint show").stdout
        out["links"] = fleet.ssh(guest, "bpftool -j link show").stdout
        fleet.ssh(guest, "ip netns exec %s ip mptcp limits set subflows 8 add_addr_accepted 8" % LAB_INET)
        servers = [subprocess.Popen(
            ["ip", "netns", "exec", fleet.netns, *fleet.ssh_command(guest),
             "ip netns exec %s %s %s serve %d %s" % (LAB_INET, PYTHON, TRANSFER, port, extra)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            for port, extra in ((MPTCP_PORT, ""), (PLAIN_PORT, "--plain"))]
        try:
            for server in servers:
                assert server.stdout.readline().strip() == "listening"
            usb, wifi = guest.uplinks
            for uplink in (usb, wifi):  # each link alone: plain TCP bound to it, from outside the cgroup
                out["ceiling_" + uplink.interface] = send(
                    fleet, guest, MPTCP_PORT, "--bind-dev", uplink.interface, "--bind", uplink.address,
                    in_balanced_cgroup=False)
            out["upgraded"] = send(fleet, guest, MPTCP_PORT)
            out["outside"] = send(fleet, guest, MPTCP_PORT, in_balanced_cgroup=False)
            out["plain_server"] = send(fleet, guest, PLAIN_PORT)
            time.sleep(0.5)
            status = fleet.ssh(guest, "/usr/local/sbin/netlb-multiwan-status --json")
            out["status"] = json.loads(status.stdout) if status.returncode in (0, 1) and status.stdout else status.stderr
        finally:
            for server in servers:
                server.kill()
                server.wait()
    return out


def test_site_applies_upgrade_on_6_12_and_a_second_run_changes_nothing(facts):
    assert facts["uname"].startswith("6.12"), facts["uname"]
    assert facts["first"]["rc"] == 0 and facts["first"]["changed"] > 0, facts["first"]["output"][-4000:]
    assert facts["second"]["rc"] == 0 and facts["second"]["changed"] == 0, facts["second"]["output"][-4000:]
    tracing = [link for link in json.loads(facts["links"]) if link.get("type") == "tracing"]
    assert len(tracing) == 1 and tracing[0].get("attach_type") in ("modify_return", "26"), facts["links"]
    assert "dev usb0" in facts["endpoints"] and "dev wlp1s0" in facts["endpoints"], facts["endpoints"]


def test_an_unmodified_client_in_the_cgroup_gets_one_connection_over_both_uplinks(facts):
    ceilings = facts["ceiling_usb0"]["mbit"] + facts["ceiling_wlp1s0"]["mbit"]
    got = facts["upgraded"]
    print("ceilings %.1f + %.1f Mbit/s; the upgraded client %.1f" % (
        facts["ceiling_usb0"]["mbit"], facts["ceiling_wlp1s0"]["mbit"], got.get("mbit", 0.0)))
    assert got["error"] is None and got["mptcp"] is True and got["fallback"] is False, got
    assert got["subflows_max"] >= 1, got  # MPTCP_INFO counts the subflows besides the first
    assert got["mbit"] >= 0.90 * ceilings, (got, ceilings)


def test_outside_the_cgroup_tcp_and_to_a_plain_server_a_working_fallback(facts):
    outside, plain = facts["outside"], facts["plain_server"]
    assert outside["error"] is None and outside["mptcp"] is False, outside
    assert outside["mbit"] <= 1.05 * max(facts["ceiling_usb0"]["mbit"], facts["ceiling_wlp1s0"]["mbit"]), outside
    # Fallen back, the socket may no longer answer MPTCP_INFO at all.
    assert plain["error"] is None and plain["bytes"] > 0, plain
    assert plain["mptcp"] is False or plain["fallback"] is True, plain


def test_status_shows_the_upgrade_and_its_sockets(facts):
    status = facts["status"]
    assert isinstance(status, dict), status
    upgrade = status["mptcp"]["upgrade"]
    assert status["mptcp"]["mode"] == "upgrade" and upgrade["attached"] is True, status["mptcp"]
    assert upgrade["upgraded"] >= 2 and upgrade["left_alone"] >= 1, upgrade
    assert not [p for p in status["problems"] if p.startswith("mptcp")], status["problems"]
