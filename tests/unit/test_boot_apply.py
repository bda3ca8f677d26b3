"""module_utils/boot.py (the boot-time re-apply command, netlb-multiwan-apply): its
uplink step runs the modules' engine (module_utils/uplink_routing) on the state
document's entry, here against the fake netlink layer. The real thing runs in
the VM reboot test (tests/integration/test_role_vm.py) and the container
restart test (tests/integration/test_role_runtime_containers.py)."""
import json

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import boot as apply
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as m

from .fake_netlink import FakeNetlink


GW = [{"dst": "default", "gateway": "10.0.0.1"}]
STATE = {
    "version": 1, "steering": "vrf", "policy": "random", "ipv6": True, "rule_priority": 10000, "force": False,
    "object": "/var/lib/netlb-multiwan/multiwan.bpf.o", "attach_types": ["connect4", "connect6"],
    "attachments": [{"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb_multiwan"}],
    "uplinks": [
        {"slot": 0, "name": "mobile", "interface": "usb0", "gateway": "192.0.2.1", "gateway6": None,
         "vrf": None, "table": None, "mark": None, "routes": [], "weight": 1},
        {"slot": 1, "name": "wifi", "interface": "wlp1s0", "gateway": "10.0.0.1", "gateway6": None,
         "vrf": "wifi-vrf", "table": 10, "mark": None, "routes": GW, "weight": 1},
    ],
}


def fwmark_state(**wifi):
    return dict(STATE, steering="fwmark", uplinks=[STATE["uplinks"][0], dict(STATE["uplinks"][1], vrf=None, mark=16, **wifi)])


@pytest.fixture(autouse=True)
def kernel(monkeypatch):
    monkeypatch.setattr(routing, "current_sessions", set)
    monkeypatch.setattr(nl, "vrf_support", lambda: (True, "fake"))


def table(fake, number):
    return sorted(r.render() for r in fake.tables.get(number, []))


def test_vrf_uplink_on_a_fresh_boot_is_routed_as_the_module_routes_it(capsys):
    fake = FakeNetlink()
    apply.apply_uplink(STATE, "wifi", netlink=fake)
    assert fake.links_[3].master == 9 and fake.links_[9].vrf_table == 10
    assert "2001:db8:2::2/64" in fake.addrs[3]  # the kernel dropped it on enslave; put back
    assert {"default via 10.0.0.1", "unreachable default metric 4278198272"} <= set(table(fake, 10))
    out = capsys.readouterr().out
    assert "create vrf wifi-vrf table 10" in out and "uplink wifi routed\n" in out
    fake.calls.clear()
    apply.apply_uplink(STATE, "wifi", netlink=fake)
    assert fake.calls == [] and "uplink wifi routed (already in place)" in capsys.readouterr().out


def test_boot_restores_a_missing_l3mdev_rule():
    fake = FakeNetlink()
    apply.apply_uplink(STATE, "wifi", netlink=fake)
    fake.rules.clear()
    fake.calls.clear()
    apply.apply_uplink(STATE, "wifi", netlink=fake)
    assert [c[0] for c in fake.calls] == ["add_l3mdev_rule", "add_l3mdev_rule"]


def test_boot_keeps_the_session_guard_and_honours_the_recorded_force(monkeypatch):
    monkeypatch.setattr(routing, "current_sessions", lambda: {("10.0.0.2", "10.0.0.77")})
    fake = FakeNetlink()
    with pytest.raises(apply.ApplyError, match="wlp1s0 carries the current connection from 10.0.0.77"):
        apply.apply_uplink(STATE, "wifi", netlink=fake)
    assert fake.calls == []
    apply.apply_uplink(dict(STATE, force=True), "wifi", netlink=fake)
    assert fake.links_[3].master == 9


def test_a_non_vrf_device_with_the_vrf_name_is_refused():
    fake = FakeNetlink()
    fake.links_[7] = nl.Link(7, "wifi-vrf", kind="veth", up=True)
    with pytest.raises(apply.ApplyError, match="name: wifi-vrf exists and is a veth device, not a VRF"):
        apply.apply_uplink(STATE, "wifi", netlink=fake)


def test_missing_interface_fails_so_systemd_retries():
    fake = FakeNetlink()
    del fake.links_[3]
    with pytest.raises(apply.ApplyError, match=r"interfaces\[0\]: interface wlp1s0 does not exist"):
        apply.apply_uplink(STATE, "wifi", netlink=fake)
    with pytest.raises(apply.ApplyError, match="interface: wlp1s0 does not exist"):
        apply.apply_uplink(fwmark_state(), "wifi", netlink=fake)
    assert fake.calls == []


def test_fwmark_uplink_gets_its_routes_then_one_rule_with_the_full_mask():
    fake = FakeNetlink()
    apply.apply_uplink(fwmark_state(), "wifi", netlink=fake)
    assert table(fake, 10) == ["10.0.0.0/24 dev wlp1s0 scope link src 10.0.0.2", "2001:db8:2::/64 dev wlp1s0 metric 256",
                               "default via 10.0.0.1"]
    # One rule per family the table has routes for (wlp1s0 has an IPv6 prefix too).
    assert fake.fwmarks == [dict(family=f, priority=10000, fwmark=16, fwmask=routing.U32, table=10)
                            for f in (m.AF_INET, m.AF_INET6)]
    names = [c[0] for c in fake.calls]
    assert names.index("replace_route") < names.index("add_fwmark_rule")  # routes before the rule
    fake.calls.clear()
    apply.apply_uplink(fwmark_state(), "wifi", netlink=fake)
    assert fake.calls == []


def test_fwmark_rule_follows_a_changed_priority():
    fake = FakeNetlink()
    apply.apply_uplink(fwmark_state(), "wifi", netlink=fake)
    apply.apply_uplink(dict(fwmark_state(), rule_priority=9000), "wifi", netlink=fake)
    assert [r["priority"] for r in fake.fwmarks] == [9000, 9000]


def test_a_document_without_recorded_routes_routes_the_gateways():
    wifi = dict(STATE["uplinks"][1])
    del wifi["routes"]
    fake = FakeNetlink()
    apply.apply_uplink(dict(STATE, uplinks=[wifi]), "wifi", netlink=fake)
    assert "default via 10.0.0.1" in table(fake, 10)


def test_main_table_uplink_needs_nothing(capsys):
    fake = FakeNetlink()
    apply.apply_uplink(STATE, "mobile", netlink=fake)
    assert fake.calls == [] and "stays in the main table" in capsys.readouterr().out


def test_unknown_uplink_and_bad_state_file(tmp_path):
    with pytest.raises(apply.ApplyError, match="no uplink 'lte' in the state document"):
        apply.apply_uplink(STATE, "lte", netlink=FakeNetlink())
    bad = tmp_path / "balancer.json"
    bad.write_text(json.dumps(dict(STATE, version=7)))
    with pytest.raises(apply.ApplyError, match="version is 7; this engine reads version 1"):
        apply.load_state(str(bad))
    with pytest.raises(apply.ApplyError, match="is missing"):
        apply.load_state(str(tmp_path / "missing.json"))


def test_a_bad_recorded_value_is_reported_not_applied():
    fake = FakeNetlink()
    with pytest.raises(apply.ApplyError, match="table"):
        apply.apply_uplink(dict(STATE, uplinks=[dict(STATE["uplinks"][1], table=254)]), "wifi", netlink=fake)
    assert fake.calls == []


def test_usage(capsys):
    with pytest.raises(SystemExit) as raised:
        apply.main(["frobnicate"])
    assert raised.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err
    assert apply.main([]) == 2 and "usage: netlb-multiwan-apply" in capsys.readouterr().err
