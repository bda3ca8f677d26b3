"""cgroup discovery, ELF reading and attach-type spelling for cgroup_bpf_attach."""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_object as o
from ansible_collections.netlb.multiwan.plugins.module_utils import cgroup as cg
from ansible_collections.netlb.multiwan.plugins.modules import cgroup_bpf_attach as attach

HYBRID = """tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0
bpf /sys/fs/bpf bpf rw 0 0
"""
UNIFIED = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"


def test_cgroup2_mount_on_hybrid_and_unified_hosts():
    assert cg.cgroup2_mount(HYBRID) == "/sys/fs/cgroup/unified"
    assert cg.cgroup2_mount(UNIFIED) == "/sys/fs/cgroup"
    assert cg.cgroup2_mount("proc /proc proc rw 0 0\n") is None
    assert cg.mount_of("/sys/fs/bpf/netlb", "bpf", HYBRID) == "/sys/fs/bpf"
    assert cg.mount_of("/tmp/x", "bpf", HYBRID) is None


@pytest.mark.parametrize("given, expected", [
    ("multiwan", "/sys/fs/cgroup/multiwan"),
    ("/", "/sys/fs/cgroup"),
    ("a/b/../c", "/sys/fs/cgroup/a/c"),
    ("/sys/fs/cgroup/multiwan/", "/sys/fs/cgroup/multiwan"),
])
def test_resolve_cgroup(given, expected):
    assert cg.resolve_cgroup(given, "/sys/fs/cgroup") == expected


@pytest.mark.parametrize("given", ["../etc", "/etc/multiwan", "/sys/fs/cgroupx", "", "a\nb"])
def test_resolve_cgroup_refuses_paths_outside(given):
    with pytest.raises(cg.CgroupError) as err:
        cg.resolve_cgroup(given, "/sys/fs/cgroup")
    assert err.value.field == "cgroup"


def test_both_bpftool_spellings():
    assert o.short_attach_type("cgroup_inet4_connect") == "connect4"
    assert o.short_attach_type("connect6") == "connect6"
    assert o.short_attach_type("cgroup_inet6_connect") == "connect6"


def test_non_bpf_files_are_refused(tmp_path):
    with pytest.raises(o.ObjectError, match="not BPF"):
        o.programs("/bin/sh")
    text = tmp_path / "x.o"
    text.write_text("hello")
    with pytest.raises(o.ObjectError, match="not an ELF"):
        o.programs(str(text))


@pytest.mark.parametrize("release, ok", [("5.8.0", True), ("6.1.0-18-amd64", True), ("5.4.0-150-generic", False),
                                         ("4.19.0", False), ("5.10.0", True)])
def test_kernel_version_gate(release, ok):
    assert (attach.kernel_version(release) >= attach.MIN_KERNEL) is ok
