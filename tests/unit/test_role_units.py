"""module_utils/layout: the units and commands balancer_apply installs for the role
(option install), decided on the host. The unit files are ones systemd-analyze accepts:
the uplink unit for both steerings (with a dash in the interface name, which systemd
escapes in device unit names) and without udev, the program's unit with and without the
slice, the tracker's and the slice. The VM reboot test runs the installed ones."""
import os
import shutil
import subprocess

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import layout

APPLY = "/usr/local/sbin/netlb-multiwan-apply"
TRACK = "/usr/local/sbin/netlb-multiwan-track"
COMMANDS = {"netlb-multiwan": "/usr/local/sbin/netlb-multiwan", "netlb-multiwan-status": "/usr/local/bin/st",
            "netlb-multiwan-apply": APPLY, "netlb-multiwan-track": TRACK}


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
    return dict({"name": "wifi", "interface": "wlp1s0", "table": 10, "vrf": "wifi-vrf", "mark": None}, **item)


def document(steering="vrf", track=None, budget=None, slice_attached=True):
    uplinks = [dict(uplink(vrf=None, table=None), name="lte", interface="wwan0", track=track, budget=budget),
               dict(uplink(vrf=None, mark=256, table=100) if steering == "fwmark" else uplink(), track=None,
                    budget=None)]
    attachments = [{"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb_multiwan"}]
    if slice_attached:
        attachments.append({"cgroup": "multiwan.slice", "pin_dir": "/sys/fs/bpf/netlb_multiwan_slice",
                            "slice": "multiwan.slice"})
    return {"version": 1, "steering": steering, "uplinks": uplinks, "attachments": attachments}


def test_vrf_uplink_unit_is_bound_to_its_device(tmp_path):
    text = layout.uplink_unit("Ansible managed", uplink(), udev=True)
    assert text.startswith("# Ansible managed\n")
    assert "BindsTo=sys-subsystem-net-devices-wlp1s0.device" in text and "VRF wifi-vrf, table 10" in text
    assert "ExecStart=%s uplink wifi" % APPLY in text
    assert "WantedBy=multi-user.target sys-subsystem-net-devices-wlp1s0.device" in text
    verify(tmp_path, {"netlb-multiwan-uplink-wifi.service": text})


def test_uplink_unit_without_udev_starts_at_boot_and_retries(tmp_path):
    # A container: no udev, so no device units; binding to one would never start.
    text = layout.uplink_unit("Ansible managed", uplink(), udev=False)
    assert "BindsTo=" not in text and ".device" not in text
    assert "WantedBy=multi-user.target\n" in text and "Restart=on-failure" in text
    verify(tmp_path, {"netlb-multiwan-uplink-wifi.service": text})


def test_fwmark_uplink_unit_escapes_dashes_in_device_names(tmp_path):
    text = layout.uplink_unit("Ansible managed", uplink(name="isp-b", interface="enp3s0-v2", vrf=None, mark=11,
                                                        table=11), udev=True)
    assert "BindsTo=sys-subsystem-net-devices-enp3s0\\x2dv2.device" in text
    assert "fwmark 11, table 11" in text
    verify(tmp_path, {"netlb-multiwan-uplink-isp-b.service": text})


def test_program_unit_with_and_without_the_slice(tmp_path):
    slice_text = layout.slice_unit_text("Ansible managed", "multiwan.slice")
    assert "systemd-run --slice=multiwan APP" in slice_text and "Slice=multiwan.slice" in slice_text
    with_slice = layout.program_unit("Ansible managed", ["multiwan", "multiwan.slice"], "multiwan.slice")
    assert "Requires=multiwan.slice" in with_slice and "After=multiwan.slice" in with_slice
    verify(tmp_path, {"netlb-multiwan-bpf.service": with_slice, "multiwan.slice": slice_text})
    without = layout.program_unit("Ansible managed", ["multiwan"], "")
    assert "Requires=" not in without and ".slice" not in without
    (tmp_path / "multiwan.slice").unlink()
    verify(tmp_path, {"netlb-multiwan-bpf.service": without})


def test_tracker_unit_restarts_always_and_follows_the_program_unit(tmp_path):
    text = layout.tracker_unit("Ansible managed")
    assert "ExecStart=%s\n" % TRACK in text and "Restart=always" in text
    assert "After=netlb-multiwan-bpf.service" in text
    program = layout.program_unit("Ansible managed", ["multiwan"], "")
    verify(tmp_path, {"netlb-multiwan-track.service": text, "netlb-multiwan-bpf.service": program})


def paths(files):
    """The paths of the files, the engine's package aside."""
    return [f["path"] for f in files if not f["path"].startswith(layout.DEFAULT_LIB + "/")]


def engine(files):
    return [f["path"][len(layout.DEFAULT_LIB):] for f in files if f["path"].startswith(layout.DEFAULT_LIB + "/")]


def test_persistent_host_with_systemd_and_udev():
    doc = layout.for_host(document("vrf", track={"method": "tcp"}), systemd=True)
    role = layout.Layout(doc, True, "multiwan.slice", COMMANDS, systemd=True, udev=True, python="/usr/bin/python3")
    assert role.units() == {
        "enabled": ["netlb-multiwan-uplink-wifi.service", "netlb-multiwan-bpf.service",
                    "netlb-multiwan-track.service", "multiwan.slice"],
        "started": ["netlb-multiwan-track.service", "multiwan.slice"],
        "retire": {"paths": ["/etc/systemd/system", "/run/systemd/system"],
                   "patterns": ["netlb-multiwan-*.service", "multiwan.slice"]}}
    files = [f for f in role.files() if f["path"] in paths(role.files())]
    # The engine the commands run, from the module's own package.
    assert "/ansible_collections/netlb/multiwan/plugins/module_utils/tracker.py" in engine(role.files())
    # The commands by name, then the boot units, then the runtime units.
    assert paths(files) == ["/usr/local/sbin/netlb-multiwan", APPLY, "/usr/local/bin/st", TRACK,
                            "/etc/systemd/system/netlb-multiwan-bpf.service", "/etc/modules-load.d/netlb-multiwan.conf",
                            "/etc/systemd/system/netlb-multiwan-uplink-wifi.service",
                            "/etc/systemd/system/netlb-multiwan-track.service", "/etc/systemd/system/multiwan.slice"]
    assert files[1]["mode"] == "0755" and files[1]["content"].startswith("#!/usr/bin/python3\n")
    assert "from ansible_collections.netlb.multiwan.plugins.module_utils.boot import main" in files[1]["content"]
    assert files[5]["content"] == "# netlb.multiwan: what vrf steering needs\nvrf\n" and files[5]["mode"] == "0644"
    assert "BindsTo=" in files[6]["content"] and "Requires=multiwan.slice" in files[4]["content"]


def test_runtime_only_host_without_systemd_has_no_units_no_slice_and_no_tracker():
    # A container or chroot without balancer_persist: nothing would start a unit.
    doc = layout.for_host(document("fwmark", budget={"bytes": 1}), systemd=False)
    assert [a["cgroup"] for a in doc["attachments"]] == ["multiwan"]
    role = layout.Layout(doc, False, "multiwan.slice", COMMANDS, systemd=False, udev=False, python="/py")
    assert role.units() == {"enabled": [], "started": [],
                            "retire": {"paths": ["/etc/systemd/system"],
                                       "patterns": ["netlb-multiwan-*.service", "multiwan.slice"]}}
    assert paths(role.files()) == ["/usr/local/sbin/netlb-multiwan", "/usr/local/bin/st"]
    assert "/ansible_collections/netlb/multiwan/plugins/module_utils/tracker.py" in engine(role.files())
    no_commands = layout.Layout(doc, False, "multiwan.slice", {}, systemd=False, udev=False, python="/py")
    assert no_commands.files() == []


def test_runtime_units_in_run_with_systemd_and_no_persistence():
    doc = layout.for_host(document("fwmark", budget={"bytes": 1}), systemd=True)
    role = layout.Layout(doc, False, "multiwan.slice", COMMANDS, systemd=True, udev=True, python="/py")
    assert role.units()["enabled"] == []
    assert role.units()["started"] == ["netlb-multiwan-track.service", "multiwan.slice"]
    assert paths(role.files()) == ["/usr/local/sbin/netlb-multiwan", "/usr/local/bin/st", TRACK,
                                   "/run/systemd/system/netlb-multiwan-track.service",
                                   "/run/systemd/system/multiwan.slice"]


def test_persistent_host_without_systemd_enables_offline_and_starts_nothing_new():
    # Offline (a host prepared for its first boot): the boot units and the tracker are enabled;
    # the slice's attachment is left out (no cgroup without systemd running).
    doc = layout.for_host(document("fwmark", track={"method": "tcp"}), systemd=False)
    role = layout.Layout(doc, True, "multiwan.slice", COMMANDS, systemd=False, udev=False, python="/py")
    assert role.units()["enabled"] == ["netlb-multiwan-uplink-wifi.service", "netlb-multiwan-bpf.service",
                                       "netlb-multiwan-track.service"]
    assert "/etc/modules-load.d/netlb-multiwan.conf" not in paths(role.files())
    assert "Requires=" not in role.files()[4]["content"]


def test_no_slice_attached_no_slice_unit():
    doc = document("fwmark", slice_attached=False)
    role = layout.Layout(doc, True, "multiwan.slice", COMMANDS, systemd=True, udev=True, python="/py")
    assert role.units()["started"] == [] and "multiwan.slice" in role.units()["retire"]["patterns"]
    assert not any(p.endswith(".slice") for p in paths(role.files()))
