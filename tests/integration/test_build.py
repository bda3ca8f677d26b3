"""The role's build (tasks/build.yml, compile.yml) run by ansible-playbook on this machine,
which has clang: balancer_build_on host compiles on the managed host and installs the
object into the state directory; a second run compiles nothing and changes nothing.
A controller build is what every role test runs (its object then installed by balancer_apply)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.ansible_runner import play_recap, run_playbook

pytestmark = pytest.mark.hostkernel


def test_a_host_build_compiles_once_and_installs_the_object(tmp_path):
    state_dir = tmp_path / "state"
    extra = {"balancer_build_on": "host", "balancer_state_dir": str(state_dir)}
    first = run_playbook("build_cases.yml", extra)
    assert first["rc"] == 0, first["output"][-3000:]
    (build,) = (state_dir / "build").iterdir()  # named after the source's digest
    installed = state_dir / "multiwan.bpf.o"
    assert installed.read_bytes()[:4] == b"\x7fELF"
    assert installed.read_bytes() == (build / "multiwan.bpf.o").read_bytes()
    assert (build / "multiwan.bpf.o.b64").exists()
    digest = hashlib.sha256(installed.read_bytes()).hexdigest()
    second = run_playbook("build_cases.yml", extra)
    assert second["rc"] == 0 and play_recap(second["output"])["localhost"]["changed"] == 0, second["output"][-3000:]
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == digest


def test_a_cached_controller_build_runs_no_build_task(tmp_path):
    extra = {"balancer_build_on": "controller", "balancer_build_cache": str(tmp_path / "cache"),
             "balancer_state_dir": str(tmp_path / "state")}
    first = run_playbook("build_cases.yml", extra)
    assert first["rc"] == 0, first["output"][-3000:]
    assert len(list(Path(tmp_path / "cache").glob("*/multiwan.bpf.o.b64"))) == 1
    assert not (tmp_path / "state").exists()  # balancer_apply installs it, with the role's other files
    second = run_playbook("build_cases.yml", extra)
    assert second["rc"] == 0 and "TASK [netlb.multiwan.balancer : Compile (once" not in second["output"], second["output"]
    assert "skipping: [localhost]" in second["output"].split("Compile and install the program")[1][:200]
