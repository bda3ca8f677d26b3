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

import signal
import time
from pathlib import Path

import pytest

from tests.integration.tracker_lab import (Tracker, break_uplink, connect_loop, failover_figures,
                                           fault_and_repair, finish, repair_uplink, steered_to, tracker_host)

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
