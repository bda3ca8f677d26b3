"""The role's systemd unit templates render to units that systemd-analyze
accepts: the uplink unit for both steerings (with a dash in the interface
name, which systemd escapes in device unit names), the program's unit with and
without the slice, and the slice. The VM reboot test runs the installed ones."""
import os
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "roles" / "balancer" / "templates"
APPLY = "/usr/local/sbin/netlb-multiwan-apply"
TRACK = "/usr/local/sbin/netlb-multiwan-track"


def render(name, **context):
    # Ansible's template module defaults: trim_blocks.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), keep_trailing_newline=True,
                             trim_blocks=True)
    return env.get_template(name).render(ansible_managed="Ansible managed", **context)


def verify(tmp_path, units):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    env = dict(os.environ, SYSTEMD_UNIT_PATH="%s:" % tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *[str(tmp_path / n) for n in units]],
                          capture_output=True, text=True, env=env, check=False)
    # The command exists only on hosts the role provisioned.
    complaints = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                  if ln.strip() and not any("Command %s is not executable" % c in ln for c in (APPLY, TRACK))]
    assert complaints == [], "\n".join(complaints)
    return proc


def uplink(**item):
    return dict({"name": "wifi", "interface": "wlp1s0", "table": 10, "vrf": "wifi-vrf"}, **item)


def test_vrf_uplink_unit_is_bound_to_its_device(tmp_path):
    text = render("netlb-multiwan-uplink.service.j2", item=uplink(), balancer_steering="vrf")
    assert "BindsTo=sys-subsystem-net-devices-wlp1s0.device" in text
    assert "ExecStart=%s uplink wifi" % APPLY in text
    assert "WantedBy=multi-user.target sys-subsystem-net-devices-wlp1s0.device" in text
    verify(tmp_path, {"netlb-multiwan-uplink-wifi.service": text})


def test_uplink_unit_without_udev_starts_at_boot_and_retries(tmp_path):
    # A container: no udev, so no device units; binding to one would never start.
    text = render("netlb-multiwan-uplink.service.j2", item=uplink(), balancer_steering="vrf", _balancer_udev=False)
    assert "BindsTo=" not in text and ".device" not in text
    assert "WantedBy=multi-user.target\n" in text and "Restart=on-failure" in text
    verify(tmp_path, {"netlb-multiwan-uplink-wifi.service": text})


def test_fwmark_uplink_unit_escapes_dashes_in_device_names(tmp_path):
    fwmark_uplink = uplink(name="isp-b", interface="enp3s0-v2", vrf=None, mark=11, table=11)
    text = render("netlb-multiwan-uplink.service.j2", item=fwmark_uplink, balancer_steering="fwmark")
    assert "BindsTo=sys-subsystem-net-devices-enp3s0\\x2dv2.device" in text
    assert "fwmark 11, table 11" in text
    verify(tmp_path, {"netlb-multiwan-uplink-isp-b.service": text})


def test_program_unit_with_and_without_the_slice(tmp_path):
    slice_text = render("multiwan.slice.j2", balancer_slice="multiwan", _balancer_slice_unit="multiwan.slice")
    assert "systemd-run --slice=multiwan APP" in slice_text
    with_slice = render("netlb-multiwan-bpf.service.j2", _balancer_slice_unit="multiwan.slice",
                        _balancer_attachments=[{"cgroup": "multiwan"}, {"cgroup": "multiwan.slice"}])
    assert "Requires=multiwan.slice" in with_slice and "After=multiwan.slice" in with_slice
    verify(tmp_path, {"netlb-multiwan-bpf.service": with_slice, "multiwan.slice": slice_text})
    without = render("netlb-multiwan-bpf.service.j2", _balancer_slice_unit="",
                     _balancer_attachments=[{"cgroup": "multiwan"}])
    assert "Requires=" not in without and ".slice" not in without
    (tmp_path / "multiwan.slice").unlink()
    verify(tmp_path, {"netlb-multiwan-bpf.service": without})


def test_tracker_unit_restarts_always_and_follows_the_program_unit(tmp_path):
    text = render("netlb-multiwan-track.service.j2")
    assert "ExecStart=%s\n" % TRACK in text and "Restart=always" in text
    assert "After=netlb-multiwan-bpf.service" in text
    program = render("netlb-multiwan-bpf.service.j2", _balancer_slice_unit="", _balancer_attachments=[{"cgroup": "multiwan"}])
    verify(tmp_path, {"netlb-multiwan-track.service": text, "netlb-multiwan-bpf.service": program})
