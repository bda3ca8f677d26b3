"""Port exclusions, source rules for unconnected UDP and the maps' byte layout
(files/bpf/multiwan.h: struct mw_ports, mw_host, the addresses of struct mw_slot)."""
import struct

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import cli, datapath, steering
from ansible_collections.netlb.multiwan.plugins.module_utils import schema as s
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan

from .fake_netlink import FakeNetlink


@pytest.mark.parametrize("value, normalised", [
    ({"proto": "tcp", "port": 22}, {"proto": "tcp", "port": "22"}),
    ({"proto": "udp", "port": "51820"}, {"proto": "udp", "port": "51820"}),
    ({"proto": "tcp", "port": "6881-6889"}, {"proto": "tcp", "port": "6881-6889"}),
    ({"proto": "udp", "port": "7-7"}, {"proto": "udp", "port": "7"}),
])
def test_port_exclusions_are_normalised(value, normalised):
    assert s.port_exclusion(value, "x") == normalised


@pytest.mark.parametrize("value, field, words", [
    ({"proto": "icmp", "port": 1}, "x.proto", "must be one of tcp, udp"),
    ({"proto": "tcp", "port": 0}, "x.port", "0 is not a port"),
    ({"proto": "tcp", "port": 65536}, "x.port", "65536 is not a port"),
    ({"proto": "tcp", "port": "6889-6881"}, "x.port", "not in order"),
    ({"proto": "tcp", "port": "22;rm"}, "x.port", "must be a port"),
    ({"proto": "tcp", "port": True}, "x.port", "must be a port"),
    ({"proto": "tcp", "port": 22, "dst": "1.2.3.4"}, "x.dst", "is not a port exclusion setting"),
    ("tcp/22", "x", "must be a dictionary"),
])
def test_bad_port_exclusions_name_the_field(value, field, words):
    with pytest.raises(s.SchemaError) as err:
        s.port_exclusion(value, "x")
    assert err.value.field == field and words in err.value.message


def test_the_plan_carries_port_exclusions_and_names_the_role_variable():
    uplinks = [{"name": "a", "interface": "eth0"}, {"name": "b", "interface": "eth1", "table": 100, "gateway": "10.0.0.1"}]
    got = plan.plan(uplinks, steering="fwmark", exclude_ports=[{"proto": "tcp", "port": 22}])
    assert got["exclude_ports"] == [{"proto": "tcp", "port": "22"}]
    with pytest.raises(s.SchemaError) as err:
        plan.plan(uplinks, steering="fwmark", exclude_ports=[{"proto": "tcp", "port": 22}, {"proto": "tcp", "port": -1}])
    assert err.value.field == "exclude_ports[1].port"


def test_ports_bitmap_sets_exactly_the_excluded_ports():
    doc = {"exclude_ports": [{"proto": "tcp", "port": "22"}, {"proto": "udp", "port": "6881-6889"}]}
    value = datapath.ports_value(cli.port_ranges(doc))
    assert len(value) == 2 * 1024 * 8
    tcp = struct.unpack("=1024Q", value[:8192])
    udp = struct.unpack("=1024Q", value[8192:])

    def bit(words, port):
        return bool(words[port >> 6] & (1 << (port & 63)))

    assert [p for p in range(65536) if bit(tcp, p)] == [22]
    assert [p for p in range(65536) if bit(udp, p)] == list(range(6881, 6890))


def test_uplink_addresses_layout():
    value = datapath.uplink_addr_value(["198.51.100.2/32", "2001:db8:2::2/128", "198.51.100.3/32"])
    assert value[:4] == bytes([198, 51, 100, 2]) and value[4:] == bytes.fromhex("20010db8000200000000000000000002")
    assert datapath.uplink_addr_value(None) == b"\0" * 20
    # struct mw_host: the cookie, then which exclusion maps hold anything (the program skips an empty one).
    assert datapath.host_value(0x1234) == struct.pack("=QII", 0x1234, 0, 0)
    assert datapath.host_value(0, datapath.HOST_EXCLUDE6) == struct.pack("=QII", 0, 2, 0)


DOC = {"steering": "fwmark", "rule_priority": 10000,
       "uplinks": [{"name": "mobile", "interface": "usb0", "table": None, "mark": None},
                   {"name": "wifi", "interface": "wlp1s0", "table": 100, "mark": 256}]}


def test_source_rules_follow_the_uplinks_addresses():
    fake = FakeNetlink()
    sources, actions = routing.converge_source_rules(DOC, fake, check_mode=True)
    assert sources == {1: {"table": 100, "addresses": ["10.0.0.2/32", "2001:db8:2::2/128"]}}
    assert actions == ["add rule from 10.0.0.2/32 lookup 100 pref 10000",
                       "add rule from 2001:db8:2::2/128 lookup 100 pref 10000"]
    assert fake.sources == [], "check mode changes nothing"
    routing.converge_source_rules(DOC, fake)
    assert routing.converge_source_rules(DOC, fake)[1] == [], "idempotent"
    # A new address (DHCP): the old rule goes, the new one comes; the main uplink gets none.
    fake.addrs[3] = ["10.0.0.9/24"]
    actions = routing.converge_source_rules(DOC, fake)[1]
    assert actions == ["add rule from 10.0.0.9/32 lookup 100 pref 10000",
                       "delete rule from 10.0.0.2/32 lookup 100 pref 10000",
                       "delete rule from 2001:db8:2::2/128 lookup 100 pref 10000"]
    # Ours (the netlink layer lists only rules with the balancer's protocol) at another
    # priority, or of an uplink taken out of the document: they go.
    fake.sources.append({"family": 2, "priority": 500, "src": "10.0.0.9/32", "table": 100})
    fake.sources.append({"family": 2, "priority": 10000, "src": "192.0.2.7/32", "table": 7})
    assert routing.converge_source_rules(DOC, fake)[1] == ["delete rule from 10.0.0.9/32 lookup 100 pref 500",
                                                           "delete rule from 192.0.2.7/32 lookup 7 pref 10000"]
    # Taking the uplink's table away removes its source rules.
    assert routing.delete_source_rules(fake, 100) == ["delete rule from 10.0.0.9/32 lookup 100 pref 10000"]
    assert fake.sources == []


def test_link_local_addresses_get_no_source_rule():
    fake = FakeNetlink()
    base = fake.addresses

    def with_scope(index):
        return [dict(a, scope=253 if a["address"].startswith("2001") else 0) for a in base(index)]

    fake.addresses = with_scope
    sources = routing.converge_source_rules(DOC, fake, check_mode=True)[0]
    assert sources[1]["addresses"] == ["10.0.0.2/32"]


def test_device_steering_binds_every_uplink_to_its_interface_and_routes_nothing():
    uplinks = [{"name": "mobile", "interface": "usb0"}, {"name": "wifi", "interface": "wlp1s0", "weight": 2}]
    got = plan.plan(uplinks, steering="device", policy="weighted")
    assert got["routing"] == []
    assert [steering.provider("device").slot(u) + (u["weight"],) for u in got["uplinks"]] == [
        ("usb0", 0, 0, 1), ("wlp1s0", 0, 0, 2)]


@pytest.mark.parametrize("extra, field", [({"vrf": "wifi-vrf"}, "uplinks[1].vrf"), ({"mark": 7}, "uplinks[1].mark"),
                                          ({"table": 100}, "uplinks[1].table"),
                                          ({"interface": "usb0"}, "uplinks[1].interface")])
def test_device_steering_refuses_what_it_would_not_use(extra, field):
    uplinks = [{"name": "mobile", "interface": "usb0"}, dict({"name": "wifi", "interface": "wlp1s0"}, **extra)]
    with pytest.raises(s.SchemaError) as err:
        plan.plan(uplinks, steering="device")
    assert err.value.field == field
