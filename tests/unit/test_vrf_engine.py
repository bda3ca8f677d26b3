"""uplink_routing.VrfEngine (netlb.multiwan.vrf's engine) edge cases against a fake netlink layer.

The real kernel is exercised by tests/integration; here the fake lets us
force failures (rollback), sessions (operator protection) and check mode
without a VRF-capable kernel.
"""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as m
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing

from .fake_netlink import FakeNetlink

PARAMS = dict(name="wifi-vrf", table=10, interfaces=["wlp1s0"], routes=[], state="present",
              netns=None, unreachable_default=True, force=False)


@pytest.fixture(autouse=True)
def no_sessions(monkeypatch):
    monkeypatch.setattr(routing, "current_sessions", set)
    monkeypatch.setattr(nl, "vrf_support", lambda: (True, "fake"))


def run(fake, check_mode=False, **params):
    params = dict(PARAMS, **params)
    engine = routing.VrfEngine(params, fake, m.validate_params(params), check_mode=check_mode)
    before = engine.read_state()
    after = engine.present(before) if params["state"] == "present" else engine.absent(before)
    return engine, before, after


GW = [{"dst": "default", "gateway": "10.0.0.1", "interface": None, "scope": None, "metric": None, "type": "unicast"}]


def test_create_then_idempotent():
    fake = FakeNetlink()
    manager, before, after = run(fake, routes=GW)
    assert manager.actions[0] == "create vrf wifi-vrf table 10"
    assert "enslave wlp1s0 to wifi-vrf" in manager.actions
    # The IPv6 address the "kernel" flushed was put back.
    assert "2001:db8:2::2/64" in fake.addrs[3]
    assert {r.render() for r in fake.tables[10]} >= {"default via 10.0.0.1", "unreachable default metric 4278198272"}
    fake.calls.clear()
    manager = run(fake, routes=GW)[0]
    assert manager.actions == [] and fake.calls == []


def test_check_mode_touches_nothing_and_predicts():
    fake = FakeNetlink()
    manager, before, after = run(fake, check_mode=True, routes=GW)
    assert fake.calls == []
    assert manager.actions and before == {"exists": False, "name": "wifi-vrf"}
    text = m.render_state(after)
    assert "  - wlp1s0" in text and "default via 10.0.0.1" in text and "unreachable default" in text


def test_failure_midway_rolls_back():
    fake = FakeNetlink()
    fake.fail_on = "replace_route"
    with pytest.raises(nl.NetlinkError):
        run(fake, routes=GW)
    assert 9 not in fake.links_                       # the VRF made in this run is gone
    assert fake.links_[3].master == 0                 # wlp1s0 released
    assert "2001:db8:2::2/64" in fake.addrs[3]        # with its addresses


def test_refuses_interface_of_the_ssh_session(monkeypatch):
    monkeypatch.setattr(routing, "current_sessions", lambda: {("10.0.0.2", "10.0.0.77")})
    fake = FakeNetlink()
    with pytest.raises(routing.RoutingError, match="wlp1s0 carries the current connection from 10.0.0.77"):
        run(fake, routes=GW)
    assert fake.calls == []
    run(fake, routes=GW, force=True)
    assert fake.links_[3].master == 9


def test_unreachable_gateway_fails_before_changes():
    fake = FakeNetlink()
    bad = [dict(GW[0], gateway="172.16.0.1")]
    with pytest.raises(routing.RoutingError, match=r"routes\[0\].gateway: 172.16.0.1 is not reachable"):
        run(fake, routes=bad)
    assert fake.calls == []


def test_interface_enslaved_elsewhere_needs_force():
    fake = FakeNetlink()
    fake.links_[5] = nl.Link(5, "br0", kind="bridge", up=True)
    fake.links_[3].master = 5
    with pytest.raises(routing.RoutingError, match=r"interfaces\[0\]: wlp1s0 is already enslaved to br0"):
        run(fake)
    assert fake.calls == []


def test_table_of_another_vrf_and_name_of_non_vrf():
    fake = FakeNetlink()
    fake.links_[7] = nl.Link(7, "other-vrf", kind="vrf", up=True, vrf_table=10)
    with pytest.raises(routing.RoutingError, match="table: table 10 is already used by VRF other-vrf"):
        run(fake)
    with pytest.raises(routing.RoutingError, match="name: usb0 exists and is a veth device"):
        run(fake, name="usb0", table=11, interfaces=[])
    assert fake.calls == []


def test_missing_interface_names_the_field():
    with pytest.raises(routing.RoutingError, match=r"interfaces\[1\]: interface wwan0 does not exist"):
        run(FakeNetlink(), interfaces=["wlp1s0", "wwan0"])


def test_absent_releases_and_removes_rules_with_last_vrf():
    fake = FakeNetlink()
    run(fake, routes=GW)
    fake.calls.clear()
    manager, before, after = run(fake, state="absent", table=None)
    names = [c[0] for c in fake.calls]
    assert names.index("set_master") < names.index("delete_link") < names.index("flush_table")
    assert names.count("delete_l3mdev_rule") == 2
    assert fake.links_[3].master == 0 and "2001:db8:2::2/64" in fake.addrs[3]
    fake.calls.clear()
    manager = run(fake, state="absent", table=None)[0]
    assert manager.actions == [] and fake.calls == []


def test_primary_uplink_stays_in_main_unless_forced():
    fake = FakeNetlink()
    fake.tables[254] = [m.Route(m.AF_INET, "default", gateway="10.0.0.1", dev="wlp1s0"),
                        m.Route(m.AF_INET, "default", gateway="192.0.2.1", dev="usb0", metric=100)]
    with pytest.raises(routing.RoutingError, match=r"interfaces\[0\]: wlp1s0 carries the host's preferred default"):
        run(fake, routes=GW)
    assert fake.calls == []
    manager = run(fake, routes=GW, force=True)[0]
    assert fake.links_[3].master == 9
    assert any("drops its main-table routes (default via 10.0.0.1 dev wlp1s0)" in w for w in manager.warnings)


def test_secondary_default_route_only_warns():
    fake = FakeNetlink()
    fake.tables[254] = [m.Route(m.AF_INET, "default", gateway="192.0.2.1", dev="usb0"),
                        m.Route(m.AF_INET, "default", gateway="10.0.0.1", dev="wlp1s0", metric=600)]
    manager = run(fake, routes=GW)[0]
    assert fake.links_[3].master == 9 and len(manager.warnings) == 1
