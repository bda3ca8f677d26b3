"""What the health tracker probes when the inventory names no target."""
from ansible_collections.netlb.multiwan.plugins.module_utils import tracker


def doc(**wifi):
    return {"uplinks": [{"name": "mobile", "interface": "usb0", "gateway": "192.0.2.1", "track": {}},
                        dict({"name": "wifi", "interface": "wlp1s0", "track": {}}, **wifi),
                        {"name": "lte", "interface": "wwan0", "gateway": "203.0.113.1", "track": None}]}


def test_the_recorded_gateway_first_then_the_default_route_of_now():
    asked = []

    def gateway_of(up):
        asked.append(up["name"])
        return "198.51.100.1"

    found = tracker.tracked(doc(), gateway_of)
    assert [(slot, up["name"], s["targets"]) for slot, up, s in found] == [
        (0, "mobile", ["192.0.2.1"]), (1, "wifi", ["198.51.100.1"])]
    assert asked == ["wifi"], "only an uplink with no recorded gateway is looked up; an untracked one never"


def test_an_uplink_with_no_gateway_at_all_is_not_probed():
    assert [up["name"] for _slot, up, _s in tracker.tracked(doc(), lambda up: None)] == ["mobile"]
    assert [up["name"] for _slot, up, _s in tracker.tracked(doc(gateway6="2001:db8:2::1"))] == ["mobile", "wifi"]
