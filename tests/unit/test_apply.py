"""module_utils/apply.py, the engine of netlb.multiwan.balancer_apply, on a temp dir and a
fake kernel: the host's drains kept (the document read under the lock, at the moment of
writing), idempotent, check mode writes nothing, a broken document replaced, every
uplink's routing checked before the first change, what the record has and the plan lacks
retired. On real kernels: the role's tests (containers, the VM lab)."""
import contextlib
import json

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import apply, cli, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing as routing
from tests.unit.fake_netlink import FakeNetlink

PLANNED = {"version": 1, "steering": "fwmark", "policy": "random", "attachments": [],
           "uplinks": [{"slot": 0, "name": "mobile", "interface": "usb0"},
                       {"slot": 1, "name": "wifi", "interface": "wlp1s0"}]}
GW = [{"dst": "default", "gateway": "10.0.0.1"}]
VRFS = {"version": 1, "steering": "vrf", "policy": "random", "attachments": [], "force": False,
        "uplinks": [{"slot": 0, "name": "mobile", "interface": "usb0", "vrf": "mobile-vrf", "table": 11,
                     "routes": [{"dst": "default", "gateway": "192.0.2.1"}]},
                    {"slot": 1, "name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "table": 10, "routes": GW}]}


@pytest.fixture(autouse=True)
def no_sessions(monkeypatch):
    monkeypatch.setattr(routing, "current_sessions", set)
    monkeypatch.setattr(nl, "vrf_support", lambda: (True, "fake"))


def run(path, planned=None, fake=None, keep_drains=True, check_mode=False):
    fake = fake or FakeNetlink()
    planned = dict(planned or PLANNED, state_dir=str(path.parent))
    engine = apply.Apply(planned, lambda params: cli.Host(params, check_mode), path=str(path),
                         keep_drains=keep_drains, check_mode=check_mode,
                         netlink=lambda: contextlib.nullcontext(fake))
    doc = engine.run()
    return engine, [u["name"] for u in doc["uplinks"] if u["drained"]]


def drained(path):
    return [u["name"] for u in json.loads(path.read_text())["uplinks"] if u["drained"]]


def test_a_new_host_gets_the_planned_document_with_nothing_drained(tmp_path):
    path = tmp_path / "balancer.json"
    engine, names = run(path)
    assert engine.changed and names == [] and engine.document_before is None
    assert engine.actions["document"] == ["write %s" % path]
    assert path.read_text() == engine.document_after == state_store.render(
        dict(PLANNED, state_dir=str(tmp_path), uplinks=[dict(u, drained=False) for u in PLANNED["uplinks"]]))
    assert run(path)[0].changed is False


def test_a_drain_made_on_the_host_is_kept_and_undrain_too(tmp_path):
    path = tmp_path / "balancer.json"
    run(path)
    doc = state_store.load(str(path))
    doc["uplinks"][1]["drained"] = True  # netlb-multiwan drain wifi, during the run
    state_store.save(str(path), doc)
    engine, names = run(path)
    assert not engine.changed and names == ["wifi"] and drained(path) == ["wifi"]
    renamed = dict(PLANNED, policy="round_robin")
    assert run(path, renamed)[1] == ["wifi"] and drained(path) == ["wifi"]
    # keep_drains: false undrains.
    engine, names = run(path, renamed, keep_drains=False)
    assert engine.changed and names == [] and drained(path) == []


def test_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "etc" / "balancer.json"
    engine, _names = run(path, check_mode=True)
    assert engine.changed and engine.document_after and not path.parent.exists()


def test_a_document_that_is_not_json_is_replaced_with_a_warning(tmp_path):
    path = tmp_path / "balancer.json"
    path.write_text("{not json")
    engine, names = run(path)
    assert engine.changed and names == [] and engine.document_before == "{not json"
    assert engine.warnings == ["%s: is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
                               "(char 1); it is replaced, with no drain kept and nothing retired" % path]
    assert json.loads(path.read_text())["steering"] == "fwmark"


def test_vrfs_are_made_once_and_retired_when_the_plan_drops_them(tmp_path):
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    engine, _names = run(path, VRFS, fake)
    assert "mobile: create vrf mobile-vrf table 11" in engine.actions["routing"]
    assert "wifi: create vrf wifi-vrf table 10" in engine.actions["routing"]
    fake.calls.clear()
    engine, _names = run(path, VRFS, fake)
    assert not engine.changed and fake.calls == []
    # wifi leaves the plan: its VRF goes, mobile's stays.
    engine, _names = run(path, dict(VRFS, uplinks=VRFS["uplinks"][:1]), fake)
    assert engine.actions["routing"] == [] and "delete vrf wifi-vrf" in engine.actions["retire"]
    assert sorted(lk.name for lk in fake.links() if lk.kind == "vrf") == ["mobile-vrf"]


def test_a_refused_uplink_stops_the_run_before_any_change(tmp_path, monkeypatch):
    # The Ansible connection arrives over wifi, the second uplink: mobile, the first, is
    # not moved either.
    monkeypatch.setattr(routing, "current_sessions", lambda: {("10.0.0.2", "10.0.0.77")})
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    with pytest.raises(apply.ApplyError, match="routing: uplink wifi .wlp1s0.: .*wlp1s0 carries the current "
                                               "connection from 10.0.0.77") as raised:
        run(path, VRFS, fake)
    assert raised.value.field == "uplinks[1]" and fake.calls == [] and not path.exists()


def test_mptcp_over_vrfs_is_refused_before_any_change(tmp_path):
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    with pytest.raises(apply.ApplyError, match="check: mptcp paths: MPTCP needs fwmark or device steering") as raised:
        run(path, dict(VRFS, mptcp="paths"), fake)
    assert raised.value.field == "mptcp" and fake.calls == [] and not path.exists()


@pytest.mark.parametrize("recorded, planned, gone", [
    (VRFS, dict(VRFS, uplinks=VRFS["uplinks"][:1]), [("vrf", "wifi-vrf")]),
    (VRFS, dict(VRFS, steering="fwmark", uplinks=[dict(u, vrf=None, mark=u["table"]) for u in VRFS["uplinks"]]),
     [("vrf", "mobile-vrf"), ("vrf", "wifi-vrf")]),
    (dict(VRFS, steering="fwmark", uplinks=[dict(u, vrf=None, mark=7) for u in VRFS["uplinks"][1:]]),
     dict(VRFS, steering="fwmark", uplinks=[dict(u, vrf=None, mark=8) for u in VRFS["uplinks"][1:]]),
     [("fwmark", 10, 7)]),
    (None, VRFS, []),
])
def test_retired_is_what_the_record_routes_and_the_plan_does_not(recorded, planned, gone):
    got = [(kind, p["name"]) if kind == "vrf" else (kind, p["table"], p["mark"])
           for kind, p in apply.retired(recorded, planned)]
    assert got == gone
    assert all(p["state"] == "absent" for _kind, p in apply.retired(recorded, planned))


def remove(path, planned=None, fake=None, check_mode=False):
    engine = apply.Apply(planned and dict(planned, state_dir=str(path.parent)),
                         lambda params: cli.Host(params, check_mode), path=str(path), check_mode=check_mode,
                         netlink=lambda: contextlib.nullcontext(fake or FakeNetlink()))
    return engine, engine.remove()


def test_absent_removes_what_the_record_and_the_plan_name_once_each(tmp_path):
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    run(path, dict(VRFS, uplinks=VRFS["uplinks"][:1]), fake)
    # wifi is in the inventory but no run recorded it (made by hand, or a run that failed).
    run(tmp_path / "other.json", VRFS, fake)
    engine, recorded = remove(path, VRFS, fake, check_mode=True)
    assert [a for a in engine.actions["retire"] if a.startswith("delete vrf")] == \
        ["delete vrf mobile-vrf", "delete vrf wifi-vrf"]
    assert engine.actions["document"] == ["remove %s" % path] and path.exists()
    assert sorted(lk.name for lk in fake.links() if lk.kind == "vrf") == ["mobile-vrf", "wifi-vrf"]
    engine, recorded = remove(path, VRFS, fake)
    assert engine.changed and [u["name"] for u in recorded["uplinks"]] == ["mobile"] and not path.exists()
    assert [lk.name for lk in fake.links() if lk.kind == "vrf"] == []
    engine, recorded = remove(path, VRFS, fake)
    assert not engine.changed and recorded is None


def test_absent_without_a_plan_removes_what_the_record_names(tmp_path):
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    run(path, VRFS, fake)
    engine, _recorded = remove(path, None, fake)
    assert [a for a in engine.actions["retire"] if a.startswith("delete vrf")] == \
        ["delete vrf mobile-vrf", "delete vrf wifi-vrf"]
    assert remove(tmp_path / "none" / "balancer.json")[0].changed is False


def test_an_attachment_the_plan_drops_is_detached():
    slice_ = {"cgroup": "multiwan.slice", "pin_dir": "/sys/fs/bpf/netlb_slice", "slice": "multiwan.slice"}
    root = {"cgroup": "/", "pin_dir": "/sys/fs/bpf/netlb"}
    assert apply.dropped_attachments(dict(PLANNED, attachments=[root, slice_]), dict(PLANNED, attachments=[root])) \
        == [slice_]
    assert apply.dropped_attachments(None, PLANNED) == []
    moved = dict(root, pin_dir="/sys/fs/bpf/other")
    assert apply.dropped_attachments(dict(PLANNED, attachments=[root]), dict(PLANNED, attachments=[moved])) == [root]


def test_an_uplink_whose_routing_goes_is_first_taken_out_of_the_running_maps(tmp_path, monkeypatch):
    gone = dict(VRFS, uplinks=VRFS["uplinks"][:1])
    assert apply.leaving(VRFS, apply.retired(VRFS, gone)) == ["wifi"]
    assert apply.leaving(VRFS, apply.retired(VRFS, VRFS)) == [] and apply.leaving(None, []) == []
    # The order of the phases: the recorded maps without wifi, then its VRF removed.
    order = []
    monkeypatch.setattr(apply.Apply, "map_changes", lambda self, doc, routing=True: order.append(
        ("maps", [u["name"] for u in doc["uplinks"] if not u.get("drained")], [a["cgroup"] for a in doc["attachments"]]))
        or ["selection"])
    monkeypatch.setattr(cli, "maps_pinned", lambda attachment: True)
    monkeypatch.setattr(apply.Apply, "retire_routing", lambda self, pieces, link: order.append(
        ("retire", [p["name"] for _kind, p in pieces])))
    monkeypatch.setattr(apply, "attach_all", lambda doc, host_factory, check_mode: ([], []))
    path, fake = tmp_path / "balancer.json", FakeNetlink()
    attached = dict(VRFS, attachments=[{"cgroup": "multiwan", "pin_dir": str(tmp_path / "pins")}])
    run(path, attached, fake)
    order.clear()
    engine, _names = run(path, dict(attached, uplinks=attached["uplinks"][:1]), fake)
    assert order == [("maps", ["mobile"], ["multiwan"]), ("retire", ["wifi-vrf"]), ("maps", ["mobile"], ["multiwan"])]
    assert engine.actions["withdraw"] == ["wifi: selection"]
