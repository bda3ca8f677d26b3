"""The health tracker's decisions (module_utils/health.py), its settings (schema.track),
its metrics text and how the maps take its word (health.runtime_uplinks). The tracker
itself runs against real links and probes in tests/integration/test_tracker.py."""
import json

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath, health, schema, tracker


def rounds(state, results, start=0.0, step=0.25):
    """Feed probe rounds (True: answered); the transitions, with their times."""
    out = []
    for i, ok in enumerate(results):
        change = state.round(1 if ok else 0, 1, start + i * step, rtt_ms=0.5 if ok else None)
        if change:
            out.append((change["state"], change["at"]))
    return out


def test_down_after_three_failed_rounds_up_after_four_good_ones():
    state = health.UplinkHealth("wifi")
    assert rounds(state, [True, False, False, True, False, False, False]) == [("down", 1.5)]
    assert rounds(state, [True, True, True, False, True, True, True, True], start=2.0) == [("up", 3.75)]
    assert state.transitions == 2 and state.probes_lost == 6


def test_a_flapping_link_does_not_flap_the_balancer():
    state = health.UplinkHealth("wifi")
    assert rounds(state, [False, False, True] * 10) == []
    state = health.UplinkHealth("wifi", state="down")
    assert rounds(state, [True, True, True, False] * 10) == []


def test_carrier_loss_is_down_at_once_and_back_only_through_probes():
    state = health.UplinkHealth("wifi")
    change = state.link(False, 1.0, "wlp1s0 has no carrier")
    assert change["state"] == "down" and change["reason"] == "wlp1s0 has no carrier"
    assert state.link(True, 1.1, "usable") is None and state.state == "down"
    assert rounds(state, [True] * 4, start=1.2) == [("up", 1.95)]


def test_quorum_of_targets():
    state = health.UplinkHealth("wifi", {"quorum": 2, "down": 1})
    assert state.round(2, 3, 0.0) is None
    assert state.round(1, 3, 0.25)["state"] == "down"


def test_default_settings_meet_the_detection_goals_and_traffic_is_documented():
    d = health.DEFAULTS
    silent = d["interval_ms"] * (d["down"] - 1) + d["timeout_ms"] + d["interval_ms"]  # worst case, ms
    recovery = d["interval_ms"] * d["up"]
    assert silent <= 1500 and recovery <= 3000
    probes, volume = health.probe_traffic_per_hour(d)
    assert probes == 14400 and volume == 14400 * 100  # the role's defaults say 1.4 MB per uplink and hour


def test_track_settings_are_validated_naming_the_field():
    defaults = dict(health.DEFAULTS, targets=[], port=0)
    assert schema.track(None, "uplinks[1].track", defaults)["interval_ms"] == 250
    assert schema.track(False, "uplinks[1].track", defaults) is None
    assert schema.track({"targets": ["2001:DB8::1"]}, "t", defaults)["targets"] == ["2001:db8::1"]
    for bad, field in (({"method": "ping"}, "t.method"), ({"interval_ms": 5}, "t.interval_ms"),
                       ({"targets": ["nope"]}, r"t.targets\[0\]"), ({"quorum": 2, "targets": ["10.0.0.1"]}, "t.quorum"),
                       ({"every": 1}, "t.every"), ("often", "t"), ({"timeout_ms": 60000}, "t.timeout_ms")):
        with pytest.raises(schema.SchemaError, match="^%s: " % field):
            schema.track(bad, "t", defaults)


def test_maps_take_the_trackers_word_only_for_tracked_uplinks(tmp_path):
    path = tmp_path / "health.json"
    path.write_text(json.dumps({"uplinks": {"wifi": {"state": "down"}, "lte": {"state": "down"}}}))
    doc = {"health_file": str(path), "uplinks": [{"name": "wifi", "track": {}}, {"name": "lte", "track": None},
                                                 {"name": "mobile", "track": {}}]}
    assert [u["down"] for u in health.runtime_uplinks(doc)] == [True, False, False]
    path.write_text("{not json")
    assert [u["down"] for u in health.runtime_uplinks(doc)] == [False, False, False]


def test_metrics_have_one_help_and_type_each_and_prometheus_names():
    doc = {"uplinks": [{"name": "mobile", "drained": False}, {"name": "wifi", "drained": True}]}
    states = {"mobile": health.UplinkHealth("mobile"), "wifi": health.UplinkHealth("wifi", state="down")}
    states["mobile"].rtt_ms = 1.5
    counters = [{"steered": 10, "errors": 0}, {"steered": 5, "errors": 1}] + [{"steered": 0, "errors": 0}] * 14
    counters += [{"steered": 3 if reason == "excluded" else 0, "errors": 0} for reason in datapath.SKIP_REASONS]
    text = tracker.render_metrics(doc, states, counters)
    assert 'netlb_multiwan_uplink_up{uplink="wifi"} 0' in text
    assert 'netlb_multiwan_sockets_steered_total{uplink="mobile"} 10' in text
    assert 'netlb_multiwan_sockets_skipped_total{reason="excluded"} 3' in text
    assert 'netlb_multiwan_sockets_skipped_total{reason="local"} 0' in text
    assert 'netlb_multiwan_probe_rtt_seconds{uplink="mobile"} 0.001500' in text
    helps = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# HELP")]
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert helps == types and len(set(helps)) == len(helps)
    assert all(name.startswith("netlb_multiwan_") for name in helps)
