"""The controller's plan (plugin_utils/plan.py): validation of a host's inventory, how
each uplink is steered, the routing entries, the balancer_plan filter. The program is one
object for every host: no per-host source is left."""
import os

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.filter import balancer_plan
from ansible_collections.netlb.multiwan.plugins.module_utils import schema
from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan as b

MOBILE = {"name": "mobile", "interface": "usb0", "weight": 2}
WIFI = {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "weight": 1}


def test_each_uplink_is_checked_with_how_it_is_steered():
    got = b.check_uplinks([MOBILE, WIFI], "vrf", "weighted", ["2001:db8:ab::/48", "10.0.0.0/8"])
    assert [(u["name"], u["dev"], u["mark"], u["weight"]) for u in got["uplinks"]] == [
        ("mobile", "", 0, 2), ("wifi", "wifi-vrf", 0, 1)]
    assert got["exclude"] == ["10.0.0.0/8", "2001:db8:ab::/48"]


def test_no_source_of_the_program_is_per_host():
    bpf = os.path.join(os.path.dirname(b.__file__), "..", "..", "files", "bpf")
    assert sorted(os.listdir(bpf)) == ["mptcpify.bpf.c", "multiwan.bpf.c", "multiwan.h"]


@pytest.mark.parametrize("field, bad", [
    ("name", 'wifi"; } int x = 1; /*'),
    ("name", "a*/b"),
    ("name", ""),
    ("interface", "wl p1s0"),
    ("interface", "x" * 16),
    ("vrf", 'wifi-vrf", .mark = 1'),
    ("vrf", "wifi\\vrf"),
    ("weight", 0),
    ("weight", -1),
    ("weight", 1001),
    ("weight", "2"),
    ("weight", True),
    ("tier", 0),
    ("tier", 6),
    ("tier", "2"),
])
def test_injection_and_bad_values_are_refused(field, bad):
    up = dict(WIFI, **{field: bad})
    with pytest.raises(b.ConfigError) as err:
        b.check_uplinks([MOBILE, up], "vrf", "random")
    assert err.value.field == "uplinks[1].%s" % field


@pytest.mark.parametrize("kwargs, field", [
    (dict(steering="ebpf"), "steering"),
    (dict(policy="least_conn"), "policy"),
    (dict(exclude=["10.0.0.0/33"]), "exclude[0]"),
    (dict(exclude=["*/ evil"]), "exclude[0]"),
])
def test_bad_options(kwargs, field):
    args = dict(uplinks=[MOBILE, WIFI], steering="vrf", policy="random")
    args.update(kwargs)
    with pytest.raises(b.ConfigError) as err:
        b.check_uplinks(**args)
    assert err.value.field == field


def test_duplicates_and_steering_mismatch():
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].name: mobile is used twice"):
        b.check_uplinks([MOBILE, dict(WIFI, name="mobile")], "vrf", "random")
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].mark: 0x100 is used by two uplinks"):
        b.check_uplinks([{"name": "a", "interface": "a0", "mark": 0x100},
                         {"name": "c", "interface": "c0", "mark": 0x100}], "fwmark", "random")
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].vrf: is for vrf steering"):
        b.check_uplinks([MOBILE, WIFI], "fwmark", "random")
    with pytest.raises(b.ConfigError, match="only one uplink can stay in the main table"):
        b.check_uplinks([MOBILE, dict(MOBILE, name="m2", interface="usb1")], "vrf", "random")
    with pytest.raises(b.ConfigError, match="uplinks: needs 1 to 16"):
        b.check_uplinks([], "vrf", "random")


WIFI_ROUTED = dict(WIFI, table=10, gateway="10.0.0.1")


def test_the_plan_errors_are_the_schema_s():
    assert b.ConfigError is schema.SchemaError


def test_plan_gives_routing_per_extra_uplink_and_normalised_values():
    got = b.plan([MOBILE, dict(WIFI_ROUTED, gateway6="2001:DB8::0:1")], "vrf", "weighted", ["10.1.2.3/8"], host="h1")
    assert got["routing"] == [{"name": "wifi", "interface": "wlp1s0", "table": 10, "vrf": "wifi-vrf",
                               "routes": [{"dst": "default", "gateway": "10.0.0.1"},
                                          {"dst": "default", "gateway": "2001:db8::1"}]}]
    assert got["exclude"] == ["10.0.0.0/8"] and "bpf" not in got
    assert [u["tier"] for u in got["uplinks"]] == [1, 1]
    backup = b.plan([dict(MOBILE, tier=2), WIFI_ROUTED], "vrf", "weighted")
    assert [u["tier"] for u in backup["uplinks"]] == [2, 1]


def test_plan_fwmark_mark_defaults_to_the_table():
    got = b.plan([MOBILE, {"name": "wifi", "interface": "wlp1s0", "table": 100, "gateway": "10.0.0.1"}],
                 "fwmark", "random")
    assert got["routing"][0]["mark"] == 100 and got["uplinks"][1]["mark"] == 100


@pytest.mark.parametrize("change, steering, field, words", [
    (dict(table=254), "vrf", "uplinks[1].table", "'main' table"),
    (dict(table=0), "vrf", "uplinks[1].table", "'unspec' table"),
    (dict(table=True), "vrf", "uplinks[1].table", "must be an integer"),
    (dict(table=None), "vrf", "uplinks[1].table", "needs a routing table"),
    (dict(table=2 ** 32), "vrf", "uplinks[1].table", "out of range"),
    (dict(gateway="2001:db8::1"), "vrf", "uplinks[1].gateway", "is not an IPv4 address"),
    (dict(gateway="10.0.0.300"), "vrf", "uplinks[1].gateway", "is not a valid IP address"),
    (dict(gateway6="10.0.0.1"), "vrf", "uplinks[1].gateway6", "is not an IPv6 address"),
    (dict(gateway=None), "vrf", "uplinks[1].gateway", "needs a gateway"),
    (dict(vrf=None, mark=0, table=10), "fwmark", "uplinks[1].mark", "must be an integer 1-4294967295"),
])
def test_plan_refuses_bad_routing(change, steering, field, words):
    up = dict(WIFI_ROUTED, **change)
    if steering == "fwmark":
        up.pop("vrf")
    with pytest.raises(schema.SchemaError) as err:
        b.plan([MOBILE, up], steering, "random")
    assert err.value.field == field and words in str(err.value)


def test_plan_refuses_a_shared_table_and_nothing_to_balance():
    with pytest.raises(b.ConfigError, match=r"uplinks\[2\].table: table 10 is also used by wifi"):
        b.plan([MOBILE, WIFI_ROUTED, dict(WIFI_ROUTED, name="w2", interface="w2", vrf="w2-vrf")], "vrf", "random")
    with pytest.raises(b.ConfigError, match="uplinks: must be a list"):
        b.plan("mobile", "vrf", "random")


def test_filter_names_the_inventory_variable():
    with pytest.raises(AnsibleFilterError, match=r"^balancer_uplinks\[1\]\.weight: must be an integer 1-1000, got 0$"):
        balancer_plan.balancer_plan([MOBILE, dict(WIFI_ROUTED, weight=0)], "vrf", "random")
    with pytest.raises(AnsibleFilterError, match=r"^balancer_exclude\[0\]: "):
        balancer_plan.balancer_plan([MOBILE, WIFI_ROUTED], "vrf", "random", exclude=["10.0.0.0/33"])
    with pytest.raises(AnsibleFilterError, match=r"^balancer_steering: must be one of vrf, fwmark"):
        balancer_plan.balancer_plan([MOBILE, WIFI_ROUTED], "ebpf", "random")
    got = balancer_plan.balancer_plan([MOBILE, WIFI_ROUTED], "vrf", "random", exclude=None, host="h")
    assert got["routing"][0]["table"] == 10


TRACK = {"method": "icmp", "targets": [], "interval_ms": 250, "timeout_ms": 500, "down": 3, "up": 4, "quorum": 1,
         "port": 0}


def test_plan_tracks_every_uplink_unless_it_opts_out():
    planned = b.plan([MOBILE, dict(WIFI_ROUTED, track={"targets": ["9.9.9.9"], "up": 8})], "vrf", "random",
                     track=TRACK)["track"]
    assert planned["mobile"] == TRACK
    assert planned["wifi"] == dict(TRACK, targets=["9.9.9.9"], up=8)
    assert b.plan([dict(MOBILE, track=False), WIFI_ROUTED], "vrf", "random", track=TRACK)["track"]["mobile"] is None
    assert b.plan([MOBILE, WIFI_ROUTED], "vrf", "random")["track"] == {"mobile": None, "wifi": None}


def test_filter_names_the_tracking_knob_or_the_uplink():
    with pytest.raises(AnsibleFilterError, match=r"^balancer_track_interval_ms: must be an integer 50-60000"):
        balancer_plan.balancer_plan([MOBILE, WIFI_ROUTED], "vrf", "random", track=dict(TRACK, interval_ms=1))
    with pytest.raises(AnsibleFilterError, match=r"^balancer_uplinks\[1\]\.track\.method: must be one of"):
        balancer_plan.balancer_plan([MOBILE, dict(WIFI_ROUTED, track={"method": "arp"})], "vrf", "random",
                                    track=TRACK)
