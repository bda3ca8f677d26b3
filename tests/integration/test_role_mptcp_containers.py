"""One connection over every uplink (issue 32, `balancer_mptcp: paths`) on this machine's kernel.

One systemd container (tests/lab/containers.py), the laptop: usb0 (mobile, 40 Mbit/s, main
table) and wlp1s0 (wifi, 20 Mbit/s, table 100, mark 0x100), fwmark steering, round robin,
provisioned by playbooks/site.yml. The lab's server accepts MPTCP (and plain TCP: an MPTCP
listener takes both). Each transfer is one connection from the balanced cgroup, measured
by the receiver (tests/integration/mptcp_transfer.py). In order:

0. `upgrade` (TCP sockets made MPTCP by a BPF program) fails in preflight: this kernel
   refuses fmod_ret programs; the host is as it was;
1. the ceilings: plain TCP bound to each uplink in turn, 10 s each;
2. `paths`: the container's path manager has an endpoint per uplink address, bound to its
   interface, and the limit raised; a second run changes nothing;
3. one MPTCP connection for 10 s moves >= 90% of the sum of the ceilings, with a subflow on
   each uplink;
4. the same for 20 s while wifi's far end goes silent for 5 s (its address removed): no
   error reaches the application, mobile carries it meanwhile (the tracker takes wifi's
   endpoint away), and wifi carries traffic again after the repair (its endpoint is back);
5. `netlb-multiwan drain wifi` takes wifi's endpoint away, `undrain` gives it back; a spent
   data budget (`netlb-multiwan budget wifi set 1K`: the tracker's own probes spend it)
   takes it away too, a budget raised above the usage gives it back;
6. `off`: the endpoints it made are gone and the limit is as before; one MPTCP connection
   then gets at most the faster link;
7. device steering (a default route per uplink, nothing routed) with `paths`: one connection
   again moves >= 90% of the ceilings' sum.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration import mptcp_transfer
from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import device_laptop_vars, fwmark_laptop_vars, laptop
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import in_cgroup
from tests.lab.netlab import SERVER4

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CGROUP = "multiwan"
PORT = 5400
TRANSFER = "/root/mptcp_transfer.py"
METRICS = "/run/netlb_multiwan.prom"


def endpoints(fleet, guest) -> dict:
    """{address: endpoint} of the container's path manager (ip -j mptcp endpoint show)."""
    out = fleet.ssh(guest, "ip -j mptcp endpoint show").stdout
    return dict((e["address"], e) for e in json.loads(out or "[]"))


def limits(fleet, guest) -> str:
    return fleet.ssh(guest, "ip mptcp limits show").stdout.strip()


@pytest.fixture(scope="module")
def facts():
    with laptop(ContainerFleet, containers_available, "nlbmp") as (tmp, fleet, guest):
        lab = fleet.lab(guest)
        usb, wifi = guest.uplinks

        def inventory(name, **host):
            path = Path(tmp, name + ".json")
            host = fwmark_laptop_vars(tmp, fleet, guest, balancer_metrics_textfile=METRICS, **host)
            path.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host}}}))
            return path

        def transfer(seconds, *options, cgroup=True) -> dict:
            command = "python3 %s send --dst %s --port %d --seconds %s %s" % (
                TRANSFER, SERVER4, PORT, seconds, " ".join(options))
            proc = fleet.ssh(guest, in_cgroup(CGROUP, command) if cgroup else command, timeout=seconds + 60)
            assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr
            return json.loads(proc.stdout)

        def counters() -> dict:
            """{interface: (rx bytes, tx bytes)} in the container."""
            out = fleet.ssh(guest, "for i in usb0 wlp1s0; do echo $i $(cat /sys/class/net/$i/statistics/rx_bytes)"
                                   " $(cat /sys/class/net/$i/statistics/tx_bytes); done").stdout
            return dict((f[0], (int(f[1]), int(f[2]))) for f in (line.split() for line in out.splitlines()))

        f: dict = {"usb": usb, "wifi": wifi}
        fleet.exec(guest, ["sh", "-c", "cat > %s" % TRANSFER], input=Path(mptcp_transfer.__file__).read_text())
        lab.inet_exec(["ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8"])
        server = subprocess.Popen(lab._in(lab.inet_netns, [sys.executable, mptcp_transfer.__file__, "serve",
                                                           str(PORT)]), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "listening"
            f["limits_before"] = limits(fleet, guest)
            blank = "ls /etc/netlb-multiwan /var/lib/netlb-multiwan /sys/fs/bpf; ip rule; ip mptcp endpoint show"
            f["blank"] = fleet.ssh(guest, blank).stdout
            f["run_upgrade"] = site_over_ssh(fleet, inventory("upgrade", balancer_mptcp="upgrade"))
            f["after_upgrade"] = fleet.ssh(guest, blank).stdout
            f["run_paths"] = site_over_ssh(fleet, inventory("paths", balancer_mptcp="paths"))
            f["run_paths_again"] = site_over_ssh(fleet, inventory("paths", balancer_mptcp="paths"))
            f["endpoints_paths"], f["limits_paths"] = endpoints(fleet, guest), limits(fleet, guest)

            f["ceiling_usb"] = transfer(10, "--bind-dev usb0 --bind", usb.address, cgroup=False)
            f["ceiling_wifi"] = transfer(10, "--bind-dev wlp1s0 --bind", wifi.address, cgroup=False)
            f["mptcp"] = transfer(10, "--mptcp")

            # wifi's far end silent for 5 s in the middle of a 20 s transfer.
            result: dict = {}
            sender = threading.Thread(target=lambda: result.update(transfer(20, "--mptcp")))
            started = time.monotonic()
            sender.start()

            def at(second):
                time.sleep(max(0.0, started + second - time.monotonic()))

            at(3.0)
            f["status_during"] = json.loads(fleet.ssh(guest, "netlb-multiwan status --json").stdout)
            f["status_text_during"] = fleet.ssh(guest, "netlb-multiwan status").stdout
            at(4.5)
            f["metrics_during"] = fleet.ssh(guest, "cat %s" % METRICS).stdout
            f["counters_before_fault"] = counters()
            lab.inet_exec(["ip", "addr", "del", "%s/%d" % (wifi.gateway, wifi.prefixlen), "dev", wifi.peer])
            at(7.0)
            f["counters_fault"] = counters()
            f["endpoints_fault"] = endpoints(fleet, guest)
            at(9.5)
            f["counters_fault_end"] = counters()
            lab.inet_exec(["ip", "addr", "add", "%s/%d" % (wifi.gateway, wifi.prefixlen), "dev", wifi.peer])
            at(14.0)
            f["counters_repaired"] = counters()
            at(19.0)
            f["counters_end"] = counters()
            f["endpoints_repaired"] = endpoints(fleet, guest)
            sender.join(90)
            f["failover"] = result
            f["tracker_log"] = fleet.ssh(guest, "journalctl -b --no-pager -u netlb-multiwan-track | tail -20").stdout

            f["drain"] = fleet.ssh(guest, "netlb-multiwan drain wifi")
            f["endpoints_drained"] = endpoints(fleet, guest)
            f["undrain"] = fleet.ssh(guest, "netlb-multiwan undrain wifi")
            f["endpoints_undrained"] = endpoints(fleet, guest)

            def wait_for_wifi(present: bool) -> dict:
                end = time.monotonic() + 30
                while time.monotonic() < end and (wifi.address in endpoints(fleet, guest)) != present:
                    time.sleep(0.5)
                return endpoints(fleet, guest)
            f["budget_small"] = fleet.ssh(guest, "netlb-multiwan budget wifi set 1K")
            f["endpoints_spent"] = wait_for_wifi(False)
            f["status_spent"] = fleet.ssh(guest, "netlb-multiwan status").stdout
            f["budget_raised"] = fleet.ssh(guest, "netlb-multiwan budget wifi set 100G")
            f["endpoints_budget_raised"] = wait_for_wifi(True)

            f["run_off"] = site_over_ssh(fleet, inventory("off", balancer_mptcp="off"))
            f["endpoints_off"], f["limits_off"] = endpoints(fleet, guest), limits(fleet, guest)
            f["mptcp_off"] = transfer(10, "--mptcp")

            # Device steering: a default route per uplink (NetworkManager's way), no table, no rule.
            lab.client_exec(["ip", "route", "add", "default", "via", wifi.gateway, "dev", "wlp1s0", "metric", "600"])
            device = Path(tmp, "device.json")
            device.write_text(json.dumps({"multiwan": {"hosts": {"laptop": device_laptop_vars(
                tmp, fleet, guest, balancer_build_on="controller", balancer_mptcp="paths")}}}))
            f["run_device"] = site_over_ssh(fleet, device)
            # The run withdrew wifi's fwmark table (wifi out of the maps for a moment): the
            # tracker saw it fail, and gives its endpoint back once its probes answer again.
            end = time.monotonic() + 15
            while time.monotonic() < end and wifi.address not in endpoints(fleet, guest):
                time.sleep(0.5)
            f["endpoints_device"] = endpoints(fleet, guest)
            f["mptcp_device"] = transfer(10, "--mptcp")
            f["device_log"] = fleet.ssh(guest, "journalctl -b --no-pager -u netlb-multiwan-track | tail -15; "
                                               "netlb-multiwan status").stdout
        finally:
            server.kill()
            server.wait()
    print("mptcp figures (Mbit/s): ceilings usb0 %.1f wlp1s0 %.1f; one MPTCP connection %.1f; off %.1f; "
          "during the failover %.1f; device steering %.1f" % (
              f["ceiling_usb"]["mbit"], f["ceiling_wifi"]["mbit"], f["mptcp"]["mbit"], f["mptcp_off"]["mbit"],
              f["failover"].get("mbit", 0.0), f["mptcp_device"].get("mbit", 0.0)))
    return f


def test_upgrade_is_refused_in_preflight_on_this_kernel_and_the_host_is_unchanged(facts):
    run = facts["run_upgrade"]
    assert run["rc"] != 0, run["output"][-3000:]
    assert "balancer_mptcp upgrade: this kernel refuses trampoline programs (fentry, fmod_ret)" \
        in run["output"], run["output"][-3000:]
    assert facts["after_upgrade"] == facts["blank"]


def test_paths_gives_each_uplink_address_an_endpoint_and_changes_nothing_twice(facts):
    assert facts["run_paths"]["rc"] == 0, facts["run_paths"]["output"][-3000:]
    assert facts["run_paths_again"]["rc"] == 0 and facts["run_paths_again"]["changed"] == 0, \
        facts["run_paths_again"]["output"][-3000:]
    usb, wifi = facts["usb"], facts["wifi"]
    got = dict((a, (e.get("dev"), e.get("subflow"), e.get("backup", False))) for a, e in facts["endpoints_paths"].items())
    assert got == {usb.address: ("usb0", True, False), usb.address6: ("usb0", True, False),
                   wifi.address: ("wlp1s0", True, False), wifi.address6: ("wlp1s0", True, False)}, got
    assert "subflows 4" in facts["limits_paths"] and "subflows 2" in facts["limits_before"], facts["limits_paths"]


def test_one_mptcp_connection_moves_90_percent_of_both_links(facts):
    ceilings = facts["ceiling_usb"]["mbit"] + facts["ceiling_wifi"]["mbit"]
    got = facts["mptcp"]
    assert got["error"] is None and got["mptcp"] and got["subflows_max"] >= 1, got
    assert got["mbit"] >= 0.9 * ceilings, (got["mbit"], facts["ceiling_usb"]["mbit"], facts["ceiling_wifi"]["mbit"])


def test_status_and_metrics_show_the_connection_and_its_subflows_per_uplink(facts):
    got = facts["status_during"]["mptcp"]
    assert got["mode"] == "paths" and got["connections"] >= 1 and got["fell_back"] == 0, got
    assert got["subflows"]["mobile"] >= 1 and got["subflows"]["wifi"] >= 1, got
    assert len(got["endpoints"]["mobile"]) == 2 and len(got["endpoints"]["wifi"]) == 2, got
    assert "mptcp: paths;" in facts["status_text_during"], facts["status_text_during"]
    metrics = facts["metrics_during"]
    assert re.search(r"^netlb_multiwan_mptcp_connections [1-9]", metrics, re.M), metrics
    assert re.search(r'^netlb_multiwan_mptcp_subflows\{uplink="wifi"\} [1-9]', metrics, re.M), metrics
    assert 'netlb_multiwan_mptcp_endpoints{uplink="mobile"} 2' in metrics, metrics


def delta(facts, start, end, interface, direction):
    index = {"rx": 0, "tx": 1}[direction]
    return facts[end][interface][index] - facts[start][interface][index]


def test_a_silent_wifi_is_ridden_through_and_picked_up_again(facts):
    got = facts["failover"]
    assert got.get("error") is None and got.get("mptcp"), got
    wifi = facts["wifi"]
    # Silent: nothing comes back on wifi; mobile carries the connection meanwhile.
    assert delta(facts, "counters_fault", "counters_fault_end", "wlp1s0", "rx") < 20_000, facts["tracker_log"]
    assert wifi.address not in facts["endpoints_fault"], (facts["endpoints_fault"], facts["tracker_log"])
    mobile_mbit = delta(facts, "counters_fault", "counters_fault_end", "usb0", "tx") * 8 / 2.5 / 1e6
    assert mobile_mbit >= 0.7 * facts["ceiling_usb"]["mbit"], mobile_mbit
    # Repaired: wifi's endpoint is back and wifi carries its share again.
    assert wifi.address in facts["endpoints_repaired"], (facts["endpoints_repaired"], facts["tracker_log"])
    wifi_mbit = delta(facts, "counters_repaired", "counters_end", "wlp1s0", "tx") * 8 / 5.0 / 1e6
    assert wifi_mbit >= 0.5 * facts["ceiling_wifi"]["mbit"], (wifi_mbit, facts["tracker_log"])


def test_off_removes_the_endpoints_and_one_connection_gets_one_link(facts):
    assert facts["run_off"]["rc"] == 0, facts["run_off"]["output"][-3000:]
    assert facts["endpoints_off"] == {} and facts["limits_off"] == facts["limits_before"], facts["endpoints_off"]
    got = facts["mptcp_off"]
    assert got["error"] is None and got["subflows_max"] == 0, got
    assert got["mbit"] <= 1.05 * max(facts["ceiling_usb"]["mbit"], facts["ceiling_wifi"]["mbit"]), got


def test_a_drained_uplink_has_no_endpoint_until_undrained(facts):
    wifi = facts["wifi"]
    assert facts["drain"].returncode == 0 and facts["undrain"].returncode == 0, facts["drain"].stderr
    assert wifi.address not in facts["endpoints_drained"] and facts["usb"].address in facts["endpoints_drained"]
    assert wifi.address in facts["endpoints_undrained"], facts["endpoints_undrained"]


def test_a_spent_budget_takes_the_endpoint_away_until_the_budget_is_raised(facts):
    wifi = facts["wifi"]
    assert facts["budget_small"].returncode == 0 and facts["budget_raised"].returncode == 0, facts["budget_small"].stderr
    assert wifi.address not in facts["endpoints_spent"] and facts["usb"].address in facts["endpoints_spent"], (
        facts["endpoints_spent"], facts["status_spent"])
    assert "spent" in facts["status_spent"], facts["status_spent"]
    assert wifi.address in facts["endpoints_budget_raised"], facts["endpoints_budget_raised"]


def test_device_steering_gives_one_connection_both_links_too(facts):
    assert facts["run_device"]["rc"] == 0, facts["run_device"]["output"][-3000:]
    wifi = facts["wifi"]
    assert (facts["endpoints_device"].get(wifi.address) or {}).get("dev") == "wlp1s0", (
        facts["endpoints_device"], facts["device_log"])
    ceilings = facts["ceiling_usb"]["mbit"] + facts["ceiling_wifi"]["mbit"]
    got = facts["mptcp_device"]
    assert got["error"] is None and got["subflows_max"] >= 1, got
    assert got["mbit"] >= 0.9 * ceilings, (got["mbit"], ceilings)
