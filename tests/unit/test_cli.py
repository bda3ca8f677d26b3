"""`netlb-multiwan` (module_utils/cli.py) without a kernel: the state document
is the record, writers take turns, and a change made before the program is
attached (early in a boot) is recorded for the boot unit to apply. The maps
themselves are exercised on the host kernel by tests/integration/test_datapath_maps.py."""
import fcntl
import json
import os

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import cli

DOC = {
    "version": 1, "steering": "fwmark", "policy": "weighted",
    "attachments": [{"cgroup": "multiwan", "pin_dir": "/nonexistent/netlb_multiwan"}],
    "uplinks": [{"slot": 0, "name": "mobile", "weight": 1, "drained": False},
                {"slot": 1, "name": "wifi", "weight": 1, "drained": False}],
}


@pytest.fixture
def state(tmp_path):
    path = tmp_path / "balancer.json"
    path.write_text(json.dumps(DOC, indent=2) + "\n")
    return path


def test_a_drain_before_the_program_is_attached_is_recorded_for_the_boot_unit(state, capsys):
    assert cli.main(["--state", str(state), "drain", "wifi"]) == 0
    assert json.loads(state.read_text())["uplinks"][1]["drained"] is True
    assert "multiwan: not attached yet, applied when netlb-multiwan-bpf.service attaches" in capsys.readouterr().out


def test_weight_is_validated_and_recorded(state, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--state", str(state), "weight", "wifi", "1001"])
    assert "weight: must be an integer 0-1000, got 1001" in capsys.readouterr().err
    assert cli.main(["--state", str(state), "weight", "wifi", "3"]) == 0
    assert json.loads(state.read_text())["uplinks"][1]["weight"] == 3


def test_an_unknown_uplink_is_named(state):
    with pytest.raises(SystemExit, match="no uplink named 'lte' .uplinks: mobile, wifi."):
        cli.main(["--state", str(state), "drain", "lte"])


def test_save_keeps_the_roles_layout(state):
    before = state.read_text()
    cli.save(str(state), cli.load(str(state)))
    assert state.read_text() == before.replace(json.dumps(DOC, indent=2), json.dumps(DOC, indent=2, sort_keys=True))


def test_writers_take_turns_on_the_documents_directory(state):
    with cli.locked(str(state)):
        fd = os.open(str(state.parent), os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(str(state.parent), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving
    finally:
        os.close(fd)


def test_a_budget_is_set_or_its_usage_reset_in_the_document(state, capsys):
    with pytest.raises(SystemExit, match="wifi has no data budget"):
        cli.main(["--state", str(state), "budget", "wifi", "reset"])
    with pytest.raises(SystemExit):
        cli.main(["--state", str(state), "budget", "wifi", "set", "30X"])
    assert "size: must be a size such as 20G" in capsys.readouterr().err
    assert cli.main(["--state", str(state), "budget", "wifi", "set", "30G"]) == 0
    wifi = json.loads(state.read_text())["uplinks"][1]
    assert wifi["budget"] == {"bytes": 30 * 10 ** 9, "period": "month", "reset": 1, "when_spent": "drain"}
    assert cli.main(["--state", str(state), "budget", "wifi", "reset"]) == 0
    assert json.loads(state.read_text())["uplinks"][1]["budget_reset"] > 0
