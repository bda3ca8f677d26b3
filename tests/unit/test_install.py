"""module_utils/install: the role's files and units converged around balancer_apply's
engine, on a temp tree with systemctl faked (what it is asked, in order)."""
import os

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import files as file_utils
from ansible_collections.netlb.multiwan.plugins.module_utils import install, runner

UNITS = ["netlb-multiwan-track.service", "multiwan.slice", "netlb-multiwan-bpf.service"]


def test_unit_states_from_one_systemctl_run_online_and_offline():
    show = ("Id=netlb-multiwan-track.service\nUnitFileState=enabled\nActiveState=active\n\n"
            "Id=multiwan.slice\nUnitFileState=static\nActiveState=active\n\n"
            "Id=netlb-multiwan-bpf.service\nUnitFileState=\nActiveState=inactive\n")
    offline = "netlb-multiwan-track.service enabled enabled\nmultiwan.slice static -\n"
    calls = []

    def execute(argv):
        calls.append(argv)
        return 0, show if "show" in argv else offline, ""
    systemctl = runner.CmdRunner("/bin/systemctl", executor=execute)
    assert install.unit_states(UNITS, True, systemctl) == {
        "netlb-multiwan-track.service": {"enabled": True, "active": True},
        "multiwan.slice": {"enabled": False, "active": True},
        "netlb-multiwan-bpf.service": {"enabled": False, "active": False}}
    assert calls == [["/bin/systemctl", "show", "--property=Id,UnitFileState,ActiveState", "--"] + UNITS]
    # Offline: the unit files that exist, each with its state; a missing one is neither.
    assert install.unit_states(UNITS, False, systemctl) == {
        "netlb-multiwan-track.service": {"enabled": True, "active": False},
        "multiwan.slice": {"enabled": False, "active": False},
        "netlb-multiwan-bpf.service": {"enabled": False, "active": False}}
    assert calls[-1] == ["/bin/systemctl", "--root=/", "list-unit-files", "--no-legend", "--no-pager", "--"] + UNITS
    assert install.unit_states([], True, systemctl) == {}
    assert install.unit_states(UNITS[:1], True, None) == {UNITS[0]: {"enabled": False, "active": False}}


class FakeSystemctl:
    """systemctl that knows which units are enabled and active, and records each call."""

    def __init__(self, enabled=(), active=(), fail=()):
        self.enabled, self.active, self.fail, self.calls = set(enabled), set(active), set(fail), []
        self.runner = runner.CmdRunner("systemctl", executor=self.execute)

    def execute(self, argv):
        args = argv[1:]
        if args[0] == "show":
            units = args[args.index("--") + 1:]
            return 0, "\n\n".join("Id=%s\nUnitFileState=%s\nActiveState=%s" % (
                u, "enabled" if u in self.enabled else "disabled", "active" if u in self.active else "inactive")
                for u in units), ""
        if args[:2] == ["--root=/", "list-unit-files"]:
            return 0, "".join("%s enabled enabled\n" % u for u in args[args.index("--") + 1:]
                              if u in self.enabled), ""
        self.calls.append(args)
        return (1, "", "failed") if args[-1] in self.fail else (0, "", "")


def unit_dirs(tmp_path, monkeypatch):
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir(), run.mkdir()
    monkeypatch.setattr(install, "UNIT_DIRS", (str(etc), str(run)))
    return etc, run


def make(files, units, systemctl, systemd=True, check_mode=False):
    return install.Install(file_utils.validate_set(files), units, systemctl and systemctl.runner, systemd,
                           check_mode=check_mode)


def test_a_new_host_gets_its_files_reloaded_enabled_and_started_in_order(tmp_path, monkeypatch):
    etc, _run = unit_dirs(tmp_path, monkeypatch)
    files = [{"path": str(etc / "netlb-multiwan-track.service"), "content": "[Unit]\n"},
             {"path": str(tmp_path / "sbin" / "netlb-multiwan"), "content": "#!/bin/sh\n", "mode": "0755"}]
    systemctl = FakeSystemctl()
    run = make(files, {"enabled": ["netlb-multiwan-track.service"],
                       "started": ["multiwan.slice", "netlb-multiwan-track.service"],
                       "retire": {"paths": [str(etc)], "patterns": ["netlb-multiwan-*.service"]}}, systemctl)
    run.prepare()
    # The slice before the engine's attach phase; the tracker only after the maps (finish).
    assert systemctl.calls == [["daemon-reload"], ["enable", "netlb-multiwan-track.service"],
                               ["start", "multiwan.slice"]]
    run.finish()
    assert systemctl.calls[-1] == ["start", "netlb-multiwan-track.service"]
    assert run.actions["files"] == ["mkdir %s" % (tmp_path / "sbin")] + ["write %s" % f["path"] for f in files]
    assert [d["after"] for d in run.diff] == ["[Unit]\n", "#!/bin/sh\n"]
    assert (etc / "netlb-multiwan-track.service").read_text() == "[Unit]\n"


def test_nothing_to_do_runs_only_the_one_look_at_the_units(tmp_path, monkeypatch):
    etc, _run = unit_dirs(tmp_path, monkeypatch)
    (etc / "netlb-multiwan-track.service").write_text("[Unit]\n")
    os.chmod(etc / "netlb-multiwan-track.service", 0o644)
    systemctl = FakeSystemctl(enabled=["netlb-multiwan-track.service"],
                              active=["multiwan.slice", "netlb-multiwan-track.service"])
    run = make([{"path": str(etc / "netlb-multiwan-track.service"), "content": "[Unit]\n"}],
               {"enabled": ["netlb-multiwan-track.service"], "started": ["multiwan.slice", "netlb-multiwan-track.service"],
                "retire": {"paths": [str(etc)], "patterns": ["netlb-multiwan-*.service"]}}, systemctl)
    run.prepare()
    run.finish()
    assert systemctl.calls == [] and run.actions == {"files": [], "units": []} and run.diff == []


def test_retired_units_are_stopped_disabled_and_removed_but_a_moving_one_is_not_stopped(tmp_path, monkeypatch):
    etc, runtime = unit_dirs(tmp_path, monkeypatch)
    (etc / "netlb-multiwan-uplink-lte.service").write_text("old uplink\n")
    (etc / "netlb-multiwan-track.service").write_text("moves to /run\n")
    (etc / "other.service").write_text("not ours\n")
    systemctl = FakeSystemctl(active=["netlb-multiwan-track.service"], fail=["netlb-multiwan-uplink-lte.service"])
    run = make([{"path": str(runtime / "netlb-multiwan-track.service"), "content": "[Unit]\n"}],
               {"started": ["netlb-multiwan-track.service"],
                "retire": {"paths": [str(etc), str(runtime)], "patterns": ["netlb-multiwan-*.service"]}}, systemctl)
    run.prepare()
    # A unit never loaded cannot be stopped or disabled: its file goes anyway.
    assert systemctl.calls == [["disable", "netlb-multiwan-track.service"],
                               ["stop", "netlb-multiwan-uplink-lte.service"],
                               ["disable", "netlb-multiwan-uplink-lte.service"], ["daemon-reload"]]
    assert sorted(p.name for p in etc.iterdir()) == ["other.service"]
    assert "remove %s" % (etc / "netlb-multiwan-uplink-lte.service") in run.actions["units"]


def test_offline_units_are_enabled_and_disabled_with_root_and_never_started(tmp_path, monkeypatch):
    etc, _run = unit_dirs(tmp_path, monkeypatch)
    (etc / "netlb-multiwan-uplink-lte.service").write_text("old\n")
    systemctl = FakeSystemctl()
    run = make([{"path": str(etc / "netlb-multiwan-bpf.service"), "content": "[Unit]\n"}],
               {"enabled": ["netlb-multiwan-bpf.service"], "started": [],
                "retire": {"paths": [str(etc)], "patterns": ["netlb-multiwan-*.service"]}}, systemctl, systemd=False)
    run.prepare()
    run.finish()
    assert systemctl.calls == [["--root=/", "disable", "netlb-multiwan-uplink-lte.service"],
                               ["--root=/", "enable", "netlb-multiwan-bpf.service"]]


def test_check_mode_reports_what_it_would_do_and_changes_nothing(tmp_path, monkeypatch):
    etc, _run = unit_dirs(tmp_path, monkeypatch)
    (etc / "netlb-multiwan-uplink-lte.service").write_text("old\n")
    before = sorted(os.listdir(etc))
    systemctl = FakeSystemctl()
    run = make([{"path": str(etc / "netlb-multiwan-bpf.service"), "content": "[Unit]\n"}],
               {"enabled": ["netlb-multiwan-bpf.service"], "started": ["multiwan.slice"],
                "retire": {"paths": [str(etc)], "patterns": ["netlb-multiwan-*.service"]}}, systemctl, check_mode=True)
    run.prepare()
    assert sorted(os.listdir(etc)) == before and systemctl.calls == []
    assert run.actions["units"] == ["stop netlb-multiwan-uplink-lte.service", "disable netlb-multiwan-uplink-lte.service",
                                    "remove %s" % (etc / "netlb-multiwan-uplink-lte.service"), "daemon-reload",
                                    "enable netlb-multiwan-bpf.service", "start multiwan.slice"]
    assert run.actions["files"] == ["write %s" % (etc / "netlb-multiwan-bpf.service")]


def test_a_failing_systemctl_names_the_phase(tmp_path, monkeypatch):
    etc, _run = unit_dirs(tmp_path, monkeypatch)
    run = make([], {"enabled": ["netlb-multiwan-bpf.service"]}, FakeSystemctl(fail=["netlb-multiwan-bpf.service"]))
    with pytest.raises(install.InstallError) as exc:
        run.prepare()
    assert exc.value.phase == "units" and "enable netlb-multiwan-bpf.service" in str(exc.value)
    with pytest.raises(install.InstallError, match="systemctl not found"):
        make([], {"enabled": ["netlb-multiwan-bpf.service"]}, None).prepare()
