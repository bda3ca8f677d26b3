"""The role with each supported ansible-core (make compat): one real run in a systemd container.

`make compat` runs this file once per ansible-core minor from meta/runtime.yml's
requires_ansible up to the newest installable, each time with that minor's
ansible-playbook (NETLB_ANSIBLE_BIN_DIR): check mode on the blank host changes nothing,
the run applies, the second run changes nothing, absent restores the blank host. The
behaviours themselves are proven once, with the newest ansible-core, by
test_role_containers.py; this file proves the role runs the same on every version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.ansible_runner import ansible_bin, site_over_ssh
from tests.integration.laptop import fwmark_laptop_vars, laptop
from tests.integration.test_role_containers import SNAPSHOT, assert_same
from tests.lab.containers import ContainerFleet, containers_available

# The first test pays the four site.yml runs.
pytestmark = [pytest.mark.containers, pytest.mark.compat, pytest.mark.timeout(900)]


def fleet_name() -> str:
    """make test runs two minors at once (scripts/test-suite.sh): one fleet name each."""
    minor = os.environ.get("NETLB_COMPAT_MINOR", "")
    return "nlbc" + minor.replace(".", "") if minor else "nlbcompat"


@pytest.fixture(scope="module")
def runs():
    with laptop(ContainerFleet, containers_available, fleet_name()) as (tmp, fleet, guest):
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": {"laptop": fwmark_laptop_vars(tmp, fleet, guest)}}}))

        def snapshot() -> dict:
            return {key: (lambda p: p.stdout + p.stderr)(fleet.ssh(guest, command)) for key, command in SNAPSHOT.items()}

        version = fleet.controller_run([ansible_bin("ansible"), "--version"], timeout=60)
        r: dict = {"version": version.stdout.splitlines()[0] if version.stdout else version.stderr}
        r["blank"] = snapshot()
        r["check"] = site_over_ssh(fleet, inventory, "--check", "--diff")
        r["after_check"] = snapshot()
        r["apply"] = site_over_ssh(fleet, inventory)
        r["applied"] = snapshot()
        r["again"] = site_over_ssh(fleet, inventory)
        r["absent"] = site_over_ssh(fleet, inventory, "-e", "balancer_state=absent")
        r["after_absent"] = snapshot()
    print("role run with %s: check %d s, apply %d s, again %d s, absent %d s" % (
        r["version"], r["check"]["seconds"], r["apply"]["seconds"], r["again"]["seconds"], r["absent"]["seconds"]))
    return r


def test_check_mode_reports_changes_and_changes_nothing(runs):
    assert runs["check"]["rc"] == 0 and runs["check"]["changed"] > 0, runs["check"]["output"]
    assert_same(runs["blank"], runs["after_check"])


def test_the_run_routes_the_fwmark_uplink_and_attaches_the_program(runs):
    assert runs["apply"]["rc"] == 0 and runs["apply"]["changed"] > 0, runs["apply"]["output"]
    assert "fwmark 0x100 lookup 100" in runs["applied"]["rule4"], runs["applied"]["rule4"]
    assert "connect4" in runs["applied"]["cgroup_progs"], runs["applied"]["cgroup_progs"]


def test_the_second_run_changes_nothing(runs):
    assert runs["again"]["rc"] == 0 and runs["again"]["changed"] == 0, runs["again"]["output"]


def test_absent_restores_the_blank_host(runs):
    assert runs["absent"]["rc"] == 0, runs["absent"]["output"]
    assert_same(runs["blank"], runs["after_absent"])
