"""make compat's choice of ansible-core minors and interpreters (scripts/compat_plan.py)."""
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
compat_plan = runpy.run_path(str(ROOT / "scripts" / "compat_plan.py"), run_name="compat_plan")


def test_requires_ansible_gives_the_lowest_minor(tmp_path):
    runtime = tmp_path / "runtime.yml"
    runtime.write_text('---\nrequires_ansible: ">=2.15.0"\n')
    assert compat_plan["minimum"](str(runtime)) == (2, 15)
    assert compat_plan["minimum"](str(ROOT / "meta" / "runtime.yml")) >= (2, 15)


def test_an_unparsable_requires_ansible_is_an_error(tmp_path):
    runtime = tmp_path / "runtime.yml"
    runtime.write_text("---\nrequires_ansible: '<3'\n")
    with pytest.raises(SystemExit, match="requires_ansible"):
        compat_plan["minimum"](str(runtime))


def test_each_minor_from_the_lowest_up_with_the_oldest_python_offering_it():
    offers = [("python3.11", {(2, 14), (2, 15), (2, 16), (2, 19)}),
              ("python3.12", {(2, 16), (2, 19), (2, 20), (2, 21)})]
    assert compat_plan["plan"]((2, 15), offers) == {
        (2, 15): "python3.11", (2, 16): "python3.11", (2, 19): "python3.11",
        (2, 20): "python3.12", (2, 21): "python3.12"}
