"""VrfManager edge cases against a fake netlink layer.

The real kernel is exercised by tests/integration; here the fake lets us
force failures (rollback), sessions (operator protection) and check mode
without a VRF-capable kernel.
"""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as m
from ansible_collections.netlb.multiwan.plugins.modules import vrf as vrf_module


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.params = dict(name="wifi-vrf", table=10, interfaces=["wlp1s0"], routes=[], state="present",
                           netns=None, unreachable_default=True, force=False)
        self.params.update(params)
        self.check_mode = check_mode


class FakeNetlink:
    """Enough of a kernel: links, addresses, per-table routes, l3mdev rules."""

    def __init__(self):
        self.links_ = {
            1: nl.Link(1, "lo", up=True),
            2: nl.Link(2, "usb0", kind="veth", up=True),
            3: nl.Link(3, "wlp1s0", kind="veth", up=True),
        }
        self.addrs = {2: ["192.0.2.2/24"], 3: ["10.0.0.2/24", "2001:db8:2::2/64"]}
        self.tables = {10: []}
        self.rules = set()
        self.calls = []
        self.fail_on = None

    def _log(self, name, *args):
        self.calls.append((name,) + args)
        if name == self.fail_on:
            raise nl.NetlinkError(1, "injected failure")

    def links(self):
        return [nl.Link(lk.index, lk.name, lk.kind, lk.master, lk.up, lk.vrf_table) for lk in self.links_.values()]

    def addresses(self, index):
        return [{"address": a, "family": 10 if ":" in a else 2, "permanent": True} for a in self.addrs.get(index, [])]

    def routes(self, table, names=None):
        return list(self.tables.get(table, []))

    def l3mdev_rules(self):
        return set(self.rules)

    def route_oif(self, address):
        return 3 if address.startswith("10.0.0.") else 2

    def create_vrf(self, name, table):
        self._log("create_vrf", name, table)
        self.links_[9] = nl.Link(9, name, kind="vrf", up=True, vrf_table=table)
        self.tables.setdefault(table, [])
        self.rules |= {m.AF_INET, m.AF_INET6}
        return 9

    def set_master(self, index, master):
        self._log("set_master", index, master)
        self.links_[index].master = master
        if master:  # the kernel flushes IPv6 addresses and moves link routes
            self.addrs[index] = [a for a in self.addrs[index] if ":" not in a]
            table = self.links_[master].vrf_table
            self.tables[table] += m.connected_routes(self.links_[index].name, self.addrs[index])

    def add_address(self, index, address):
        self._log("add_address", index, address)
        self.addrs[index].append(address)

    def replace_route(self, route, table, dev_index=None):
        self._log("replace_route", route.render(), table)
        self.tables[table] = [r for r in self.tables[table] if r.key != route.key] + [route]

    def delete_link(self, index):
        self._log("delete_link", index)
        del self.links_[index]

    def flush_table(self, table):
        self._log("flush_table", table)
        self.tables[table] = []

    def add_l3mdev_rule(self, family):
        self._log("add_l3mdev_rule", family)

    def delete_l3mdev_rule(self, family):
        self._log("delete_l3mdev_rule", family)


@pytest.fixture(autouse=True)
def no_sessions(monkeypatch):
    monkeypatch.setattr(vrf_module, "current_sessions", set)
    monkeypatch.setattr(nl, "vrf_support", lambda: (True, "fake"))


def run(fake, **params):
    module = FakeModule(**params)
    routes = m.validate_params(module.params)
    manager = vrf_module.VrfManager(module, fake, routes)
    before = manager.read_state()
    after = manager.present(before) if module.params["state"] == "present" else manager.absent(before)
    return manager, before, after


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
    monkeypatch.setattr(vrf_module, "current_sessions", lambda: {("10.0.0.2", "10.0.0.77")})
    fake = FakeNetlink()
    with pytest.raises(vrf_module.VrfError, match="wlp1s0 carries the current connection from 10.0.0.77"):
        run(fake, routes=GW)
    assert fake.calls == []
    manager = run(fake, routes=GW, force=True)[0]
    assert fake.links_[3].master == 9


def test_unreachable_gateway_fails_before_changes():
    fake = FakeNetlink()
    bad = [dict(GW[0], gateway="172.16.0.1")]
    with pytest.raises(vrf_module.VrfError, match=r"routes\[0\].gateway: 172.16.0.1 is not reachable"):
        run(fake, routes=bad)
    assert fake.calls == []


def test_interface_enslaved_elsewhere_needs_force():
    fake = FakeNetlink()
    fake.links_[5] = nl.Link(5, "br0", kind="bridge", up=True)
    fake.links_[3].master = 5
    with pytest.raises(vrf_module.VrfError, match=r"interfaces\[0\]: wlp1s0 is already enslaved to br0"):
        run(fake)
    assert fake.calls == []


def test_table_of_another_vrf_and_name_of_non_vrf():
    fake = FakeNetlink()
    fake.links_[7] = nl.Link(7, "other-vrf", kind="vrf", up=True, vrf_table=10)
    with pytest.raises(vrf_module.VrfError, match="table: table 10 is already used by VRF other-vrf"):
        run(fake)
    with pytest.raises(vrf_module.VrfError, match="name: usb0 exists and is a veth device"):
        run(fake, name="usb0", table=11, interfaces=[])
    assert fake.calls == []


def test_missing_interface_names_the_field():
    with pytest.raises(vrf_module.VrfError, match=r"interfaces\[1\]: interface wwan0 does not exist"):
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
    with pytest.raises(vrf_module.VrfError, match=r"interfaces\[0\]: wlp1s0 carries the host's preferred default"):
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
