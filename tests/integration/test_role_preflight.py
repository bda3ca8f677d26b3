"""The role's preflight on the controller alone: every host's inventory is checked in one
task before any host is touched, and a refusal names the host and the variable. Hosts
with connection local that nothing connects to: only the preflight runs (tasks_from)."""
import json
import subprocess

import pytest

from tests.integration.ansible_runner import ansible_bin, ansible_env

pytestmark = pytest.mark.hostkernel  # in make check: a few seconds, no namespace needed

UPLINKS = [{"name": "mobile", "interface": "usb0", "weight": 2},
           {"name": "wifi", "interface": "wlp1s0", "table": 100, "mark": 256, "gateway": "10.0.0.1", "weight": 1}]
PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: netlb.multiwan.balancer
        tasks_from: preflight.yml
    - ansible.builtin.copy:
        content: "{{ _balancer_all_plans | to_json }}"
        dest: "{{ plans_file }}"
      delegate_to: localhost
      run_once: true
"""


def preflight(tmp_path, hosts):
    inventory = {"all": {"hosts": dict((name, dict({"ansible_connection": "local", "balancer_steering": "fwmark"},
                                                    **host)) for name, host in hosts.items())}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    proc = subprocess.run([ansible_bin("ansible-playbook"), "-i", str(tmp_path / "hosts.json"), str(tmp_path / "pb.yml"),
                           "-e", "plans_file=%s" % (tmp_path / "plans.json")],
                          capture_output=True, text=True, env=ansible_env(), timeout=300, check=False)
    plans = json.loads((tmp_path / "plans.json").read_text()) if proc.returncode == 0 else None
    return proc, plans


def test_every_host_is_planned_in_one_task(tmp_path):
    proc, plans = preflight(tmp_path, {"a": {"balancer_uplinks": UPLINKS},
                                       "b": {"balancer_uplinks": UPLINKS[:1], "balancer_slice": "apps-web"},
                                       "gone": {"balancer_state": "absent"}})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(plans) == ["a", "b"]  # a host torn down without uplinks has nothing to plan
    assert [u["name"] for u in plans["a"]["uplinks"]] == ["mobile", "wifi"] and plans["a"]["routing"][0]["table"] == 100
    assert proc.stdout.count("TASK [netlb.multiwan.balancer : Validate") == 1


@pytest.mark.parametrize("bad, message", [
    ({"balancer_uplinks": [UPLINKS[0], dict(UPLINKS[1], weight=0)]},
     "b: balancer_uplinks[1].weight: must be an integer 1-1000, got 0"),
    ({"balancer_uplinks": UPLINKS, "balancer_slice": "bad slice"}, "b: balancer_slice: "),
])
def test_one_bad_host_fails_the_play_naming_it(tmp_path, bad, message):
    proc, _plans = preflight(tmp_path, {"a": {"balancer_uplinks": UPLINKS}, "b": bad})
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
