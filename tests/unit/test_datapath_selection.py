"""The selection map (files/bpf/multiwan.h: struct mw_selection, struct mw_slot): one
generation carries the tables and how each slot is steered, so the one object every host
runs never sees a slot order other than the one its weights were computed for. On a real
kernel: tests/integration/test_datapath_maps.py and the program's tests."""
import struct

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath, selection, steering

VRF_UPLINKS = [{"name": "mobile", "interface": "usb0", "weight": 1},
               {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "weight": 2},
               {"name": "lte", "interface": "wwan0", "vrf": "lte-vrf", "weight": 1, "drained": True}]
# struct mw_selection: rotation_len, num_slots, 16 slots, the rotation, the buckets.
SIZE = 8 + 16 * 48 + selection.ROTATION_MAX + selection.BUCKETS


def slots(value):
    return [datapath.SLOT.unpack_from(value, 8 + i * datapath.SLOT.size) for i in range(struct.unpack("=I", value[4:8])[0])]


def test_the_layout_matches_the_program():
    assert datapath.SLOT.size == 48 and len(datapath.selection_value(VRF_UPLINKS, "weighted")) == SIZE


def test_each_slot_says_how_it_is_steered_and_whether_it_is_usable():
    value = datapath.selection_value(VRF_UPLINKS, "weighted", "vrf", {1: bytes([10, 0, 0, 2]) + b"\0" * 16})
    assert struct.unpack("=II", value[:8]) == (3, 3)   # rotation 1:2, three slots
    got = [(dev.rstrip(b"\0"), mark, flags, ip4) for dev, mark, flags, ip4, _ip6, _id in slots(value)]
    assert got == [(b"", 0, datapath.SLOT_USABLE, b"\0" * 4),
                   (b"wifi-vrf", 0, datapath.SLOT_USABLE | datapath.SLOT_UDP_SOURCE, bytes([10, 0, 0, 2])),
                   (b"lte-vrf", 0, datapath.SLOT_UDP_SOURCE, b"\0" * 4)]   # drained: not usable


def test_an_uplink_keeps_its_id_in_whatever_slot():
    ids = [slot[-1] for slot in slots(datapath.selection_value(VRF_UPLINKS, "weighted"))]
    swapped = [slot[-1] for slot in slots(datapath.selection_value(VRF_UPLINKS[::-1], "weighted"))]
    assert swapped == ids[::-1] and len(set(ids)) == 3 and 0 not in ids


def test_fwmark_and_device_steering():
    fwmark, device = steering.provider("fwmark"), steering.provider("device")
    assert fwmark.slot({"interface": "wlp1s0", "mark": 256}) == ("", 256, datapath.SLOT_UDP_SOURCE)
    assert fwmark.slot({"interface": "usb0", "mark": None}) == ("", 0, 0)
    # Device steering routes nothing: no source address selects a table.
    assert device.slot({"interface": "usb0"}) == ("usb0", 0, 0)


class FakeMaps(datapath.Maps):
    """The pinned maps as a dict: {(name, key): value}."""

    def __init__(self):
        super(FakeMaps, self).__init__(None, "/nonexistent")
        self.values, self.writes = {}, []

    def lookup(self, name, key):
        return self.values.get((name, key))

    def update(self, name, key, value):
        self.values[(name, key)] = value
        self.writes.append(name)

    def keys(self, name):
        return [k for n, k in self.values if n == name]

    def delete(self, name, key):
        del self.values[(name, key)]

    def pinned(self, name):
        return True

    def active(self):
        control = self.values[("mw_control", datapath.u32_key(0))]
        return self.values[("mw_selection", datapath.u32_key(struct.unpack("=I", control[:4])[0] & 1))]


def test_swapped_uplinks_flip_in_one_generation_and_keep_their_addresses():
    maps = FakeMaps()
    wifi4 = ["10.0.0.2/32"]
    lte4 = ["10.1.0.2/32"]
    assert "selection" in maps.converge(VRF_UPLINKS, "weighted", sources={1: wifi4, 2: lte4}, steering="vrf")
    assert maps.converge(VRF_UPLINKS, "weighted", sources={1: wifi4, 2: lte4}, steering="vrf") == []
    # lte and wifi swap slots; the caller knows no addresses (sources None: the tracker,
    # the command without pyroute2): each uplink keeps its own, by its device.
    swapped = [VRF_UPLINKS[0], VRF_UPLINKS[2], VRF_UPLINKS[1]]
    maps.writes.clear()
    assert maps.converge(swapped, "weighted", steering="vrf") == ["selection"]
    assert maps.writes == ["mw_selection", "mw_control"]   # the unread entry first, then the flip
    got = [(dev.rstrip(b"\0"), ip4) for dev, _mark, _flags, ip4, _ip6, _id in slots(maps.active())]
    assert got == [(b"", b"\0" * 4), (b"lte-vrf", bytes([10, 1, 0, 2])), (b"wifi-vrf", bytes([10, 0, 0, 2]))]


def test_the_program_skips_the_exclusion_maps_that_hold_nothing():
    maps = FakeMaps()
    host = ("mw_host", datapath.u32_key(0))
    maps.converge(VRF_UPLINKS, "weighted", steering="vrf")
    assert maps.values[host] == datapath.host_value(0, 0)
    maps.converge(VRF_UPLINKS, "weighted", ["10.0.0.0/8"], exclude_ports=[{"proto": "tcp", "first": 22, "last": 22}],
                  steering="vrf")
    assert maps.values[host] == datapath.host_value(0, datapath.HOST_EXCLUDE4 | datapath.HOST_EXCLUDE_PORTS)
    maps.writes.clear()
    maps.converge(VRF_UPLINKS, "weighted", ["2001:db8::/32"], steering="vrf")
    # The new prefix is in its trie before the flag says so.
    assert maps.writes == ["mw_exclude6", "mw_exclude_ports", "mw_host"]
    assert maps.values[host] == datapath.host_value(0, datapath.HOST_EXCLUDE6)


def test_a_backup_tier_is_picked_only_while_no_lower_tier_uplink_is_pickable():
    uplinks = [{"name": "mobile", "interface": "usb0", "weight": 3, "tier": 2},
               {"name": "wifi", "interface": "wlp1s0", "mark": 11, "weight": 2},
               {"name": "lte", "interface": "wwan0", "mark": 12, "weight": 1, "tier": 1}]
    assert datapath.live_weights(uplinks, "weighted") == {1: 2, 2: 1}
    assert datapath.active_tier(uplinks) == 1
    down = [dict(uplinks[0]), dict(uplinks[1], down=True), dict(uplinks[2], drained=True)]
    assert datapath.live_weights(down, "weighted") == {0: 3}
    assert datapath.active_tier(down) == 2
    zero = [dict(uplinks[0]), dict(uplinks[1], weight=0), dict(uplinks[2], down=True)]
    assert datapath.live_weights(zero, "round_robin") == {0: 1}   # weight 0 counts as not pickable
    assert datapath.active_tier([dict(u, down=True) for u in uplinks]) is None
    assert datapath.live_weights([dict(u, down=True) for u in uplinks], "weighted") == {}
