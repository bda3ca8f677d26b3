"""The runtime state of a provisioned host: weights, drains, removed uplinks, absent after a restart.

One systemd container (tests/lab/containers.py) with three uplinks and fwmark steering:
usb0 (main table), wlp1s0 (table 100, mark 0x100) and enp2s0 (table 101, mark 0x200),
policy `weighted`. Connects come from the balanced cgroup in the container, one UDP
connect() at a time; each socket's SO_MARK says which uplink the program picked
(0 = main table). In order:

1. weights 2:1:1 -> 400 connects land exactly 200/100/100;
2. a role run with weights 1:1:2 changes the maps, not the program (same ids), keeps
   the counters, and the next 400 connects land 100/100/200;
3. `netlb-multiwan drain wifi` -> wifi gets no connect; a role run keeps the drain and
   changes nothing; so does a restart of the container (systemd boots again);
   `undrain` brings it back;
4. the health tracker (netlb-multiwan-track, a systemd service): wifi's far end loses
   its carrier -> no connect goes to wifi and status says it failed; a connection an
   application held through wifi is reset and works again through another uplink within
   3 s; every transition (drains included) ran the hooks in /etc/netlb-multiwan/hooks.d and
   is one structured journal entry; the tracker killed
   with SIGKILL -> systemd restarts it, it rereads the health file and wifi stays out;
   the carrier back -> wifi gets its share again; the metrics file parses;
5. under 200 TCP connects/s from the balanced cgroup with wifi drained, the inventory
   swaps wifi and lte, then takes lte (now the middle one) out: wifi gets no connect at any
   moment, no connect fails, every connect leaves from the address of the uplink its mark
   names (the document in force), and once the run is over only mobile is used; lte's
   table, rules and unit are gone: the host looks exactly like one provisioned without it;
6. balancer_state=absent after that restart -> the blank host again.
"""
from __future__ import annotations

import base64
import collections
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration import connect_loop
from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import edge, fwmark_edge_vars
from tests.integration.test_role_containers import SNAPSHOT
from tests.lab.fleet import GUEST_CGROUP2, in_cgroup
from tests.lab.netlab import SERVER4
from ansible_collections.netlb.multiwan.plugins.module_utils import events

# The first test pays the module fixture: site.yml runs, traffic, failover and restarts.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CGROUP = "multiwan"
MAIN, WIFI, LTE = 0, 0x100, 0x200
# Sequential UDP connects (nothing is sent); prints each socket's mark as JSON.
MARK_PROBE = """import json, socket, sys
marks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((sys.argv[2], 9))
    marks.append(s.getsockopt(socket.SOL_SOCKET, socket.SO_MARK))
    s.close()
print(json.dumps(marks))
"""
PROBE_PATH = "/root/mark_probe.py"
PORT = 7
ECHO_PORT = 9
STOP_LOAD = "/tmp/netlb-stop-load"
METRICS = "/run/netlb_multiwan.prom"
TRACKER_PID = "systemctl show -p MainPID --value netlb-multiwan-track.service"
PROGS = "bpftool -j cgroup show %s/%s" % (GUEST_CGROUP2, CGROUP)
HOOKS = "/etc/netlb-multiwan/hooks.d"
HOOK_RECORD = "/root/hook-record"
RECORD_HOOK = 'echo "$NETLB_UPLINK|$NETLB_STATE|$NETLB_TIER|$NETLB_ACTIVE_TIER|$NETLB_REASON" >> %s' % HOOK_RECORD


def uplinks(guest, weights, with_lte=True):
    usb, wifi, lte = guest.uplinks
    out = [{"name": "mobile", "interface": "usb0", "gateway": usb.gateway, "weight": weights[0]},
           {"name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway, "table": 100, "mark": WIFI,
            "weight": weights[1]}]
    if with_lte:
        out.append({"name": "lte", "interface": "enp2s0", "gateway": lte.gateway, "table": 101, "mark": LTE,
                    "weight": weights[2]})
    return out


@pytest.fixture(scope="module")
def facts():
    with edge("nlbrt") as (tmp, fleet, guest):
        common = fwmark_edge_vars(tmp, fleet, guest, balancer_policy="weighted",
                                  balancer_metrics_textfile=METRICS, balancer_cgroup=CGROUP)

        def inventory(name, **host):
            path = Path(tmp, name + ".json")
            path.write_text(json.dumps({"multiwan": {"hosts": {"edge": {**common, **host}}}}))
            return path

        inv_211 = inventory("w211", balancer_uplinks=uplinks(guest, (2, 1, 1)))
        inv_112 = inventory("w112", balancer_uplinks=uplinks(guest, (1, 1, 2)))
        inv_two = inventory("two", balancer_uplinks=uplinks(guest, (1, 1), with_lte=False))
        mobile, wifi, lte = uplinks(guest, (1, 1, 2))
        inv_swapped = inventory("swapped", balancer_uplinks=[mobile, lte, wifi])

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def snapshot() -> dict:
            return {key: ssh(command) for key, command in SNAPSHOT.items()}

        def marks(count: int) -> collections.Counter:
            out = fleet.ssh(guest, in_cgroup(CGROUP, "python3 %s %d %s" % (PROBE_PATH, count, SERVER4)))
            assert out.returncode == 0, out.stdout + out.stderr
            return collections.Counter(json.loads(out.stdout))

        def status() -> dict:
            return json.loads(fleet.ssh(guest, "netlb-multiwan status --json").stdout)

        def prog_ids() -> list:
            return sorted(p["id"] for p in json.loads(fleet.ssh(guest, PROGS).stdout or "[]"))

        f: dict = {"blank": snapshot(), "addresses": dict((u.interface, u.address) for u in guest.uplinks)}
        ssh("echo %s | base64 -d > %s" % (base64.b64encode(MARK_PROBE.encode()).decode(), PROBE_PATH))
        f["run_211"] = site_over_ssh(fleet, inv_211)
        for name, body in (("10-record", RECORD_HOOK), ("20-slow", "sleep 60")):
            fleet.exec(guest, ["sh", "-c", "mkdir -p {0} && cat > {0}/{1} && chmod 755 {0}/{1}".format(HOOKS, name)],
                       input="#!/bin/sh\n%s\n" % body)
        f["marks_211"] = marks(400)
        f["progs_211"], f["status_211"] = prog_ids(), status()

        f["run_112"] = site_over_ssh(fleet, inv_112)
        f["progs_112"] = prog_ids()
        f["marks_112"] = marks(400)
        f["status_112"] = status()

        f["drain"] = fleet.ssh(guest, "netlb-multiwan drain wifi")
        f["marks_drained"] = marks(100)
        f["run_drained"] = site_over_ssh(fleet, inv_112, "-v")  # -v: what changed, should anything
        f["marks_drained_after_run"] = marks(100)
        fleet.restart(guest)
        f["marks_drained_after_restart"] = marks(100)
        f["status_drained"] = status()
        f["undrain"] = fleet.ssh(guest, "netlb-multiwan undrain wifi")
        f["marks_undrained"] = marks(400)

        # An operator's drain while a role run is in progress: once the run has planned the
        # document, before it writes its own.
        def drain_during_the_run():
            f["drain_during_run"] = fleet.ssh(guest, "netlb-multiwan drain wifi")

        f["run_during_drain"] = site_over_ssh(fleet, inv_112, during=(
            "netlb.multiwan.balancer : Prepare the host", drain_during_the_run))
        f["marks_drained_during_run"] = marks(100)
        f["status_drained_during_run"] = status()
        f["undrain_after_run"] = fleet.ssh(guest, "netlb-multiwan undrain wifi")
        # The tracker reports a drain within a second (it starts again on the changed
        # document); the link events below come from netlink at once: one after the other.
        end = time.time() + 10
        while time.time() < end and ssh("cat %s" % HOOK_RECORD).count("|undrained|") < 2:
            time.sleep(0.2)

        wifi_peer = fleet._labs[guest.name].uplinks[1].peer
        inet = fleet._labs[guest.name]
        f["track_active"] = ssh("systemctl is-active netlb-multiwan-track.service")
        # An application holding a connection through wifi when it fails (connect_loop.py --hold).
        fleet.exec(guest, ["sh", "-c", "cat > /root/connect_loop.py"], input=Path(connect_loop.__file__).read_text())
        echo = subprocess.Popen(inet._in(inet.inet_netns, [sys.executable, connect_loop.__file__, "--echo",
                                                           str(ECHO_PORT)]), stdin=subprocess.DEVNULL)
        holder = threading.Thread(target=lambda: f.__setitem__("held", fleet.ssh(guest, in_cgroup(
            CGROUP, "python3 /root/connect_loop.py --dst %s --port %d --hold --want-mark %d --duration 7"
            % (SERVER4, ECHO_PORT, WIFI)), timeout=120)))
        holder.start()
        time.sleep(2.0)
        f["wifi_failed_at"] = time.time()
        inet.inet_exec(["ip", "link", "set", wifi_peer, "down"])
        time.sleep(1.0)
        f["marks_wifi_dead"] = marks(100)
        f["status_wifi_dead"] = status()
        f["status_text_wifi_dead"] = ssh("netlb-multiwan status")
        f["tracker_pid"] = ssh(TRACKER_PID).strip()
        ssh("kill -9 %s" % f["tracker_pid"])
        f["marks_tracker_killed"] = marks(100)
        time.sleep(3.0)  # RestartSec=1
        f["tracker_pid_restarted"] = ssh(TRACKER_PID).strip()
        f["health_after_restart"] = json.loads(ssh("cat /run/netlb-multiwan/health.json"))
        f["marks_after_restart"] = marks(100)
        holder.join(120)
        echo.kill()
        echo.wait()
        f["reset_log"] = ssh("journalctl -b --no-pager -u netlb-multiwan-track | grep 'connections* reset'")
        inet.inet_exec(["ip", "link", "set", wifi_peer, "up"])
        time.sleep(3.0)
        f["marks_wifi_back"] = marks(400)
        time.sleep(1.5)
        f["hook_record"] = ssh("cat %s" % HOOK_RECORD)
        f["journal_events"] = [json.loads(line) for line in fleet.ssh(
            guest, "journalctl -o json --no-pager MESSAGE_ID=%s" % events.MESSAGE_ID).stdout.splitlines()]
        f["metrics"] = ssh("cat %s" % METRICS)
        f["counters_for_metrics"] = status()

        server = subprocess.Popen(inet._in(inet.inet_netns, [sys.executable, connect_loop.__file__, "--serve",
                                                             str(PORT)]), stdin=subprocess.DEVNULL)
        try:
            f["drain_for_swap"] = fleet.ssh(guest, "netlb-multiwan drain wifi")
            load = threading.Thread(target=lambda: f.__setitem__("load", fleet.ssh(guest, in_cgroup(
                CGROUP, "python3 /root/connect_loop.py --dst %s --port %d --rate 200 --timeout 0.5 --until-file %s"
                % (SERVER4, PORT, STOP_LOAD)), timeout=600)))
            load.start()
            time.sleep(1.0)
            f["run_swapped"] = site_over_ssh(fleet, inv_swapped)
            f["run_two"] = site_over_ssh(fleet, inv_two)  # lte, the middle uplink now, leaves
            f["run_two_ended"] = time.time()
            time.sleep(1.0)
            ssh("touch %s" % STOP_LOAD)
            load.join(120)
        finally:
            server.kill()
            server.wait()
        f["undrain_after_swap"] = fleet.ssh(guest, "netlb-multiwan undrain wifi")
        f["removed"] = snapshot()
        f["absent"] = site_over_ssh(fleet, inv_two, "-e", "balancer_state=absent")
        f["after_absent"] = snapshot()
        f["run_fresh_two"] = site_over_ssh(fleet, inv_two)
        f["fresh_two"] = snapshot()
        f["journal"] = ssh("journalctl -b --no-pager -u 'netlb-multiwan-*' | tail -40")
    return f


def test_a_drain_made_during_a_role_run_holds_after_it(facts):
    assert facts["drain_during_run"].returncode == 0, facts["drain_during_run"].stderr
    assert facts["run_during_drain"]["rc"] == 0, facts["run_during_drain"]["output"]
    assert facts["marks_drained_during_run"][WIFI] == 0 and sum(facts["marks_drained_during_run"].values()) == 100, \
        facts["marks_drained_during_run"]
    wifi = next(u for u in facts["status_drained_during_run"]["uplinks"] if u["name"] == "wifi")
    assert wifi["drained"] is True, wifi
    assert facts["undrain_after_run"].returncode == 0, facts["undrain_after_run"].stderr


def test_the_tracker_takes_a_dead_uplink_out_and_puts_it_back(facts):
    assert facts["track_active"].strip() == "active", facts["journal"]
    assert facts["marks_wifi_dead"][WIFI] == 0 and sum(facts["marks_wifi_dead"].values()) == 100, \
        str(facts["marks_wifi_dead"]) + facts["journal"]
    wifi = next(u for u in facts["status_wifi_dead"]["uplinks"] if u["name"] == "wifi")
    assert wifi["health"]["state"] == "down" and "no carrier" in wifi["health"]["reason"], wifi
    assert any(p.startswith("wifi: down since") for p in facts["status_wifi_dead"]["problems"])
    assert "health: down" in facts["status_text_wifi_dead"], facts["status_text_wifi_dead"]
    assert facts["marks_wifi_back"] == {MAIN: 100, WIFI: 100, LTE: 200}, str(facts["marks_wifi_back"]) + facts["journal"]


def test_a_connection_held_through_the_failed_uplink_works_again_through_another(facts):
    """wifi's carrier lost under an application that holds a connection through it (a byte
    every 100 ms, echoed, reconnecting on any error): the tracker resets it, the application
    gets ECONNABORTED and works again through another uplink within 3 s."""
    assert facts["held"].returncode == 0, facts["held"].stdout + facts["held"].stderr
    events = json.loads(facts["held"].stdout)["events"]
    fault = facts["wifi_failed_at"]
    assert [e[1] for e in events[:2]] == ["connect", "echo"] and events[0][3] == WIFI, events[:3]
    error = next(e for e in events if e[1] == "error")
    assert error[0] > fault and error[3] == WIFI and error[4] == "ECONNABORTED", (error, facts["journal"])
    working = next(e for e in events if e[1] == "echo" and e[0] > error[0])
    assert working[3] != WIFI and working[0] - fault <= 3.0, (working, working[0] - fault)
    assert "wifi: 1 connection reset" in facts["reset_log"], facts["reset_log"]


def test_every_transition_runs_the_hooks_and_is_a_structured_journal_entry(facts):
    """The drains made with the command, wifi's carrier lost and back: each ran the
    recording hook (the one sleeping 60 s next to it delayed nothing: the failover checks
    above run with it) and is one journal entry with the documented fields."""
    rows = [line.split("|", 4) for line in facts["hook_record"].splitlines()]
    wifi = [r[1] for r in rows if r[0] == "wifi"]
    assert wifi == ["drained", "undrained", "drained", "undrained", "down", "up"], "%s\n%s" % (rows, facts["journal"])
    assert all(r[2] == "1" and r[3] == "1" for r in rows), rows
    down = next(r for r in rows if r[1] == "down")
    assert "wlp1s0" in down[4], down   # the kernel's word: no carrier
    # The container's journal is volatile: the first drain's entry went with the restart.
    entries = [e for e in facts["journal_events"] if e.get("NETLB_UPLINK") == "wifi"]
    assert [e["NETLB_STATE"] for e in entries] == wifi[1:], facts["journal_events"]
    for entry, row in zip(entries, [r for r in rows if r[0] == "wifi"][1:]):
        assert entry["MESSAGE_ID"] == events.MESSAGE_ID and entry["SYSLOG_IDENTIFIER"] == "netlb-multiwan-track"
        assert entry["_SYSTEMD_UNIT"] == "netlb-multiwan-track.service"
        assert (entry["NETLB_REASON"], entry["NETLB_TIER"], entry["NETLB_ACTIVE_TIER"]) == (row[4], "1", "1")
        assert entry["PRIORITY"] == ("4" if row[1] == "down" else "5")
        assert entry["MESSAGE"].startswith("wifi %s: " % row[1])


def test_a_killed_tracker_leaves_balancing_on_and_systemd_restarts_it(facts):
    assert facts["marks_tracker_killed"][WIFI] == 0, facts["marks_tracker_killed"]  # fail-open on the last state
    assert facts["tracker_pid_restarted"] not in ("", "0", facts["tracker_pid"]), facts["journal"]
    wifi = facts["health_after_restart"]["uplinks"]["wifi"]
    assert wifi["state"] == "down" and wifi["transitions"] >= 1, wifi  # reread, not started afresh as up
    assert facts["marks_after_restart"][WIFI] == 0, facts["marks_after_restart"]


def test_the_metrics_file_parses_and_counts_what_the_maps_count(facts):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(facts["metrics"])}
    steered = {s.labels["uplink"]: s.value for s in families["netlb_multiwan_sockets_steered"].samples}
    status = facts["counters_for_metrics"]
    assert steered == {u["name"]: u["connections"] for u in status["uplinks"]}, (steered, facts["metrics"])
    up = {s.labels["uplink"]: s.value for s in families["netlb_multiwan_uplink_up"].samples}
    assert up == {"mobile": 1, "wifi": 1, "lte": 1}
    transitions = {s.labels["uplink"]: s.value for s in families["netlb_multiwan_uplink_transitions"].samples}
    assert transitions["wifi"] >= 2 and transitions["mobile"] == 0


def assert_same(before: dict, after: dict, keys) -> None:
    # A container restart re-creates the lab's veths: new MACs, so new link-local addresses,
    # peer ifindexes (mgmt0@ifN) and the order the kernel lists fe80::/64 routes in.
    def lab_neutral(text):
        text = re.sub(r"@if\d+", "@ifN", text)
        text = re.sub(r"(link/ether|brd) [0-9a-f:]{17}", r"\1 MAC", text)
        text = re.sub(r"fe80::[0-9a-f:]+", "fe80::X", text)
        return sorted(text.splitlines())

    differ = [k for k in keys if lab_neutral(before[k]) != lab_neutral(after[k])]
    assert not differ, "\n".join("`%s` changed:\n--- before\n%s\n--- after\n%s" % (k, before[k], after[k])
                                 for k in differ)


def connections(status: dict) -> dict:
    return {u["name"]: u["connections"] for u in status["uplinks"]}


def test_weights_2_1_1_give_exactly_200_100_100(facts):
    assert facts["run_211"]["rc"] == 0, facts["run_211"]["output"][-3000:]
    assert facts["marks_211"] == {MAIN: 200, WIFI: 100, LTE: 100}, facts["marks_211"]


def test_new_weights_update_the_maps_without_reloading_or_resetting(facts):
    run = facts["run_112"]
    assert run["rc"] == 0 and run["changed"] > 0, run["output"][-3000:]
    assert facts["progs_112"] == facts["progs_211"] and len(facts["progs_211"]) == 4
    assert facts["marks_112"] == {MAIN: 100, WIFI: 100, LTE: 200}, facts["marks_112"]
    before, after = connections(facts["status_211"]), connections(facts["status_112"])
    assert after == {"mobile": before["mobile"] + 100, "wifi": before["wifi"] + 100, "lte": before["lte"] + 200}


def test_a_drain_holds_through_a_role_run_and_a_restart(facts):
    assert facts["drain"].returncode == 0, facts["drain"].stdout + facts["drain"].stderr
    for key in ("marks_drained", "marks_drained_after_run", "marks_drained_after_restart"):
        got = facts[key]
        assert WIFI not in got and set(got) == {MAIN, LTE} and sum(got.values()) == 100, (key, got)
    run = facts["run_drained"]
    assert run["rc"] == 0 and run["changed"] == 0, run["output"][-3000:]
    wifi = next(u for u in facts["status_drained"]["uplinks"] if u["name"] == "wifi")
    assert wifi["drained"] is True, facts["status_drained"]


def test_undrain_brings_the_uplink_back(facts):
    assert facts["undrain"].returncode == 0, facts["undrain"].stdout + facts["undrain"].stderr
    assert facts["marks_undrained"] == {MAIN: 100, WIFI: 100, LTE: 200}, facts["marks_undrained"]


def test_a_removed_uplink_leaves_nothing_behind(facts):
    assert facts["run_two"]["rc"] == 0, facts["run_two"]["output"][-3000:]
    assert facts["run_fresh_two"]["rc"] == 0, facts["run_fresh_two"]["output"][-3000:]
    assert "lookup 101" not in facts["removed"]["rule4"] and "table 101" not in facts["removed"]["route4"]
    assert_same(facts["fresh_two"], facts["removed"], ("link", "addr", "route4", "route6", "rule4", "rule6",
                                                        "cgroups", "units"))


def test_absent_after_a_restart_restores_the_blank_host(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"][-3000:]
    assert_same(facts["blank"], facts["after_absent"], SNAPSHOT)


def test_uplinks_swapped_then_the_middle_one_removed_under_load(facts):
    """Every connect of the load: (unix time, local address, mark, error)."""
    assert facts["drain_for_swap"].returncode == 0, facts["drain_for_swap"].stderr
    assert facts["run_swapped"]["rc"] == 0, facts["run_swapped"]["output"][-3000:]
    assert facts["run_two"]["rc"] == 0, facts["run_two"]["output"][-3000:]
    assert facts["load"].returncode == 0, facts["load"].stdout[-2000:] + facts["load"].stderr
    connects = json.loads(facts["load"].stdout)["connects"]
    seconds = connects[-1][0] - connects[0][0]
    assert len(connects) >= 150 * seconds, (len(connects), seconds)  # about 200 a second throughout
    source = {MAIN: facts["addresses"]["usb0"], LTE: facts["addresses"]["enp2s0"]}
    failed = [c for c in connects if c[3] is not None]
    assert failed == [], failed[:10]
    assert not [c for c in connects if c[2] == WIFI or c[1] == facts["addresses"]["wlp1s0"]], "the drained uplink"
    misrouted = [c for c in connects if c[1] != source.get(c[2])]
    assert misrouted == [], misrouted[:10]
    after = collections.Counter(c[2] for c in connects if c[0] > facts["run_two_ended"])
    assert set(after) == {MAIN}, after
    assert collections.Counter(c[2] for c in connects)[LTE] > 0  # lte had its share before it left
    assert facts["undrain_after_swap"].returncode == 0, facts["undrain_after_swap"].stderr
