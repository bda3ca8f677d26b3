"""`balancer_mptcp: upgrade` at the engine's level where the kernel runs it (Debian's 6.12
in the VM lab), and its refusal on Debian's 6.1 (this machine's own kernel refuses it too:
the container test shows the role failing in preflight there).

The 6.12 guest runs tests/integration/mptcp_upgrade_scenario.py: the engine's calls the
role's apply makes (mptcp.check, mptcp.converge, mptcp_upgrade.converge) for a test
cgroup - the program attached once (a second converge does nothing), a client in the
cgroup gets MPTCP and one outside it TCP, the counters say so, and detached the program
and its pins are gone and the cgroup's sockets are TCP again. The whole role with
`upgrade` (site.yml, throughput over both links, the fallback to a plain server, status):
test_role_mptcp_upgrade_vm.py.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.guest import guest_facts
from tests.integration.mptcp_upgrade_scenario import RESULT_MARKER
from tests.lab.vm import run_in_vm, vm_available

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]

BPF_DIR = Path(__file__).resolve().parents[2] / "files" / "bpf"


def build(out: str) -> None:
    """Both objects, as the role builds them."""
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True, check=True).stdout.strip()
    for name in ("multiwan", "mptcpify"):
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-I%s" % BPF_DIR,
                        "-I/usr/include/%s-linux-gnu" % arch, "-c", str(BPF_DIR / (name + ".bpf.c")),
                        "-o", str(Path(out, name + ".bpf.o"))], check=True)


@pytest.fixture(scope="module")
def facts():
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="netlb-upgrade-obj-") as out:
        build(out)
        return guest_facts("tests.integration.mptcp_upgrade_scenario", RESULT_MARKER, timeout=600,
                           env={"NETLB_UPGRADE_OBJECT_DIR": out}, shares=(out,), kernel_series="6.12")


def test_the_preflight_passes_and_the_program_is_attached_once(facts):
    assert facts["uname"].startswith("6.12"), facts["uname"]
    assert facts["check"] is None
    assert facts["attach"] == ["mptcp: upgrade program attached (TCP sockets of %s become MPTCP)"
                               % facts["attach"][0].rsplit("of ", 1)[1].split(" ")[0]], facts["attach"]
    assert facts["attach_again"] == []
    tracing = [link for link in facts["links"] if link.get("type") == "tracing"]
    assert len(tracing) == 1 and tracing[0].get("attach_type") in ("modify_return", "26"), facts["links"]


def test_a_client_in_the_cgroup_gets_mptcp_and_one_outside_tcp(facts):
    upgraded, outside = facts["upgraded"], facts["outside"]
    assert upgraded["error"] is None and upgraded["mptcp"] is True and upgraded["fallback"] is False, upgraded
    assert outside["error"] is None and outside["mptcp"] is False, outside


def test_status_counts_the_sockets_upgraded_and_those_left_alone(facts):
    """The client in the cgroup was upgraded; the one outside it, and every other TCP socket
    of the guest, left alone."""
    found, problems = facts["counts"]
    assert problems == [] and found["attached"] is True, facts["counts"]
    assert found["upgraded"] >= 1 and found["left_alone"] >= 1, found


def test_detached_the_program_is_gone_and_sockets_are_tcp_again(facts):
    assert facts["detach"] and facts["pins_after_detach"] is False, facts["detach"]
    got = facts["after_detach"]
    assert got["error"] is None and got["mptcp"] is False, got


def test_debian_6_1_is_refused_by_the_preflight_probe():
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    code = ("from ansible_collections.netlb.multiwan.plugins.module_utils import mptcp; "
            "print('problem=%s' % mptcp.check({'mptcp': 'upgrade', 'steering': 'fwmark'}))")
    result = run_in_vm(".venv/bin/python -c \"%s\"" % code, timeout=300, env={"PYTHONPATH": ".build/collections"})
    assert result.returncode == 0, result.output[-3000:]
    assert "problem=the kernel has no update_socket_protocol hook (Linux < 6.6)" in result.output, \
        result.output[-3000:]
