"""Validation and rendering of the per-host BPF config (what ends up in C)."""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_config as b

MOBILE = {"name": "mobile", "interface": "usb0", "weight": 2}
WIFI = {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "weight": 1}


def test_the_header_holds_only_what_is_fixed_per_host():
    text = b.render(b.build_context([MOBILE, WIFI], "vrf", "weighted", ["10.0.0.0/8", "2001:db8:ab::/48"]))
    assert "#define MW_STEERING MW_STEER_VRF" in text and "#define MW_NUM_UPLINKS 2" in text
    assert '{ .dev = "wifi-vrf", .mark = 0 }, /* 1: wifi: wlp1s0 */' in text
    # policy, weights and exclusions are runtime state, in maps
    assert "POLICY" not in text and "weight" not in text and "10.0.0.0" not in text


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
])
def test_injection_and_bad_values_are_refused(field, bad):
    up = dict(WIFI, **{field: bad})
    with pytest.raises(b.ConfigError) as err:
        b.build_context([MOBILE, up], "vrf", "random")
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
        b.build_context(**args)
    assert err.value.field == field


def test_duplicates_and_steering_mismatch():
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].name: mobile is used twice"):
        b.build_context([MOBILE, dict(WIFI, name="mobile")], "vrf", "random")
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].mark: 0x100 is used by two uplinks"):
        b.build_context([{"name": "a", "interface": "a0", "mark": 0x100},
                         {"name": "c", "interface": "c0", "mark": 0x100}], "fwmark", "random")
    with pytest.raises(b.ConfigError, match="uplinks\\[1\\].vrf: is for vrf steering"):
        b.build_context([MOBILE, WIFI], "fwmark", "random")
    with pytest.raises(b.ConfigError, match="only one uplink can stay in the main table"):
        b.build_context([MOBILE, dict(MOBILE, name="m2", interface="usb1")], "vrf", "random")
    with pytest.raises(b.ConfigError, match="uplinks: needs 1 to 16"):
        b.build_context([], "vrf", "random")
