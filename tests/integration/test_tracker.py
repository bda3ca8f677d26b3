"""netlb-multiwan-track (module_utils/tracker.py) on this machine's kernel: fwmark
steering over three lab uplinks, the real program and maps, real probes, the
default settings (tests/integration/tracker_lab.py builds the host).

While a TCP connect loop in the balanced cgroup runs at 200 connects/s, the
test breaks wlp1s0 from the internet side:
- carrier loss (its peer end set down): no new connect goes to it after 0.3 s;
- silent failure (the far side drops everything, the link stays up): after 1.5 s;
- both: it gets connects again within 3 s of the repair, and no connect fails
  after detection;
- all three uplinks silent: sockets are left alone (main table), as without the
  balancer, and balancing recovers.
Also: SIGKILL of the tracker keeps the last state (fail-open) and a new tracker
rereads it; the metrics file parses with prometheus-client and matches the maps.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.tracker_lab import (Tracker, break_uplink, connect_loop, failover_figures,
                                           fault_and_repair, finish, held, hold, repair_uplink, steered_to,
                                           tracker_host, transfer)

pytestmark = pytest.mark.hostkernel

CARRIER_LIMIT, SILENT_LIMIT, RECOVERY_LIMIT = 0.3, 1.5, 3.0


@pytest.fixture(scope="module")
def host():
    with tracker_host() as host:
        yield host


@pytest.fixture
def tracker(host):
    t = Tracker(host)
    yield t
    t.stop()


@pytest.mark.parametrize("how, limit", [("carrier", CARRIER_LIMIT), ("silent", SILENT_LIMIT)])
def test_a_dead_uplink_gets_no_new_connects_then_comes_back(host, tracker, how, limit):
    fault, repair, connects = fault_and_repair(host, how)
    figures = failover_figures(connects, fault, repair)
    before = [c for c in connects if c[0] < fault]
    assert len(before) / (fault - connects[0][0]) >= 100, len(before)  # a steady >= 100 connects/s
    assert {steered_to(c) for c in before} == {"usb0", "wlp1s0", "wwan0"}
    assert figures["detection"] <= limit, "%s: wlp1s0 still got connects %.3f s after the fault\n%s" % (
        how, figures["detection"], tracker.output())
    assert not figures["failed_after_detection"], figures["failed_after_detection"][:5]
    assert figures["recovery"] is not None and figures["recovery"] <= RECOVERY_LIMIT, (figures, tracker.output())
    log = tracker.output()
    assert "wifi down: " in log and "wifi up: " in log and "rtt" in log and "loss" in log


def test_all_uplinks_down_leaves_sockets_alone_then_recovers(host, tracker):
    fault, repair, connects = fault_and_repair(host, "silent", ("usb0", "wlp1s0", "wwan0"), duration=9.0)
    during = [c for c in connects if fault + SILENT_LIMIT < c[0] < repair]
    assert during and {steered_to(c) for c in during} == {"usb0"}, "not as without the balancer: %s" % during[:5]
    after = [c for c in connects if c[0] > repair + RECOVERY_LIMIT]
    assert {steered_to(c) for c in after} == {"usb0", "wlp1s0", "wwan0"}, tracker.output()
    assert all(c[3] is None for c in after), [c for c in after if c[3]][:5]


def test_sigkill_keeps_the_last_state_and_a_new_tracker_rereads_it(host, tracker):
    break_uplink(host, "wlp1s0", "carrier")
    again = None
    try:
        tracker.wait_for(lambda h: h["wifi"]["state"] == "down", "wifi down")
        tracker.stop(signal.SIGKILL)
        connects = finish(connect_loop(host, 1.0))
        assert connects and "wlp1s0" not in {steered_to(c) for c in connects}  # fail-open on the last state
        again = Tracker(host, wait_up=False)
        time.sleep(1.0)
        wifi = again.health()["wifi"]
        assert wifi["state"] == "down" and wifi["transitions"] >= 1, wifi  # reread, not started afresh as up
        assert "wlp1s0" not in {steered_to(c) for c in finish(connect_loop(host, 1.0))}
    finally:
        repair_uplink(host, "wlp1s0", "carrier")
    again.wait_for(lambda h: h["wifi"]["state"] == "up", "wifi back up")
    again.stop()


def test_metrics_parse_and_match_the_counters_map(host, tracker):
    from prometheus_client.parser import text_string_to_metric_families

    finish(connect_loop(host, 1.0))
    time.sleep(1.5)  # the tracker rewrites the file every second
    text = Path(host["doc"]["metrics_textfile"]).read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    steered = {s.labels["uplink"]: s.value for s in families["netlb_multiwan_sockets_steered"].samples}
    counters = host["cg"].counters()
    assert steered == {"mobile": counters[0]["steered"], "wifi": counters[1]["steered"],
                       "lte": counters[2]["steered"]}
    up = {s.labels["uplink"]: s.value for s in families["netlb_multiwan_uplink_up"].samples}
    assert up == {"mobile": 1, "wifi": 1, "lte": 1}
    for name in ("uplink_transitions", "probe_rtt_seconds", "probe_loss_ratio", "probes_sent",
                 "sockets_skipped", "setsockopt_errors"):
        assert "netlb_multiwan_" + name in families, sorted(families)
    assert text.count("# HELP ") == text.count("# TYPE ") == len(families)
    from ansible_collections.netlb.multiwan.plugins.module_utils.datapath import SKIP_REASONS
    skipped = families["netlb_multiwan_sockets_skipped"].samples
    assert sorted(s.labels["reason"] for s in skipped) == sorted(SKIP_REASONS), skipped


def metric_value(host, name):
    from prometheus_client.parser import text_string_to_metric_families

    text = Path(host["doc"]["metrics_textfile"]).read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return families["netlb_multiwan_" + name].samples[0].value


def metric_when(host, name, condition, timeout: float = 10.0):
    """The metric's value once *condition* holds for it (the tracker rewrites the file every
    second, later on a loaded machine); the last value read when it never does."""
    end, value = time.time() + timeout, None
    while True:
        try:
            value = metric_value(host, name)
        except (KeyError, IndexError, OSError):
            value = None
        if (value is not None and condition(value)) or time.time() >= end:
            return value
        time.sleep(0.1)


def record_hook(host):
    """A hook next to the state document recording each event's fields; the record's path."""
    hooks = host["state"].parent / "hooks.d"
    hooks.mkdir(exist_ok=True)
    record = host["tmp"] / "hook-record"
    record.write_text("")
    (hooks / "10-record").write_text('#!/bin/sh\necho "$NETLB_UPLINK|$NETLB_STATE|$NETLB_TIER|$NETLB_ACTIVE_TIER|'
                                     '$NETLB_REASON" >> %s\n' % record)
    (hooks / "10-record").chmod(0o755)
    return record


def test_a_backup_tier_takes_every_connect_only_while_the_first_tier_is_down(host):
    """mobile tier 2 (a backup, as pfSense's gateway tiers): nothing while wifi or lte is up,
    everything while both are down, nothing again once wifi is back; no reload."""
    original = host["state"].read_text()
    doc = json.loads(original)
    doc["uplinks"][0]["tier"] = 2
    host["state"].write_text(json.dumps(doc, indent=2))
    programs = host["cg"].program_ids()
    record = record_hook(host)
    tracker = Tracker(host)
    broken = []
    try:
        first = [steered_to(c) for c in finish(connect_loop(host, 0.5))]
        assert len(first) >= 50 and set(first) == {"wlp1s0", "wwan0"}, first
        for ifname in ("wlp1s0", "wwan0"):
            break_uplink(host, ifname, "silent")
            broken.append(ifname)
        tracker.wait_for(lambda h: h["wifi"]["state"] == h["lte"]["state"] == "down", "wifi and lte down")
        backup = finish(connect_loop(host, 0.5))
        assert len(backup) >= 50 and {steered_to(c) for c in backup} == {"usb0"}, backup[:5]
        assert all(c[3] is None for c in backup), [c for c in backup if c[3]][:5]
        time.sleep(1.2)  # the metrics file is rewritten every second
        assert metric_value(host, "active_tier") == 2
        repair_uplink(host, "wlp1s0", "silent")
        broken.remove("wlp1s0")
        tracker.wait_for(lambda h: h["wifi"]["state"] == "up", "wifi back up")
        back = [steered_to(c) for c in finish(connect_loop(host, 0.5))]
        assert len(back) >= 50 and set(back) == {"wlp1s0"}, back
        assert host["cg"].program_ids() == programs  # maps only: the program never reloaded
        time.sleep(0.3)
        tiers = [line.split("|", 4)[1:4] for line in record.read_text().splitlines() if "|tier|" in line]
        assert tiers == [["tier", "2", "2"], ["tier", "1", "1"]], record.read_text()
    finally:
        for ifname in broken:
            repair_uplink(host, ifname, "silent")
        tracker.stop()
        host["state"].write_text(original)
        record.with_name("hooks.d").joinpath("10-record").unlink()


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "no_reset"])
def test_a_connection_stuck_on_a_dead_uplink_is_reset_and_works_again_through_another(host, reset):
    """An application holding a connection through wifi (a byte every 100 ms, echoed; it
    reconnects on any error) when wifi's far end goes silent: with the reset it works
    again through another uplink within 3 s; with wifi's track.reset false it is still
    stuck 20 s later. A connection on mobile is untouched either way."""
    original = host["state"].read_text()
    if not reset:
        doc = json.loads(original)
        doc["uplinks"][1]["track"] = {"reset": False}   # wifi's own setting over the default
        host["state"].write_text(json.dumps(doc, indent=2))
    tracker = Tracker(host)
    resets_before = tracker.health()["wifi"].get("connections_reset", 0)   # counted across restarts
    stuck_for = 3.0 if reset else 20.0
    on_wifi, on_mobile = hold(host, 2.0 + stuck_for + 1.0, 11), hold(host, 2.0 + stuck_for + 1.0, 0)
    try:
        time.sleep(2.0)
        fault = break_uplink(host, "wlp1s0", "silent")
        wifi, mobile = held(on_wifi), held(on_mobile)
        resets = tracker.health()["wifi"]["connections_reset"] - resets_before
    finally:
        repair_uplink(host, "wlp1s0", "silent")
        tracker.stop()
        host["state"].write_text(original)
    assert [e[1] for e in wifi[:2]] == ["connect", "echo"] and wifi[0][3] == 11, wifi[:3]
    after = [e for e in wifi if e[0] > fault]
    if reset:
        error = next(e for e in after if e[1] == "error")
        assert error[3] == 11 and error[4] == "ECONNABORTED", error
        working = next(e for e in after if e[1] == "echo" and e[3] != 11)
        print("reset: ECONNABORTED %.2f s, working again %.2f s after the fault" % (error[0] - fault,
                                                                                   working[0] - fault))
        assert working[0] - fault <= 3.0, (working[0] - fault, after[:5], tracker.output())
        assert resets >= 1 and "wifi: 1 connection reset" in tracker.output()
    else:
        assert not [e for e in after if e[1] != "echo"], after[:5]          # no error, no reconnect
        assert not [e for e in after if e[0] > fault + 0.5], after[-3:]    # and nothing echoed
        assert after == [] or after[-1][0] < fault + 0.5
        assert resets == 0 and "wifi down" in tracker.output()
    assert [e[1] for e in mobile].count("connect") == 1 and not [e for e in mobile if e[1] == "error"], mobile[:5]
    assert mobile[-1][1] == "echo" and mobile[-1][0] > fault + stuck_for, mobile[-3:]


def test_hooks_record_every_transition_and_a_slow_hook_delays_no_failover(host):
    """hooks.d: one hook records each transition's environment, another sleeps 60 s on
    each; failover and recovery keep their limits, twice in a row."""
    record = record_hook(host)
    hooks = record.with_name("hooks.d")
    (hooks / "20-slow").write_text("#!/bin/sh\nsleep 60\n")
    (hooks / "20-slow").chmod(0o755)
    tracker = Tracker(host)
    time.sleep(0.5)
    record.write_text("")  # from here: a tracker started with every uplink up
    try:
        for _ in range(2):
            fault, repair, connects = fault_and_repair(host, "silent")
            figures = failover_figures(connects, fault, repair)
            assert figures["detection"] <= SILENT_LIMIT, (figures, tracker.output())
            assert figures["recovery"] is not None and figures["recovery"] <= RECOVERY_LIMIT, (figures, tracker.output())
        time.sleep(0.5)
        rows = [line.split("|", 4) for line in record.read_text().splitlines()]
    finally:
        tracker.stop()
        subprocess.run(["pkill", "-f", "^/bin/sh %s" % (hooks / "20-slow")], check=False)
        for hook in hooks.iterdir():
            hook.unlink()
    assert [r[:4] for r in rows] == [["wifi", "down", "1", "1"], ["wifi", "up", "1", "1"]] * 2, rows
    assert rows[0][4].startswith("3 probe rounds in a row without") and rows[1][4] == "4 good probe rounds in a row"


def test_a_spent_data_budget_drains_the_uplink_until_its_next_period(host):
    """wifi with budget {bytes: 2M, period: day}: 3 MB through wifi (6 MB on the wire, both
    ways) spends it - no new connect goes to wifi, the health file and the metrics say so;
    a new tracker (a restart) keeps the usage; with the clock a day later (the tracker's
    injected time) wifi is back and its usage starts again from zero."""
    original = host["state"].read_text()
    doc = json.loads(original)
    doc["uplinks"][1]["budget"] = {"bytes": 2000000, "period": "day", "reset": None, "when_spent": "drain"}
    host["state"].write_text(json.dumps(doc, indent=2))
    usage = host["tmp"] / "usage.json"
    usage.unlink(missing_ok=True)
    record = record_hook(host)
    tracker = Tracker(host)
    try:
        transfer(host, 3000000, 11)
        tracker.wait_for(lambda b: b and b["wifi"]["spent"], "wifi's budget spent", part="budgets")
        connects = finish(connect_loop(host, 0.5))
        assert len(connects) >= 50 and "wlp1s0" not in {steered_to(c) for c in connects}
        assert metric_when(host, "uplink_budget_spent", lambda v: v == 1) == 1, tracker.output()
        assert metric_when(host, "uplink_budget_used_bytes", lambda v: v >= 2000000) >= 2000000
        used = tracker.health(part="budgets")["wifi"]["used"]
        assert used >= 2000000
        assert metric_value(host, "uplink_budget_bytes") == 2000000
        tracker.stop()

        tracker = Tracker(host)   # a restart: the usage file carries the period on
        budgets = tracker.health(own=True, part="budgets")
        assert budgets["wifi"]["spent"] and budgets["wifi"]["used"] >= used, budgets
        assert "wlp1s0" not in {steered_to(c) for c in finish(connect_loop(host, 0.3))}
        tracker.stop()

        tracker = Tracker(host, clock_offset=86400)   # the next day
        tracker.wait_for(lambda b: b and not b["wifi"]["spent"], "wifi renewed", part="budgets")
        assert tracker.health(part="budgets")["wifi"]["used"] < 200000
        back = [steered_to(c) for c in finish(connect_loop(host, 0.5))]
        assert "wlp1s0" in back, back
        time.sleep(0.3)
        states = [line.split("|")[:2] for line in record.read_text().splitlines() if line.startswith("wifi|")]
        assert states == [["wifi", "spent"], ["wifi", "renewed"]], record.read_text()
    finally:
        tracker.stop()
        host["state"].write_text(original)
        record.with_name("hooks.d").joinpath("10-record").unlink()
