"""playbooks/site.yml (role netlb.multiwan.balancer) on a blank host, in the UML kernel.

One guest boot (tests/integration/role_scenarios.py). Still to come for the
role issue: persistence across reboot, and a fleet of guests over SSH.
"""

import pytest

from tests.integration.role_scenarios import RESULT_MARKER
from tests.integration.guest import assert_same, guest_facts

pytestmark = pytest.mark.uml


@pytest.fixture(scope="module")
def facts():
    return guest_facts("tests.integration.role_scenarios", RESULT_MARKER, timeout=2400)



def test_check_diff_on_blank_host_reports_changes_and_changes_nothing(facts):
    run = facts["check"]
    assert run["rc"] == 0 and run["changed"] > 0, run["output"]
    assert "+vrf: wifi-vrf" in run["output"]
    assert_same(facts["blank"], facts["after_check"])


def test_site_reproduces_the_original_experiment(facts):
    assert facts["run1"]["rc"] == 0, facts["run1"]["output"]
    applied = facts["applied"]
    assert "master wifi-vrf" in applied["link"] and "vrf table 10" in applied["link"]
    assert "default via %s" % facts["addresses"]["usb0"].rsplit(".", 1)[0] in applied["route4"]
    assert "cgroup_inet4_connect" in applied["cgroup_tree"] and "cgroup_inet6_connect" in applied["cgroup_tree"]
    # round_robin: the ten streams alternate over both uplinks.
    hosts = facts["iperf"]["local_hosts"]
    assert set(hosts) == {facts["addresses"]["usb0"], facts["addresses"]["wlp1s0"]}, facts["iperf"]


def test_second_run_changes_nothing(facts):
    assert facts["run2"]["rc"] == 0 and facts["run2"]["changed"] == 0, facts["run2"]["output"]


def test_invalid_inventory_fails_before_any_change(facts):
    run = facts["invalid"]
    assert run["rc"] != 0
    assert "balancer_uplinks[1].weight: must be an integer 1-1000, got 0" in run["output"]
    assert_same(facts["before_invalid"], facts["after_invalid"])


def test_absent_restores_the_blank_host(facts):
    assert facts["absent"]["rc"] == 0, facts["absent"]["output"]
    assert_same(facts["blank"], facts["after_absent"])
