"""bpf(2) attributes for cgroup bpf_links, and the legacy fallback.

The kernel side (create, update in place, detach) runs in
tests/integration/test_bpf_fwmark.py; here: the byte layout of union bpf_attr
and what happens where the kernel or the architecture has no links."""
import errno
import os
import struct

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import attach
from ansible_collections.netlb.multiwan.plugins.module_utils import bpf_link


@pytest.fixture
def calls(monkeypatch):
    made = []

    def fake_bpf(cmd, attr, what):
        made.append((cmd, attr))
        return 7, None
    monkeypatch.setattr(bpf_link, "_bpf", fake_bpf)
    return made


def test_link_create_and_update_attributes(calls):
    assert bpf_link.link_create(3, 4, "sendmsg6") == 7
    bpf_link.link_update(5, 6, 8)
    assert calls[0] == (bpf_link.BPF_LINK_CREATE, struct.pack("=IIII", 3, 4, 15, 0))
    # BPF_F_REPLACE: the kernel swaps only if the link still holds the old program.
    assert calls[1] == (bpf_link.BPF_LINK_UPDATE, struct.pack("=IIII", 5, 6, 4, 8))


def test_attach_type_numbers_follow_the_kernel_enum():
    ids = bpf_link.ATTACH_TYPE_IDS
    assert (ids["connect4"], ids["connect6"], ids["sendmsg4"], ids["sendmsg6"]) == (10, 11, 14, 15)
    assert set(ids) <= set(attach.bpf_object.ATTACH_TYPES)


def test_an_unknown_architecture_means_no_links(monkeypatch):
    monkeypatch.setattr(bpf_link.platform, "machine", lambda: "vax")
    with pytest.raises(bpf_link.LinkUnsupported) as err:
        bpf_link.link_create(3, 4, "connect4")
    assert err.value.errno == errno.ENOSYS


class FakeBpftool:
    def __init__(self):
        self.attached = []

    def attach(self, cgroup, hook, pinned):
        self.attached.append((cgroup, hook, pinned))


def attacher(method, monkeypatch, tmp_path):
    monkeypatch.setattr(bpf_link, "open_cgroup", lambda path: bpf_link.Fd(os.open("/dev/null", os.O_RDONLY)))
    monkeypatch.setattr(bpf_link, "pinned", lambda path: bpf_link.Fd(os.open("/dev/null", os.O_RDONLY)))

    def unsupported(*_args):
        raise bpf_link.LinkUnsupported("create a bpf_link at connect4", errno.EINVAL)
    monkeypatch.setattr(bpf_link, "link_create", unsupported)
    a = attach.Attacher(type("M", (), {"params": {}, "check_mode": False})())
    a.method, a.cgroup, a.pin_path = method, "/sys/fs/cgroup/x", str(tmp_path)
    a.links_dir, a.want_hooks, a.bpftool = str(tmp_path / "links"), {"connect4": "mw_connect4"}, FakeBpftool()
    return a


def test_auto_falls_back_to_the_legacy_attach_with_a_warning(monkeypatch, tmp_path):
    a = attacher("auto", monkeypatch, tmp_path)
    a.attach_hook("connect4", None)
    assert a.bpftool.attached == [("/sys/fs/cgroup/x", "connect4", str(tmp_path / "mw_connect4"))]
    assert a.warnings == ["no cgroup bpf_link on this kernel: connect4 attached the legacy way"]


def test_link_refuses_to_fall_back(monkeypatch, tmp_path):
    a = attacher("link", monkeypatch, tmp_path)
    with pytest.raises(attach.AttachError) as err:
        a.attach_hook("connect4", None)
    assert err.value.field == "attach_method" and a.bpftool.attached == []
