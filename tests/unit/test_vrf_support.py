"""vrf_support(): whether this kernel can make VRF devices, read without creating one."""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import kernel_support as nl


@pytest.mark.parametrize("builtin, dep, cmdline, supported", [
    ("", "kernel/drivers/net/vrf.ko.xz: \n", "ro quiet", True),
    ("", "kernel/drivers/net/vrf.ko.xz: \n", "ro module_blacklist=foo,vrf quiet", False),
    ("kernel/drivers/net/vrf.ko\n", "", "module_blacklist=vrf", True),   # built in: cannot be refused
    ("", "kernel/drivers/net/vrfx.ko: \n", "ro", False),
])
def test_vrf_support_reads_modules_and_the_kernel_command_line(tmp_path, monkeypatch, builtin, dep, cmdline, supported):
    monkeypatch.setattr(nl, "kernel_release", lambda: "6.1.0-test")
    moddir = tmp_path / "lib" / "6.1.0-test"
    moddir.mkdir(parents=True)
    (moddir / "modules.builtin").write_text(builtin)
    (moddir / "modules.dep").write_text(dep)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    ok, reason = nl.vrf_support(str(tmp_path / "no-sys-module"), str(tmp_path / "lib"), str(tmp_path / "cmdline"))
    assert ok is supported, reason
    if not supported:
        assert "has no VRF support" in reason
