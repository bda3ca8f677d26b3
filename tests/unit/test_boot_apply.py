"""files/boot/netlb_multiwan_apply.py (the boot-time re-apply command) with
ip/bpftool faked: which commands it runs for each steering, and that it changes
nothing when the state is already there. The real thing runs in the VM
reboot test (tests/integration/test_role_vm.py)."""
import importlib.util
import json
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "files" / "boot" / "netlb_multiwan_apply.py"
spec = importlib.util.spec_from_file_location("netlb_multiwan_apply", SOURCE)
apply = importlib.util.module_from_spec(spec)
spec.loader.exec_module(apply)

STATE = {
    "version": 1, "steering": "vrf", "policy": "random", "ipv6": True, "rule_priority": 10000,
    "object": "/var/lib/netlb-multiwan/multiwan.bpf.o", "attach_types": ["connect4", "connect6"],
    "attachments": [{"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb_multiwan"}],
    "uplinks": [
        {"slot": 0, "name": "mobile", "interface": "usb0", "gateway": "192.0.2.1", "gateway6": None,
         "vrf": None, "table": None, "mark": None, "weight": 1},
        {"slot": 1, "name": "wifi", "interface": "wlp1s0", "gateway": "198.51.100.1", "gateway6": "2001:db8:2::1",
         "vrf": "wifi-vrf", "table": 10, "mark": None, "weight": 1},
    ],
}


class FakeHost:
    """Answers the `ip -j` queries from a tiny model and records changes."""

    def __init__(self, links, addrs6=(), rules=()):
        self.links, self.addrs6, self.rules, self.changes = links, list(addrs6), list(rules), []

    def ip_json(self, *args):
        if args[:3] == ("-d", "link", "show"):
            return [self.links[args[-1]]] if args[-1] in self.links else []
        if args[:2] == ("-6", "addr"):
            return [{"addr_info": [{"family": "inet6", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1])}
                                   for a in self.addrs6]}]
        if args[:1] == ("addr",):
            return [{"addr_info": [{"family": "inet", "local": "198.51.100.2", "prefixlen": 24}]}]
        if args[1:3] == ("rule", "show"):
            return self.rules
        raise AssertionError(args)

    def run(self, argv, check=True):
        self.changes.append(" ".join(argv))
        if argv[:4] == ["ip", "link", "set", "wlp1s0"] and argv[4] == "master":
            self.links["wlp1s0"]["master"] = argv[5]
            self.addrs6 = []  # the kernel drops global IPv6 addresses on enslave

        class Done:
            returncode, stdout, stderr = 0, "", ""
        return Done()


@pytest.fixture
def host(monkeypatch):
    def make(**kw):
        fake = FakeHost(**kw)
        monkeypatch.setattr(apply, "ip_json", fake.ip_json)
        monkeypatch.setattr(apply, "run", fake.run)
        monkeypatch.setattr(apply.os.path, "isdir", lambda p: p == "/proc/sys/net/ipv6" or (
            p.startswith("/sys/class/net/") and p.rsplit("/", 1)[1] in fake.links))
        return fake
    return make


def test_vrf_uplink_on_a_fresh_boot_creates_enslaves_and_restores_ipv6(host):
    fake = host(links={"wlp1s0": {"ifname": "wlp1s0"}}, addrs6=["2001:db8:2::2/64"])
    real_link = apply.link

    def link(name):
        if name == "wifi-vrf" and any("type vrf" in c for c in fake.changes):
            return {"ifname": "wifi-vrf", "linkinfo": {"info_kind": "vrf"}}
        return real_link(name)
    apply.link = link
    try:
        apply.apply_uplink(STATE, "wifi")
    finally:
        apply.link = real_link
    assert fake.changes == [
        "ip link add wifi-vrf type vrf table 10",
        "ip link set wifi-vrf up",
        "ip link set wlp1s0 master wifi-vrf",
        "ip -6 addr add 2001:db8:2::2/64 dev wlp1s0 nodad",
        "ip link set wlp1s0 up",
        "ip -4 route replace unreachable default metric 4278198272 table 10 proto static",
        "ip -6 route replace unreachable default metric 4278198272 table 10 proto static",
        "ip -4 route replace default via 198.51.100.1 table 10 proto static",
        "ip -6 route replace default via 2001:db8:2::1 table 10 proto static",
    ]


def test_vrf_uplink_already_in_place_only_reasserts(host):
    fake = host(links={"wlp1s0": {"ifname": "wlp1s0", "master": "wifi-vrf"},
                       "wifi-vrf": {"ifname": "wifi-vrf", "linkinfo": {"info_kind": "vrf"}}})
    apply.apply_uplink(STATE, "wifi")
    assert not any("add" in c.split()[:3] or "master" in c for c in fake.changes), fake.changes


def test_a_non_vrf_device_with_the_vrf_name_is_refused(host):
    host(links={"wlp1s0": {"ifname": "wlp1s0"}, "wifi-vrf": {"ifname": "wifi-vrf", "linkinfo": {"info_kind": "veth"}}})
    with pytest.raises(apply.ApplyError, match="wifi-vrf exists and is not a VRF"):
        apply.apply_uplink(STATE, "wifi")


def test_missing_interface_fails_so_systemd_retries(host):
    host(links={})
    with pytest.raises(apply.ApplyError, match="wlp1s0 does not exist"):
        apply.apply_uplink(dict(STATE, steering="fwmark", uplinks=[dict(STATE["uplinks"][1], vrf=None, mark=10)]),
                           "wifi")


def test_fwmark_uplink_copies_link_routes_and_adds_rules_once(host):
    wifi = dict(STATE["uplinks"][1], vrf=None, mark=10, gateway6=None)
    state = dict(STATE, steering="fwmark", uplinks=[STATE["uplinks"][0], wifi])
    fake = host(links={"wlp1s0": {"ifname": "wlp1s0"}})
    apply.apply_uplink(state, "wifi")
    assert fake.changes == [
        "ip -4 route replace 198.51.100.0/24 dev wlp1s0 table 10 proto static scope link src 198.51.100.2",
        "ip -4 route replace default via 198.51.100.1 dev wlp1s0 table 10 proto static",
        "ip -4 rule add pref 10000 fwmark 0xa/0xffffffff lookup 10",
    ]
    fake = host(links={"wlp1s0": {"ifname": "wlp1s0"}},
                rules=[{"priority": 10000, "fwmark": "0xa", "table": "10"}])
    apply.apply_uplink(state, "wifi")
    assert not any("rule add" in c for c in fake.changes)


def test_main_table_uplink_needs_nothing(host, capsys):
    fake = host(links={})
    apply.apply_uplink(STATE, "mobile")
    assert fake.changes == [] and "stays in the main table" in capsys.readouterr().out


def test_unknown_uplink_and_bad_state_file(tmp_path, host):
    host(links={})
    with pytest.raises(apply.ApplyError, match="no uplink 'lte'"):
        apply.apply_uplink(STATE, "lte")
    bad = tmp_path / "balancer.json"
    bad.write_text(json.dumps(dict(STATE, version=7)))
    with pytest.raises(apply.ApplyError, match="unknown version 7"):
        apply.load_state(str(bad))
    with pytest.raises(apply.ApplyError, match="cannot read"):
        apply.load_state(str(tmp_path / "missing.json"))


def test_usage(capsys):
    assert apply.main(["frobnicate"]) == 2
    assert "usage: netlb-multiwan-apply uplink NAME | bpf" in capsys.readouterr().err
