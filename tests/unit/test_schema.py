"""The one schema of the inventory's values (module_utils/schema.py) and the balancer_slice filter."""
import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.netlb.multiwan.plugins.filter import balancer_slice as slice_filter
from ansible_collections.netlb.multiwan.plugins.module_utils import schema as s
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model


def refused(check, *args, **kwargs):
    """The SchemaError of check(*args) (its field is args[1] unless given)."""
    with pytest.raises(s.SchemaError) as err:
        check(*args, **kwargs)
    return err.value


def test_error_names_the_field():
    err = s.SchemaError("uplinks[1].weight", "must be an integer 1-1000, got 0")
    assert err.field == "uplinks[1].weight" and err.message == "must be an integer 1-1000, got 0"
    assert str(err) == "uplinks[1].weight: must be an integer 1-1000, got 0"


def test_modules_errors_are_the_schemas():
    assert vrf_model.ValidationError is s.SchemaError
    assert vrf_model.RESERVED_TABLES is s.RESERVED_TABLES and vrf_model.MAX_U32 == s.U32 == 2 ** 32 - 1


@pytest.mark.parametrize("value", [1, 5, 10])
def test_integer_accepts_the_range(value):
    assert s.integer(value, "n", 1, 10) == value


@pytest.mark.parametrize("value", [0, 11, -1, True, False, "5", 5.0, None, [5]])
def test_integer_refuses_out_of_range_bool_and_other_types(value):
    err = refused(s.integer, value, "n", 1, 10)
    assert err.field == "n" and str(err) == "n: must be an integer 1-10, got %r" % (value,)


def test_choice():
    assert s.choice("vrf", "steering", ("vrf", "fwmark")) == "vrf"
    err = refused(s.choice, "ebpf", "steering", ("vrf", "fwmark"))
    assert str(err) == "steering: must be one of vrf, fwmark, got 'ebpf'"


@pytest.mark.parametrize("name", ["wifi", "a", "mobile_2", "LTE-1", "x" * 32])
def test_good_labels(name):
    assert s.label(name, "uplinks[0].name") == name


@pytest.mark.parametrize("name", ["", "x" * 33, "wi fi", "a.b", 'a"b', "a*/b", "é", None, 7])
def test_bad_labels(name):
    err = refused(s.label, name, "uplinks[0].name")
    assert err.field == "uplinks[0].name" and "is not a valid label" in str(err)


@pytest.mark.parametrize("name", ["eth0", "wlp1s0", "wifi-vrf", "vlan.10", "a_b", "x" * 15, "..."])
def test_good_ifnames(name):
    assert s.ifname(name, "interface") == name


@pytest.mark.parametrize("name", ["", "x" * 16, "wl p1s0", "a/b", "a:b", "wifi\\vrf", "é", ".", "..", None, 0])
def test_bad_ifnames(name):
    err = refused(s.ifname, name, "uplinks[1].interface")
    assert err.field == "uplinks[1].interface" and "is not a valid interface name" in str(err)


def test_ifname_message_says_what_kind_of_name():
    assert "is not a valid device name" in str(refused(s.ifname, "a b", "uplinks[1].vrf", kind="device"))


@pytest.mark.parametrize("value", [1, 10, 252, 256, 2 ** 32 - 1])
def test_good_tables(value):
    assert s.table(value, "uplinks[1].table") == value


@pytest.mark.parametrize("value, name", [(0, "unspec"), (253, "default"), (254, "main"), (255, "local")])
def test_reserved_tables_are_named(value, name):
    err = refused(s.table, value, "uplinks[1].table")
    assert err.field == "uplinks[1].table"
    assert "%d is the kernel's '%s' table" % (value, name) in str(err)


@pytest.mark.parametrize("value", [-1, 2 ** 32])
def test_tables_out_of_range(value):
    assert "is out of range (1-252 or 256-4294967295)" in str(refused(s.table, value, "table"))


@pytest.mark.parametrize("value", [True, "10", None, 10.0])
def test_tables_must_be_integers(value):
    err = refused(s.table, value, "table")
    assert err.field == "table" and "must be an integer" in str(err)


def test_table_field_defaults_to_table():
    assert refused(s.table, 254).field == "table"


def test_marks_and_masks():
    assert s.mark(0x100, "mark") == 0x100 and s.mark(2 ** 32 - 1, "mark") == 2 ** 32 - 1
    for bad in (0, 2 ** 32, True, "0x100"):
        assert refused(s.mark, bad, "uplinks[0].mark").field == "uplinks[0].mark"
    assert s.mark_mask(0x100, 0xff00, "mask") == 0xff00
    assert s.mark_mask(0x100, s.U32) == s.U32
    err = refused(s.mark_mask, 0x100, 0xff, "mask")
    assert str(err) == "mask: 0xff hides bits of mark 0x100"
    assert refused(s.mark_mask, 0x100, 0, "mask").field == "mask"


def test_rule_priority():
    assert s.rule_priority(1, "priority") == 1 and s.rule_priority(32765, "priority") == 32765
    for bad in (0, 32766, True, "10000"):
        err = refused(s.rule_priority, bad, "balancer_rule_priority")
        assert str(err).startswith("balancer_rule_priority: must be an integer 1-32765")


def test_weights_allow_zero_only_when_asked():
    assert s.weight(1, "w") == 1 and s.weight(1000, "w") == 1000
    assert str(refused(s.weight, 0, "uplinks[1].weight")) == "uplinks[1].weight: must be an integer 1-1000, got 0"
    assert str(refused(s.weight, 1001, "w")) == "w: must be an integer 1-1000, got 1001"
    assert s.weight(0, "weight", allow_zero=True) == 0
    assert str(refused(s.weight, 1001, "weight", allow_zero=True)) == "weight: must be an integer 0-1000, got 1001"
    assert refused(s.weight, True, "w", allow_zero=True).field == "w"


def test_metric():
    assert s.metric(0, "m") == 0 and s.metric(2 ** 32 - 1, "m") == 2 ** 32 - 1
    assert str(refused(s.metric, -1, "routes[0].metric")) == "routes[0].metric: must be an integer 0-4294967295, got -1"


@pytest.mark.parametrize("value, version, normal", [
    ("10.0.0.1", None, "10.0.0.1"),
    (" 10.0.0.1 ", 4, "10.0.0.1"),
    ("2001:DB8:0::0:1", None, "2001:db8::1"),
    ("fe80::1", 6, "fe80::1"),
])
def test_good_addresses_are_normalised(value, version, normal):
    assert s.address(value, "gateway", version) == normal


@pytest.mark.parametrize("value", ["10.0.0.256", "; reboot", "", "10.0.0.0/24", "fe80::1%eth0", None, 167772161, True])
def test_bad_addresses(value):
    err = refused(s.address, value, "uplinks[1].gateway")
    assert err.field == "uplinks[1].gateway" and "is not a valid IP address" in str(err)


def test_address_of_the_wrong_family():
    assert str(refused(s.address, "2001:db8::1", "uplinks[1].gateway", 4)) == \
        "uplinks[1].gateway: 2001:db8::1 is not an IPv4 address"
    assert str(refused(s.address, "10.0.0.1", "uplinks[1].gateway6", version=6)) == \
        "uplinks[1].gateway6: 10.0.0.1 is not an IPv6 address"


@pytest.mark.parametrize("value, normal", [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.1.2.3/8", "10.0.0.0/8"),        # host bits are cleared, not refused
    ("203.0.113.7/24", "203.0.113.0/24"),
    ("10.9.9.9", "10.9.9.9/32"),
    ("2001:db8:ab:1::5/48", "2001:db8:ab::/48"),
    ("2001:DB8::/32", "2001:db8::/32"),
    ("0.0.0.0/0", "0.0.0.0/0"),
])
def test_prefixes_are_normalised(value, normal):
    assert s.prefix(value, "exclude[0]") == normal


@pytest.mark.parametrize("value", ["10.0.0.0/33", "300.1.1.0/24", "*/ evil", "", "default", "fe80::%eth0/64", None, 10])
def test_bad_prefixes(value):
    err = refused(s.prefix, value, "exclude[3]")
    assert err.field == "exclude[3]" and "is not a prefix in CIDR notation" in str(err)


def test_prefix_of_the_wrong_family():
    assert str(refused(s.prefix, "10.0.0.0/8", "dst", version=6)) == "dst: 10.0.0.0/8 is not an IPv6 prefix"


@pytest.mark.parametrize("name", ["", "multiwan", "multi-wan", "a_b-c_d-e", "X1"])
def test_good_slice_names(name):
    assert s.slice_name(name, "balancer_slice") == name
    assert slice_filter.balancer_slice(name) == name


@pytest.mark.parametrize("name", ["-multiwan", "multiwan-", "multi--wan", "multi wan", "multiwan.slice", "a/b",
                                  "é", None, 5])
def test_bad_slice_names(name):
    err = refused(s.slice_name, name, "balancer_slice")
    assert err.field == "balancer_slice"
    assert "must be empty or words of [A-Za-z0-9_] joined by single dashes" in str(err)


def test_slice_filter_names_the_variable():
    with pytest.raises(AnsibleFilterError, match=r"^balancer_slice: must be empty or words .*got 'multi--wan'$"):
        slice_filter.balancer_slice("multi--wan")
    assert slice_filter.FilterModule().filters() == {"balancer_slice": slice_filter.balancer_slice}


def test_constants():
    assert (s.MAX_UPLINKS, s.MAX_WEIGHT, s.MAX_EXCLUDES) == (16, 1000, 256)
    assert set(s.RESERVED_TABLES) == {0, 253, 254, 255}
    assert (s.RULE_PRIORITY_MIN, s.RULE_PRIORITY_MAX) == (1, 32765)


def test_track_reset_is_a_boolean_on_by_default():
    assert "reset" not in s.track(None, "track", {}) and s.track({"reset": False}, "u.track", {})["reset"] is False
    assert s.track(None, "track", {"reset": True})["reset"] is True
    err = refused(s.track, {"reset": "no"}, "uplinks[1].track", {})
    assert str(err) == "uplinks[1].track.reset: must be true or false, got 'no'"
