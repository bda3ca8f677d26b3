"""netlb.multiwan.balancer_document's converge on a temp dir: the host's drains kept
(the document read at the moment of writing), idempotent, check mode writes nothing,
a broken document replaced. The drain made during a live role run:
tests/integration/test_role_runtime_containers.py."""
import json

from ansible_collections.netlb.multiwan.plugins.module_utils import state_store
from ansible_collections.netlb.multiwan.plugins.modules import balancer_document

PLANNED = {"version": 1, "steering": "fwmark",
           "uplinks": [{"slot": 0, "name": "mobile", "interface": "usb0"},
                       {"slot": 1, "name": "wifi", "interface": "wlp1s0"}]}


class FakeModule:
    def __init__(self, keep_drains=True, check_mode=False):
        self.params = {"keep_drains": keep_drains}
        self.check_mode = check_mode
        self.warnings = []

    def warn(self, text):
        self.warnings.append(text)


def drained(path):
    return [u["name"] for u in json.loads(path.read_text())["uplinks"] if u["drained"]]


def test_a_new_host_gets_the_planned_document_with_nothing_drained(tmp_path):
    path = tmp_path / "balancer.json"
    changed, names, before, after = balancer_document.converge(FakeModule(), PLANNED, str(path))
    assert changed and names == [] and before is None
    assert path.read_text() == after == state_store.render(
        dict(PLANNED, uplinks=[dict(u, drained=False) for u in PLANNED["uplinks"]]))
    assert balancer_document.converge(FakeModule(), PLANNED, str(path))[0] is False


def test_a_drain_made_on_the_host_is_kept_and_undrain_too(tmp_path):
    path = tmp_path / "balancer.json"
    balancer_document.converge(FakeModule(), PLANNED, str(path))
    doc = state_store.load(str(path))
    doc["uplinks"][1]["drained"] = True  # netlb-multiwan drain wifi, during the run
    state_store.save(str(path), doc)
    changed, names, _before, _after = balancer_document.converge(FakeModule(), PLANNED, str(path))
    assert not changed and names == ["wifi"] and drained(path) == ["wifi"]
    renamed = dict(PLANNED, policy="round_robin")
    assert balancer_document.converge(FakeModule(), renamed, str(path))[1] == ["wifi"]
    assert drained(path) == ["wifi"]
    # keep_drains: false undrains.
    assert balancer_document.converge(FakeModule(keep_drains=False), renamed, str(path))[:2] == (True, [])
    assert drained(path) == []


def test_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "balancer.json"
    changed, _names, _before, after = balancer_document.converge(FakeModule(check_mode=True), PLANNED, str(path))
    assert changed and after and not path.exists()


def test_a_document_that_is_not_json_is_replaced_with_a_warning(tmp_path):
    path = tmp_path / "balancer.json"
    path.write_text("{not json")
    module = FakeModule()
    changed, names, before, _after = balancer_document.converge(module, PLANNED, str(path))
    assert changed and names == [] and before == "{not json"
    assert module.warnings == ["%s was not JSON: replaced, with no drain kept" % path]
    assert json.loads(path.read_text())["steering"] == "fwmark"
