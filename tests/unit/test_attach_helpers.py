"""cgroup discovery, ELF reading and attach-type spelling for cgroup_bpf_attach."""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_object as o
from ansible_collections.netlb.multiwan.plugins.module_utils import cgroup as cg
from ansible_collections.netlb.multiwan.plugins.module_utils import attach

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


class FakeModule:
    def __init__(self, **params):
        self.params = dict(cgroup="multiwan", object="/nonexistent.o", pin_dir="/sys/fs/bpf/netlb_x",
                           attach_types=None, state="present", create_cgroup=True)
        self.params.update(params)
        self.check_mode = False

    def get_bin_path(self, name):
        return "/usr/sbin/bpftool"


def prepare(monkeypatch, mounts=UNIFIED + "bpf /sys/fs/bpf bpf rw 0 0\n", release="6.1.0", **params):
    monkeypatch.setattr(attach.platform, "release", lambda: release)
    monkeypatch.setattr(cg, "mounts", lambda text=None: _parse(mounts))
    attacher = attach.Attacher(FakeModule(**params))
    attacher.prepare()
    return attacher


def _parse(text):
    return [(ln.split()[1], ln.split()[2]) for ln in text.splitlines() if ln.strip()]


def test_old_kernel_is_refused(monkeypatch):
    with pytest.raises(attach.AttachError, match="kernel 5.4.0 is older than 5.8"):
        prepare(monkeypatch, release="5.4.0")


def test_no_cgroup2_mount(monkeypatch):
    with pytest.raises(attach.AttachError, match="cgroup: no cgroup2 file system is mounted"):
        prepare(monkeypatch, mounts="proc /proc proc rw 0 0\n")


def test_bpftool_missing(monkeypatch):
    monkeypatch.setattr(FakeModule, "get_bin_path", lambda self, name: None)
    monkeypatch.setattr(attach.shutil, "which", lambda *a, **k: None)
    with pytest.raises(attach.AttachError, match="bpftool not found on the managed host"):
        prepare(monkeypatch)


def test_pin_dir_with_dot_and_outside_bpffs(monkeypatch):
    with pytest.raises(attach.AttachError, match="pin_dir: bpffs refuses names with a dot"):
        prepare(monkeypatch, pin_dir="/sys/fs/bpf/netlb.new")
    with pytest.raises(attach.AttachError, match="pin_dir: /var/tmp/x is not on a bpf file system"):
        prepare(monkeypatch, pin_dir="/var/tmp/x")


def test_missing_object_names_the_field(monkeypatch):
    with pytest.raises(attach.AttachError, match="object: /nonexistent.o does not exist"):
        prepare(monkeypatch)


def test_state_file_goes_when_nothing_is_left_to_remember(tmp_path, monkeypatch):
    state_file = tmp_path / "netlb-multiwan" / "cgroup_bpf_attach.json"
    monkeypatch.setattr(attach, "STATE_FILE", str(state_file))
    attach.save_state({"/sys/fs/cgroup/multiwan": {"created": True}})
    assert attach.load_state() == {"/sys/fs/cgroup/multiwan": {"created": True}}
    attach.save_state({})
    assert not state_file.parent.exists()
    attach.save_state({})  # nothing there: still fine
    assert attach.load_state() == {}
