"""module_utils/mptcp against a fake path manager and fake links: which endpoints the
runtime state asks for, what is recorded, what an operator made, what off puts back,
and the refusals. The live check (one connection over both uplinks, a link's failure
ridden through): tests/integration/test_role_mptcp_containers.py."""
import json

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import mptcp, mptcp_upgrade, tracker


class Link(object):
    def __init__(self, index, name):
        self.index, self.name = index, name


class FakeLinks(object):
    """usb0 (index 3): 192.0.2.2 and 2001:db8:1::2; wlp1s0 (5): 198.51.100.2."""

    links = {"usb0": Link(3, "usb0"), "wlp1s0": Link(5, "wlp1s0")}
    addresses = {3: {4: ["192.0.2.2/24"], 6: ["2001:db8:1::2/64"]}, 5: {4: ["198.51.100.2/24"], 6: []}}

    def link(self, name=None, index=None):
        if index is not None:
            return next(l for l in self.links.values() if l.index == index)
        return self.links.get(name)

    def global_addresses(self, index, family):
        return self.addresses[index][family]


class FakePathManager(object):
    """The kernel's endpoints and limits, shared by every instance of a test."""

    def __init__(self, endpoints=(), limits=(2, 0)):
        self.endpoints_, self.limits_, self.next_id, self.calls = list(endpoints), list(limits), 1, []

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def endpoints(self):
        return list(self.endpoints_)

    def add(self, address, flags, ifindex):
        self.calls.append(("add", address))
        self.endpoints_.append(mptcp.Endpoint(self.next_id, address, flags, ifindex))
        self.next_id += 1

    def delete(self, endpoint):
        self.calls.append(("delete", endpoint.address))
        self.endpoints_ = [e for e in self.endpoints_ if e.address != endpoint.address]

    def set_flags(self, endpoint, flags):
        self.calls.append(("flags", endpoint.address))
        endpoint.flags = flags

    def limits(self):
        return tuple(self.limits_)

    def set_limits(self, subflows, add_addr_accepted):
        self.limits_ = [subflows, add_addr_accepted]

    def table(self):
        return dict((e.address, (e.ifindex, mptcp.flag_names(e.flags))) for e in self.endpoints_)


MOBILE = {"name": "mobile", "interface": "usb0"}
WIFI = {"name": "wifi", "interface": "wlp1s0"}


def doc(tmp_path, mode="paths", steering="fwmark"):
    return {"mptcp": mode, "steering": steering, "ipv6": True, "state_dir": str(tmp_path / "state")}


def test_an_endpoint_per_uplink_address_recorded_and_the_limit_raised(tmp_path):
    pm = FakePathManager()
    d = doc(tmp_path)
    actions = mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm)
    assert actions == ["mptcp: add endpoint 192.0.2.2 dev usb0 (mobile) subflow",
                       "mptcp: add endpoint 198.51.100.2 dev wlp1s0 (wifi) subflow",
                       "mptcp: add endpoint 2001:db8:1::2 dev usb0 (mobile) subflow",
                       "mptcp: limits subflows 3 (was 2)"]
    assert pm.table() == {"192.0.2.2": (3, ["subflow"]), "198.51.100.2": (5, ["subflow"]),
                          "2001:db8:1::2": (3, ["subflow"])}
    assert json.loads((tmp_path / "state" / "mptcp.json").read_text()) == {
        "endpoints": ["192.0.2.2", "198.51.100.2", "2001:db8:1::2"], "limits": [2, 0]}
    assert mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm) == []


def test_check_mode_changes_nothing(tmp_path):
    pm = FakePathManager()
    assert len(mptcp.converge(doc(tmp_path), [MOBILE, WIFI], FakeLinks(), check_mode=True, path_manager=pm)) == 4
    assert pm.calls == [] and pm.limits() == (2, 0)
    assert not (tmp_path / "state").exists()


def test_down_drained_or_spent_uplinks_lose_their_endpoints_and_a_higher_tier_is_backup(tmp_path):
    pm = FakePathManager()
    d = doc(tmp_path)
    mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm)
    for state in ({"down": True}, {"drained": True}, {"spent": True}, {"weight": 0}):
        assert mptcp.converge(d, [MOBILE, dict(WIFI, **state)], FakeLinks(), path_manager=pm) == [
            "mptcp: delete endpoint 198.51.100.2"], state
        assert "198.51.100.2" not in pm.table()
        assert mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm) == [
            "mptcp: add endpoint 198.51.100.2 dev wlp1s0 (wifi) subflow"]
    # A backup tier: its endpoint stays, flagged backup, until the tier above has no pickable uplink.
    assert mptcp.converge(d, [MOBILE, dict(WIFI, tier=2)], FakeLinks(), path_manager=pm) == [
        "mptcp: endpoint 198.51.100.2 (wifi) now subflow backup"]
    assert mptcp.converge(d, [dict(MOBILE, down=True), dict(WIFI, tier=2)], FakeLinks(), path_manager=pm) == [
        "mptcp: endpoint 198.51.100.2 (wifi) now subflow", "mptcp: delete endpoint 192.0.2.2",
        "mptcp: delete endpoint 2001:db8:1::2"]


def test_off_removes_what_it_made_and_puts_the_limit_back_but_never_the_operators(tmp_path):
    operators = mptcp.Endpoint(7, "198.51.100.2", mptcp.FLAG_SIGNAL, 0)
    pm = FakePathManager([operators], limits=(1, 4))
    d = doc(tmp_path)
    mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm)
    assert pm.table()["198.51.100.2"] == (0, ["signal"]), "the operator's endpoint is left as it was"
    assert pm.limits() == (3, 4)
    assert mptcp.converge(doc(tmp_path, "off"), [MOBILE, WIFI], FakeLinks(), path_manager=pm) == [
        "mptcp: delete endpoint 192.0.2.2", "mptcp: delete endpoint 2001:db8:1::2",
        "mptcp: limits subflows 1 (as before)"]
    assert pm.table() == {"198.51.100.2": (0, ["signal"])} and pm.limits() == (1, 4)
    assert not (tmp_path / "state" / "mptcp.json").exists()
    # Off with nothing recorded never opens the path manager (a kernel without MPTCP is fine).
    assert mptcp.converge(doc(tmp_path, "off"), [MOBILE, WIFI], FakeLinks(), path_manager=None) == []


def test_an_endpoint_of_ours_on_another_device_is_made_again(tmp_path):
    pm = FakePathManager()
    d = doc(tmp_path)
    mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm)
    pm.endpoints_[0].ifindex = 9  # the interface was replaced (a replugged modem)
    assert mptcp.converge(d, [MOBILE, WIFI], FakeLinks(), path_manager=pm) == [
        "mptcp: delete endpoint 192.0.2.2 id 1 subflow ifindex 9",
        "mptcp: add endpoint 192.0.2.2 dev usb0 (mobile) subflow"]


@pytest.mark.parametrize("document, enabled, reason", [
    ({"mptcp": "off", "steering": "vrf"}, None, None),
    ({"mptcp": "paths", "steering": "fwmark"}, "1\n", None),
    ({"mptcp": "paths", "steering": "device"}, "1\n", None),
    ({"mptcp": "paths", "steering": "vrf"}, "1\n", "MPTCP needs fwmark or device steering"),
    ({"mptcp": "paths", "steering": "fwmark"}, "0\n", "net.mptcp.enabled is 0 on this host"),
    ({"mptcp": "paths", "steering": "fwmark"}, None, "the kernel has no MPTCP"),
])
def test_what_a_host_cannot_have_is_refused(tmp_path, document, enabled, reason):
    sysctl = tmp_path / "enabled"
    if enabled is not None:
        sysctl.write_text(enabled)
    found = mptcp.check(document, path=str(sysctl))
    assert (found is None) if reason is None else found.startswith(reason), found


def test_the_upgrade_counters_are_summed_over_cpus_and_shown(tmp_path):
    """mptcp_upgrade.observe: the attached program's per-CPU counters, BTF-formatted or raw;
    a document asking for upgrade without the program attached is a problem."""
    doc = {"mptcp": "upgrade", "attachments": [{"cgroup": "netlb.slice", "pin_dir": str(tmp_path / "pins")}]}
    assert mptcp_upgrade.observe(dict(doc, mptcp="paths"), None) == (None, [])
    found, problems = mptcp_upgrade.observe(doc, None)
    assert found["attached"] is False and problems[0].startswith("mptcp: the upgrade program is not attached")
    here = tmp_path / "pins_mptcp" / "0123456789abcdef"
    here.mkdir(parents=True)
    (here / "link").write_text("")
    formatted = [{"key": 0, "values": [{"cpu": 0, "value": 3}, {"cpu": 1, "value": 4}]},
                 {"key": 1, "values": [{"cpu": 0, "value": 0}, {"cpu": 1, "value": 9}]}]
    raw = [{"key": ["0x00", "0x00", "0x00", "0x00"], "values": [{"cpu": 0, "value": ["0x07"] + ["0x00"] * 7}]},
           {"key": ["0x01", "0x00", "0x00", "0x00"], "values": [{"cpu": 1, "value": ["0x09"] + ["0x00"] * 7}]}]
    for dump in ([{"formatted": e} for e in formatted], raw):
        seen = []
        found, problems = mptcp_upgrade.observe(doc, lambda path, dump=dump: seen.append(path) or dump)
        assert (found, problems) == ({"attached": True, "upgraded": 7, "left_alone": 9}, []), found
        assert seen == [str(here / "maps" / "mw_upgrade_counters")]

    def unreadable(path):
        raise ValueError("bpftool not found")
    assert mptcp_upgrade.observe(doc, unreadable)[1] == ["mptcp: the upgrade counters not read (bpftool not found)"]
    multipath = {"connections": 1, "fell_back": 0, "fallbacks_since_boot": 0, "subflows": {}, "endpoints": {},
                 "upgrade": {"attached": True, "upgraded": 7, "left_alone": 9}}
    text = tracker.render_metrics({"uplinks": []}, {}, None, multipath=multipath)
    assert "netlb_multiwan_mptcp_upgraded_sockets_total 7" in text
    assert "netlb_multiwan_mptcp_upgrade_left_alone_sockets_total 9" in text
