"""playbooks/site.yml (role netlb.multiwan.balancer) on a blank host, in the VM lab's kernel (Debian's, under QEMU).

Two guest boots (tests/integration/role_scenarios.py): the first provisions a
blank host with VRF steering and saves what it wrote to its root; the second is
a fresh kernel on that root running only the boot units (tests/integration/reboot.py).
Check + diff, idempotence, invalid input and absent: test_role_containers.py.
"""

import json
import shutil
import tempfile

import pytest

from tests.integration.role_scenarios import RESULT_MARKER
from tests.integration.guest import guest_facts

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def saved_root():
    path = tempfile.mkdtemp(prefix="netlb-root-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def facts(saved_root):
    return guest_facts("tests.integration.role_scenarios", RESULT_MARKER, timeout=1800,
                       env={"NETLB_SAVE_ROOT": saved_root}, shares=(saved_root,))


@pytest.fixture(scope="module")
def rebooted(facts, saved_root):
    return guest_facts("tests.integration.role_scenarios", RESULT_MARKER, timeout=900,
                       env={"NETLB_REBOOT_FROM": saved_root}, shares=(saved_root,))


def test_site_reproduces_the_original_experiment(facts):
    assert facts["run1"]["rc"] == 0 and facts["run1"]["failed"] == 0, facts["run1"]["output"]
    assert "master wifi-vrf" not in facts["blank"]["link"]
    applied = facts["applied"]
    assert "master wifi-vrf" in applied["link"] and "vrf table 10" in applied["link"]
    assert "default via %s" % facts["addresses"]["usb0"].rsplit(".", 1)[0] in applied["route4"]
    assert "cgroup_inet4_connect" in applied["cgroup_tree"] and "cgroup_inet6_connect" in applied["cgroup_tree"]
    # round_robin: the ten streams alternate over both uplinks.
    hosts = facts["iperf"]["local_hosts"]
    assert set(hosts) == {facts["addresses"]["usb0"], facts["addresses"]["wlp1s0"]}, facts["iperf"]


def test_role_installs_boot_units_and_state_file(facts):
    assert facts["units"] == ["netlb-multiwan-bpf.service", "netlb-multiwan-uplink-wifi.service"], facts["units"]
    state = json.loads(facts["state_file"])
    assert state["steering"] == "vrf" and state["policy"] == "round_robin"
    assert [u["name"] for u in state["uplinks"]] == ["mobile", "wifi"]
    assert state["uplinks"][1]["vrf"] == "wifi-vrf" and state["uplinks"][1]["table"] == 10
    # No systemd as PID 1 in the guest: no slice, the plain cgroup only.
    assert state["attachments"] == [{"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb_multiwan"}]


def test_reboot_runs_only_the_boot_units_and_balances_again(rebooted, facts):
    boot = rebooted["boot"]
    assert [u["unit"] for u in boot["units"]] == ["netlb-multiwan-uplink-wifi.service", "netlb-multiwan-bpf.service"]
    assert all(u["rc"] == 0 for u in boot["units"]), boot["units"]
    assert boot["modules"] == [{"module": "vrf", "rc": 0}]
    for key, before in facts["boot_view"].items():
        after = rebooted["boot_view"][key]
        assert after == before, "%s after reboot: missing %s, extra %s" % (
            key, sorted(set(before) - set(after)), sorted(set(after) - set(before)))
    hosts = rebooted["iperf"]["local_hosts"]
    assert set(hosts) == set(rebooted["addresses"].values()), rebooted["iperf"]


def test_boot_units_are_idempotent(rebooted):
    assert all(u["rc"] == 0 for u in rebooted["boot_again"]["units"]), rebooted["boot_again"]
    assert rebooted["boot_view_again"] == rebooted["boot_view"]


def test_unit_files_pass_systemd_analyze_verify(rebooted):
    verify = rebooted["boot"]["verify"]
    assert verify["rc"] == 0, verify["output"]


def status_uplinks(status):
    return {u["name"]: u for u in status["json"]["uplinks"]}


def test_status_command_shows_both_uplinks_and_their_connections(facts):
    status = facts["status"]
    assert status["rc"] == 0, status["text"]
    assert "problems: none" in status["text"]
    uplinks = status_uplinks(status)
    # iperf3 -P10 round_robin: 10 data streams + the control connection.
    assert uplinks["mobile"]["connections"] >= 5 and uplinks["wifi"]["connections"] >= 5, status["text"]


def test_status_after_reboot_has_no_problems(rebooted):
    status = rebooted["status"]
    assert status["rc"] == 0, status["text"]
    assert status_uplinks(status)["wifi"]["connections"] >= 5, status["text"]
