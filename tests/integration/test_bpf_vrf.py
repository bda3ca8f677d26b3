"""VRF steering by the balancer program, in a network namespace of a VRF-capable kernel.

One run of tests/integration/bpf_vrf_scenarios.py in a namespace made for it:
the original experiment built by netlb.multiwan.vrf +
netlb.multiwan.cgroup_bpf_attach, iperf3 -P10 from the cgroup, connect4/connect6
decisions, counters, and DNS through a stub resolver on 127.0.0.53 with our
program and with the original write-up's.

Needs a kernel with VRF (mark needs_vrf): deselected elsewhere, where
test_vrf_in_vm.py runs this module under pytest inside a VM lab guest.
"""
import json

import pytest

from tests.integration.bpf_vrf_scenarios import RESULT_MARKER
from tests.integration.guest import netns_facts

pytestmark = [pytest.mark.hostkernel, pytest.mark.needs_vrf]


@pytest.fixture(scope="module")
def facts():
    return netns_facts("tests.integration.bpf_vrf_scenarios", RESULT_MARKER, timeout=1200)


def test_modules_build_the_setup(facts):
    assert facts["vrf"]["changed"] is True and not facts["vrf"].get("failed"), facts["vrf"]
    assert facts["attach"]["changed"] is True and not facts["attach"].get("failed"), facts["attach"]
    shown = {p["attach_type"]: p["name"] for p in json.loads(facts["cgroup_show"])}
    assert shown == {"cgroup_inet4_connect": "mw_connect4", "cgroup_inet6_connect": "mw_connect6",
                     "cgroup_udp4_sendmsg": "mw_sendmsg4", "cgroup_udp6_sendmsg": "mw_sendmsg6"}


def test_original_experiment_both_local_addresses(facts):
    hosts = set(facts["iperf"]["local_hosts"])
    assert hosts == {facts["addresses"]["usb0"], facts["addresses"]["wlp1s0"]}, facts["iperf"]
    assert len(facts["iperf"]["local_hosts"]) == 10


def test_connect4_and_connect6_both_spread(facts):
    assert facts["decisions4"] == ["dev:wifi-vrf", "none"]
    assert facts["decisions6"] == ["dev:wifi-vrf", "none"]
    counters = facts["counters"]
    assert counters["0"]["steered"] > 0 and counters["1"]["steered"] > 0 and counters["1"]["errors"] == 0


def test_dns_through_local_stub_keeps_working(facts):
    assert facts["dns_ours"] == {"ok": 100, "count": 100, "errors": {}}
    assert facts["dns_ours6"] == {"ok": 100, "count": 100, "errors": {}}, "a resolver on ::1"


def test_original_program_breaks_dns(facts):
    # The write-up's program binds loopback sockets to the VRF too: about half fail.
    assert not facts["attach_original"].get("failed"), facts["attach_original"]
    assert 20 <= facts["dns_original"]["ok"] <= 80, facts["dns_original"]


def test_a_connection_held_through_a_vrf_is_reset_and_reconnects(facts):
    """The tracker's reset (issue 30) with VRF steering: the connection bound to wifi-vrf is
    found (its device) and destroyed; the application gets ECONNABORTED and connects again."""
    reset = facts["reset"]
    events = reset["events"]
    assert reset["destroyed"] == 1, reset
    assert [e[1] for e in events[:2]] == ["connect", "echo"], events[:3]
    errors = [e for e in events if e[1] == "error"]
    assert errors and errors[0][4] == "ECONNABORTED", events
    assert any(e[1] == "echo" and e[0] > errors[0][0] for e in events), events   # working again
