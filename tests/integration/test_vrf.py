"""netlb.multiwan.vrf against a real VRF-capable kernel, in a network namespace.

Every scenario (tests/integration/vrf_scenarios.py) runs with real
ansible-playbook runs in one throw-away network namespace of the kernel; the
tests below assert on what the kernel showed (`ip -d link`, `ip addr`,
`ip route show table all`, `ip rule`) and on iperf3 traffic. Nothing here mocks
the kernel.

They need a kernel with VRF (mark needs_vrf): stock Debian, Ubuntu and Fedora
kernels run them here. On a kernel without VRF they are deselected, not
skipped; test_vrf_in_vm.py runs this very module under pytest inside a VM lab
guest (Debian's kernel), so the same namespace path runs on every machine.
"""
import pytest

from tests.integration.ansible_runner import failed_cleanly
from tests.integration.vrf_scenarios import RESULT_MARKER
from tests.integration.guest import assert_same, netns_facts

pytestmark = [pytest.mark.hostkernel, pytest.mark.needs_vrf]


@pytest.fixture(scope="module")
def facts():
    return netns_facts("tests.integration.vrf_scenarios", RESULT_MARKER, timeout=1500)


def only(run):
    """The single case result of a run_cases() step."""
    assert run["rc"] == 0, run["output"][-3000:]
    (result,) = run["results"].values()
    return result


def test_check_mode_on_blank_kernel_reports_change_and_changes_nothing(facts):
    result = only(facts["check_create"])
    assert result["changed"] is True
    assert "create vrf wifi-vrf table 10" in result["actions"]
    assert "vrf: absent" in result["diff"]["before"]
    assert "  - wlp1s0" in result["diff"]["after"]
    assert "default via %s" % facts["uplinks"]["wlp1s0_gateway"] in result["diff"]["after"]
    assert_same(facts["blank"], facts["after_check_create"])


def test_create_builds_the_original_topology(facts):
    result = only(facts["create"])
    assert result["changed"] is True
    assert result["vrf"]["table"] == 10 and result["vrf"]["interfaces"] == ["wlp1s0"]
    created = facts["created"]
    gw, gw6 = facts["uplinks"]["wlp1s0_gateway"], facts["uplinks"]["wlp1s0_gateway6"]

    # ip -d link: the VRF device with its table, wlp1s0 enslaved, usb0 not.
    vrf_block = [b for b in created["link"].split("\n") if "wifi-vrf:" in b]
    assert vrf_block, created["link"]
    assert "vrf table 10" in created["link"]
    wlp = next(ln for ln in created["link"].splitlines() if ": wlp1s0@" in ln)
    assert "master wifi-vrf" in wlp
    usb = next(ln for ln in created["link"].splitlines() if ": usb0@" in ln)
    assert "master" not in usb

    # ip route show table all: link route + default + unreachable in table 10; usb0 keeps main.
    routes = created["route4"].splitlines()
    assert "default via %s dev wlp1s0 table 10 proto static " % gw in routes
    assert any(r.startswith("198.51.100.0/24 dev wlp1s0 table 10 proto kernel scope link") for r in routes)
    assert "unreachable default table 10 proto static metric 4278198272 " in routes
    assert any(r.startswith("default via 192.0.2.1 dev usb0") and "table" not in r for r in routes)
    assert not any(r.startswith("198.51.100.0/24") and "table" not in r for r in routes), "link route left in main"
    routes6 = created["route6"]
    assert "default via %s dev wlp1s0 table 10" % gw6 in routes6
    assert "unreachable default dev lo table 10 proto static metric 4278198272" in routes6

    # The IPv6 address the kernel flushes on enslave was put back.
    assert "inet6 2001:db8:2::2/64" in created["addr"]
    # ip rule: the l3mdev rule that sends VRF sockets to their table.
    assert "1000:\tfrom all lookup [l3mdev-table]" in created["rule4"]


def test_traffic_follows_the_vrf(facts):
    # Unbound sockets stay on the primary uplink; sockets bound to the VRF leave via wifi.
    assert facts["traffic_main"] == {"local_hosts": [facts["uplinks"]["usb0"]]}
    assert facts["traffic_vrf"] == {"local_hosts": [facts["uplinks"]["wlp1s0"]]}


def test_second_run_reports_no_change(facts):
    result = only(facts["create_again"])
    assert result["changed"] is False and result["actions"] == []
    assert result["diff"]["before"] == result["diff"]["after"]
    assert_same(facts["created"], facts["after_create_again"])


def test_absent_in_check_mode_changes_nothing(facts):
    result = only(facts["check_absent"])
    assert result["changed"] is True
    assert_same(facts["created"], facts["after_check_absent"])


def test_absent_restores_the_blank_kernel(facts):
    assert only(facts["absent"])["changed"] is True
    assert_same(facts["blank"], facts["after_absent"])
    assert only(facts["absent_again"])["changed"] is False


INVALID = ["bad_name", "long_name", "reserved_table", "table_zero", "table_of_other_vrf",
           "other_vrf_table_change", "missing_interface", "unreachable_gateway", "bad_prefix",
           "missing_netns", "not_a_vrf", "lo_enslaved", "primary_uplink", "ssh_session_interface"]


@pytest.mark.parametrize("case", INVALID)
def test_invalid_input_fails_cleanly_naming_the_field(facts, case):
    result = facts["invalid"]["results"][case]
    field = facts["invalid_expected"][case]
    assert result.get("failed") is True and result.get("changed") is False
    assert result["msg"].startswith(field + ": "), result["msg"]
    assert failed_cleanly(result), result


def test_invalid_inputs_change_nothing(facts):
    assert set(facts["invalid"]["results"]) == set(INVALID)
    assert_same(facts["before_invalid"], facts["after_invalid"])


def test_netns_option_acts_only_inside_the_namespace(facts):
    created = only(facts["ns_create"])
    assert created["changed"] is True and created["vrf"]["interfaces"] == ["eth1"]
    assert "vrf table 30" in facts["ns_created"]["link"]
    assert "default via 198.51.100.1 dev eth1 table 30" in facts["ns_created"]["route4"]
    assert facts["ns_root_untouched"] is True
    assert only(facts["ns_again"])["changed"] is False
    assert only(facts["ns_absent"])["changed"] is True
    assert_same(facts["ns_blank"], facts["ns_after_absent"])
