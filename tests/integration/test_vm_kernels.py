"""The VM lab's second guest kernel: Debian's 6.12 from bookworm-backports.

``run_in_vm(..., kernel_series="6.12")`` boots it (one guest here); the default guests
keep Debian 12's own 6.1. The guest must have what the lab and the BPF/MPTCP work need
from it: VRF (a module, loaded by the guest's modprobe from the compressed .ko.xz tree),
BTF, the ``update_socket_protocol`` hook (Linux >= 6.6) and MPTCP enabled.
"""
import pytest

from tests.lab.vm import run_in_vm, vm_available
from tests.lab.vmkernel import ensure_kernel

pytestmark = [pytest.mark.vm]

SCRIPT = r"""
echo "uname=$(uname -r)"
modprobe vrf && ip link add v0 type vrf table 10 && ip -d link show v0 | grep -qw vrf && echo "vrf=ok"
modprobe veth && ip link add va type veth peer name vb && echo "veth=ok"
[ -e /sys/kernel/btf/vmlinux ] && echo "btf=ok"
grep -qw update_socket_protocol /proc/kallsyms && echo "update_socket_protocol=ok"
echo "mptcp=$(cat /proc/sys/net/mptcp/enabled)"
"""


def _skip_without_lab():
    reason = vm_available()
    if reason:
        pytest.skip(reason)


def test_default_guest_kernel_stays_6_1():
    _skip_without_lab()
    assert ensure_kernel().release.startswith("6.1.")
    assert ensure_kernel("6.1") == ensure_kernel()


def test_6_12_guest_kernel_has_vrf_btf_and_mptcp():
    _skip_without_lab()
    result = run_in_vm(SCRIPT, timeout=240, kernel_series="6.12")
    boot = "n/a" if result.boot_seconds is None else "%.1f" % result.boot_seconds
    print("6.12 guest: boot-to-script %s s, total %.1f s" % (boot, result.elapsed))
    facts = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    report = result.output[-3000:]
    assert result.returncode == 0, report
    assert facts.get("uname", "").startswith("6.12"), report
    assert facts.get("vrf") == "ok", report
    assert facts.get("veth") == "ok", report
    assert facts.get("btf") == "ok", report
    assert facts.get("update_socket_protocol") == "ok", report
    assert facts.get("mptcp") == "1", report
