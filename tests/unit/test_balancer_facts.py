"""netlb.multiwan.balancer_facts on a fake tree: each fact from its file."""
import sys

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import kernel_support as nl
from ansible_collections.netlb.multiwan.plugins.modules import balancer_facts

MOUNTS = """sysfs /sys sysfs rw 0 0
tmpfs /sys/fs/cgroup tmpfs ro 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0
bpf /sys/fs/bpf bpf rw 0 0
"""


def tree(tmp_path, files):
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        if text is None:
            target.mkdir(parents=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return str(tmp_path)


def test_a_systemd_host_with_vrf_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(nl, "kernel_release", lambda: "6.1.0-27-amd64")
    root = tree(tmp_path, {"/proc/mounts": MOUNTS, "/run/systemd/system": None, "/run/udev/control": "",
                           "/sys/module/vrf": None, "/etc/os-release": 'ID=ubuntu\nID_LIKE="debian"\n'})
    assert balancer_facts.collect(root) == {
        "kernel": "6.1.0-27-amd64", "systemd": True, "udev": True,
        "cgroup2": "/sys/fs/cgroup/unified", "bpffs": "/sys/fs/bpf",
        "vrf": {"loaded": True, "supported": True, "reason": "vrf driver loaded"},
        "os_family": "Debian", "python": sys.executable, "recorded": None, "recorded_error": None,
        "mptcp": {"mode": "off", "problem": None},
    }


@pytest.mark.parametrize("mode, steering, files, problem", [
    ("paths", "fwmark", {"/proc/sys/net/mptcp/enabled": "1\n"}, None),
    ("paths", "vrf", {"/proc/sys/net/mptcp/enabled": "1\n"}, "MPTCP needs fwmark or device steering"),
    ("paths", "device", {"/proc/sys/net/mptcp/enabled": "0\n"}, "net.mptcp.enabled is 0"),
    ("paths", "device", {}, "the kernel has no MPTCP"),
])
def test_mptcp_says_why_a_host_cannot_have_it(tmp_path, mode, steering, files, problem):
    root = tree(tmp_path, dict({"/proc/mounts": MOUNTS}, **files))
    found = balancer_facts.collect(root, mptcp_mode=mode, steering=steering)["mptcp"]["problem"]
    assert (found is None) if problem is None else found.startswith(problem), found


def test_a_container_without_systemd_udev_cgroup2_or_vrf(tmp_path, monkeypatch):
    monkeypatch.setattr(nl, "kernel_release", lambda: "6.18.0")
    root = tree(tmp_path, {"/proc/mounts": "proc /proc proc rw 0 0\n", "/etc/os-release": "ID=gentoo\n"})
    facts = balancer_facts.collect(root)
    assert (facts["systemd"], facts["udev"], facts["cgroup2"], facts["bpffs"], facts["os_family"]) == (
        False, False, None, None, None)
    assert facts["vrf"]["loaded"] is False and facts["vrf"]["supported"] is False
    assert "has no VRF support" in facts["vrf"]["reason"]


@pytest.mark.parametrize("release, family", [
    ({"ID": "debian"}, "Debian"),
    ({"ID": "rocky", "ID_LIKE": "rhel centos fedora"}, "RedHat"),
    ({"ID": "opensuse-leap", "ID_LIKE": "suse opensuse"}, "Suse"),
    ({"ID": "somethingnew", "ID_LIKE": "arch"}, "Archlinux"),
    ({}, None),
])
def test_os_family_matches_what_setup_reports(release, family):
    assert balancer_facts.os_family(release) == family


def test_the_recorded_state_document_is_returned(tmp_path, monkeypatch):
    monkeypatch.setattr(nl, "kernel_release", lambda: "6.1.0")
    doc = '{"version": 1, "uplinks": [{"name": "wifi", "table": 100, "drained": true}]}'
    root = tree(tmp_path, {"/proc/mounts": MOUNTS, "/etc/netlb-multiwan/balancer.json": doc})
    facts = balancer_facts.collect(root)
    assert facts["recorded"]["uplinks"][0]["drained"] is True and facts["recorded_error"] is None


@pytest.mark.parametrize("text, why", [("{not json", "is not JSON"), ('{"version": 1, "uplinks": 3}', "uplinks must be a list of objects")])
def test_an_unreadable_state_document_is_reported_not_raised(tmp_path, monkeypatch, text, why):
    monkeypatch.setattr(nl, "kernel_release", lambda: "6.1.0")
    root = tree(tmp_path, {"/proc/mounts": MOUNTS, "/etc/netlb-multiwan/balancer.json": text})
    facts = balancer_facts.collect(root)
    assert facts["recorded"] is None and why in facts["recorded_error"]


@pytest.mark.parametrize("kernel, cgroup2, mptcp_problem, why", [
    ("6.1.0-18-amd64", "/sys/fs/cgroup", None, None),
    ("5.8.0", "/sys/fs/cgroup", None, None),
    ("5.4.0-150-generic", "/sys/fs/cgroup", None, "kernel 5.4.0-150-generic is older than 5.8; the balancer program needs 5.8"),
    ("6.1.0", None, None, "no cgroup2 file system is mounted (see /proc/mounts)"),
    ("6.1.0", "/sys/fs/cgroup", "the kernel has no update_socket_protocol hook (Linux < 6.6)",
     "balancer_mptcp upgrade: the kernel has no update_socket_protocol hook (Linux < 6.6)"),
])
def test_require_names_why_the_host_cannot_run_the_balancer(kernel, cgroup2, mptcp_problem, why):
    facts = {"kernel": kernel, "cgroup2": cgroup2, "mptcp": {"mode": "upgrade", "problem": mptcp_problem}}
    assert balancer_facts.problem(facts, "upgrade") == why
