"""The steering providers: one interface (slot, routing, retirement, probe, describe,
rules) and one definition of a usable uplink, for vrf, fwmark and device steering."""
import socket

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import steering
from ansible_collections.netlb.multiwan.plugins.module_utils import schema

from .test_balancer_status import FakeKernel, route
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils.vrf_model import AF_INET, AF_INET6

MAIN = {"name": "mobile", "interface": "usb0", "table": None, "vrf": None, "mark": None}
VRF = {"name": "wifi", "interface": "wlp1s0", "table": 10, "vrf": "wifi-vrf", "mark": None,
       "routes": [{"dst": "default", "gateway": "10.0.0.1"}]}
MARKED = {"name": "wifi", "interface": "wlp1s0", "table": 100, "vrf": None, "mark": 256,
          "routes": [{"dst": "default", "gateway": "10.0.0.1"}]}


class RecordingSocket(object):
    def __init__(self):
        self.options = []

    def setsockopt(self, level, name, value):
        self.options.append((level, name, value))


def probe(provider, up):
    sock = RecordingSocket()
    provider.probe(sock, up)
    return sock.options


def test_every_steering_has_a_provider_and_nothing_else():
    assert steering.NAMES == ("vrf", "fwmark", "device")
    with pytest.raises(schema.SchemaError) as err:
        steering.provider("tunnel")
    assert err.value.field == "steering"
    assert steering.of({}).name == "vrf"


def test_vrf():
    vrf = steering.provider("vrf")
    assert vrf.slot(VRF) == ("wifi-vrf", 0, steering.SLOT_UDP_SOURCE) and vrf.slot(MAIN) == ("", 0, 0)
    assert (vrf.table(VRF), vrf.table(MAIN)) == (10, steering.MAIN_TABLE)
    kind, params = vrf.routing({"force": True}, VRF)
    assert kind == "vrf" and params["name"] == "wifi-vrf" and params["interfaces"] == ["wlp1s0"] and params["force"]
    assert params["routes"][0]["gateway"] == "10.0.0.1" and vrf.routing({}, MAIN) == (None, None)
    gone = vrf.retirement(params)
    assert (gone["state"], gone["table"], gone["interfaces"], gone["routes"]) == ("absent", None, [], [])
    assert probe(vrf, VRF) == [(socket.SOL_SOCKET, steering.SO_BINDTODEVICE, b"wifi-vrf")]
    assert probe(vrf, MAIN) == [(socket.SOL_SOCKET, steering.SO_BINDTODEVICE, b"usb0")]
    assert vrf.describe(VRF) == {"vrf": "wifi-vrf", "device": None, "mark": None, "table": 10}
    assert vrf.describe(MAIN) == {"vrf": None, "device": None, "mark": None, "table": "main"}
    assert not vrf.strict_rp_filter_drops(VRF)


def test_fwmark():
    fwmark = steering.provider("fwmark")
    assert fwmark.slot(MARKED) == ("", 256, steering.SLOT_UDP_SOURCE) and fwmark.slot(MAIN) == ("", 0, 0)
    kind, params = fwmark.routing({"rule_priority": 900}, MARKED)
    assert kind == "fwmark" and (params["mark"], params["mask"], params["table"], params["priority"]) == (
        256, 0xFFFFFFFF, 100, 900)
    assert fwmark.retirement(params) == dict(params, state="absent", routes=[])
    assert probe(fwmark, MARKED) == [(socket.SOL_SOCKET, steering.SO_MARK, 256)]
    assert fwmark.describe(MARKED) == {"vrf": None, "device": None, "mark": 256, "table": 100}
    assert fwmark.filled({"table": 7}) == {"mark": 7} and fwmark.filled({"table": 7, "mark": 9}) == {}


def test_device_routes_nothing_and_needs_loose_reverse_path_filtering():
    device = steering.provider("device")
    up = {"name": "wifi", "interface": "wlp1s0"}
    assert device.slot(up) == ("wlp1s0", 0, 0) and device.routing({}, up) == (None, None)
    assert device.table(up) == steering.MAIN_TABLE and device.strict_rp_filter_drops(up)
    assert probe(device, up) == [(socket.SOL_SOCKET, steering.SO_BINDTODEVICE, b"wlp1s0")]
    assert device.describe(up)["device"] == "wlp1s0" and not device.one_main_uplink
    with pytest.raises(schema.SchemaError) as err:
        device.check(dict(up, table=5), "uplinks[1]", set())
    assert err.value.field == "uplinks[1].table"


def test_rules_each_steering_needs():
    kernel = FakeKernel()
    kernel.fwmarks = [{"family": AF_INET, "priority": 10000, "fwmark": 256, "fwmask": 0xFFFFFFFF, "table": 100}]
    got = steering.provider("fwmark").rules(kernel, [MAIN, MARKED], [AF_INET, AF_INET6])
    assert [(r["family"], r["rule"], r["uplink"], r["present"]) for r in got] == [
        (AF_INET, "fwmark 0x100 lookup 100", "wifi", True), (AF_INET6, "fwmark 0x100 lookup 100", "wifi", False)]
    kernel.l3mdev = {AF_INET}
    got = steering.provider("vrf").rules(kernel, [MAIN, VRF], [AF_INET])
    assert [(r["rule"], r["present"]) for r in got] == [("l3mdev", True)]
    assert steering.provider("vrf").rules(kernel, [MAIN], [AF_INET]) == []
    assert steering.provider("device").rules(kernel, [MAIN], [AF_INET]) == []


@pytest.mark.parametrize("change, reason", [
    (lambda k: k.links.pop("wlp1s0"), "wlp1s0 is gone"),
    (lambda k: setattr(k.links["wlp1s0"], "up", False), "wlp1s0 is down"),
    (lambda k: setattr(k.links["wlp1s0"], "carrier", False), "wlp1s0 has no carrier"),
    (lambda k: k.addrs.pop("wlp1s0"), "wlp1s0 has no global IPv4 address"),
    (lambda k: k.tables.pop(100), "no IPv4 default route via wlp1s0 in table 100"),
    (lambda k: None, "wlp1s0 usable"),
])
def test_one_definition_of_usable(change, reason):
    kernel = FakeKernel()
    kernel.links["wlp1s0"] = nl.Link(3, "wlp1s0", up=True, carrier=True)
    kernel.addrs["wlp1s0"] = ["10.0.0.2/24"]
    kernel.tables[100] = [route("default", "wlp1s0", "10.0.0.1")]
    change(kernel)
    assert steering.usable(kernel, steering.provider("fwmark"), MARKED, {4}) == (reason == "wlp1s0 usable", reason)


def test_usable_reads_the_table_of_the_steering():
    kernel = FakeKernel()
    kernel.links["wlp1s0"] = nl.Link(3, "wlp1s0", up=True, carrier=True)
    kernel.addrs["wlp1s0"] = ["10.0.0.2/24"]
    kernel.tables[steering.MAIN_TABLE] = [route("default", "wlp1s0", "10.0.0.1")]
    up = {"name": "wifi", "interface": "wlp1s0"}
    assert steering.usable(kernel, steering.provider("device"), up, {4})[0]
    assert steering.usable(kernel, steering.provider("vrf"), VRF, {4}) == (
        False, "wlp1s0 is not enslaved to wifi-vrf (master: none)")
    kernel.master_of["wlp1s0"] = "wifi-vrf"
    assert steering.usable(kernel, steering.provider("vrf"), VRF, {4}) == (
        False, "no IPv4 default route via wlp1s0 in table 10")


def test_what_each_steering_needs_of_the_host_reaches_the_role_through_the_plan():
    from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan
    assert steering.provider("vrf").needs() == {"kernel_modules": ["vrf"], "udp_source": True,
                                                "own_default_routes": False}
    assert steering.provider("fwmark").needs() == {"kernel_modules": [], "udp_source": True,
                                                   "own_default_routes": False}
    assert steering.provider("device").needs() == {"kernel_modules": [], "udp_source": False,
                                                   "own_default_routes": True}
    got = plan.plan([{"name": "mobile", "interface": "usb0"}, {"name": "wifi", "interface": "wlp1s0"}],
                    steering="device", policy="weighted")
    assert got["needs"] == steering.provider("device").needs()


def tcp(src, mark=0, bound=0):
    from ansible_collections.netlb.multiwan.plugins.module_utils import sockets
    import ipaddress
    packed = ipaddress.ip_address(src).packed.ljust(16, b"\0")
    dst = ipaddress.ip_address("203.0.113.9").packed.ljust(16, b"\0")
    return sockets.TcpSocket(socket.AF_INET, 1, ((40000, 443, packed, dst), (bound, 7)), mark=mark, cgroup_id=5)


@pytest.mark.parametrize("name, up, sock, held", [
    ("fwmark", MARKED, tcp("10.0.0.2", mark=256), True),
    ("fwmark", MARKED, tcp("10.0.0.2", mark=257), False),      # another mark: not the program's
    ("fwmark", MARKED, tcp("10.0.0.2"), False),
    ("fwmark", MAIN, tcp("192.0.2.2"), True),                  # left in the main table, from mobile's address
    ("fwmark", MAIN, tcp("10.0.0.2"), False),
    ("fwmark", MAIN, tcp("192.0.2.2", bound=3), False),        # bound by the application itself
    ("vrf", VRF, tcp("10.0.0.2", bound=9), True),              # bound to wifi-vrf
    ("vrf", VRF, tcp("10.0.0.2", bound=3), False),
    ("device", MARKED, tcp("10.0.0.2", bound=3), True),        # bound to wlp1s0 itself
    ("device", MARKED, tcp("10.0.0.2", bound=2), False),
])
def test_which_connections_an_uplink_holds(name, up, sock, held):
    kernel = FakeKernel()
    for index, ifname in ((2, "usb0"), (3, "wlp1s0"), (9, "wifi-vrf")):
        kernel.links[ifname] = nl.Link(index, ifname, up=True)
    kernel.addrs = {"usb0": ["192.0.2.2/24"], "wlp1s0": ["10.0.0.2/24"]}
    assert steering.provider(name).holds(kernel, up, sock) is held
