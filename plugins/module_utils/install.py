# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the role installs on a host besides the kernel's state - the engine, its commands,
the units and the program (files), and the units' systemd state - converged by
M(netlb.multiwan.balancer_apply) in the same run as the document, so a run that changes
nothing costs each host one module run instead of a task per step.

Order (Install.prepare once the document and every uplink's routing are checked, before
the first change; Install.finish after the maps): the files; the unit files the set no
longer lists retired (stopped unless only moving between /etc and /run, disabled,
removed); systemd reloaded when a unit file changed; the units enabled; the slices
started (their cgroup must exist to be attached to); after the maps, the services (the
tracker reads the new document). Without systemd as PID 1, systemctl works offline
(--root=/) on the unit files and nothing is started.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.netlb.multiwan.plugins.module_utils import files as file_utils
from ansible_collections.netlb.multiwan.plugins.module_utils.runner import CommandError

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system")


def systemd_running(root="/"):
    """systemd is PID 1 (sd_booted()): units can be started, not only enabled."""
    return os.path.isdir(os.path.join(root, "run/systemd/system"))


def unit_states(units, systemd, systemctl):
    """{unit: {"enabled", "active"}} of *units*, from *systemctl* (a runner.CmdRunner, None
    when there is none). With systemd running: `systemctl show` (a block of Key=value lines
    per unit, by Id); offline: `systemctl --root=/ list-unit-files`, a line per unit file
    that exists (is-enabled would print nothing for a missing one)."""
    states = dict((unit, {"enabled": False, "active": False}) for unit in units)
    if not units or systemctl is None:
        return states
    if systemd:
        _rc, out, _err = systemctl.run("show", "--property=Id,UnitFileState,ActiveState", "--", *units, check=False)
        for block in out.split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if props.get("Id") in states:
                states[props["Id"]] = {"enabled": props.get("UnitFileState") == "enabled",
                                       "active": props.get("ActiveState") == "active"}
        return states
    _rc, out, _err = systemctl.run("--root=/", "list-unit-files", "--no-legend", "--no-pager", "--", *units,
                                   check=False)
    for line in out.splitlines():
        words = line.split()  # UNIT STATE PRESET
        if len(words) >= 2 and words[0] in states:
            states[words[0]]["enabled"] = words[1] == "enabled"
    return states


class InstallError(Exception):
    def __init__(self, phase, message, field=None):
        super(InstallError, self).__init__(message)
        self.phase, self.field = phase, field


class Install(object):
    """*files*: file_utils.validate_set's entries. *units*: {"enabled": [...], "started":
    [...], "retire": {"paths", "patterns"} or None}. *systemctl*: a runner.CmdRunner, None
    when the host has none. ``actions``: {"files": [...], "units": [...]}; ``diff``: one
    per file that changes."""

    def __init__(self, files, units, systemctl, systemd, check_mode=False, move=os.rename):
        self.files, self.systemctl, self.systemd = files, systemctl, systemd
        self.enabled = list(units.get("enabled") or [])
        self.started = list(units.get("started") or [])
        self.retire_spec = units.get("retire")
        self.check_mode, self.move = check_mode, move
        self.actions = {"files": [], "units": []}
        self.diff, self.states = [], {}

    def prepare(self):
        result = self.converge_files()
        retired = self.retire()
        if self.systemd and (retired or any(os.path.dirname(p) in UNIT_DIRS for p in result["changed_paths"])):
            self.systemctl_do("daemon-reload")
        self.states = unit_states(self.enabled + self.started, self.systemd, self.systemctl)
        self.enable()
        self.start([u for u in self.started if u.endswith(".slice")])

    def finish(self):
        self.start([u for u in self.started if not u.endswith(".slice")])

    def converge_files(self):
        try:
            result = file_utils.converge_set(self.files, self.check_mode, self.move)
        except file_utils.FileSetError as exc:
            raise InstallError("files", str(exc), field=exc.field)
        except (IOError, OSError) as exc:
            raise InstallError("files", "files: %s" % exc, field="files")
        self.actions["files"] += ["mkdir %s" % d for d in result["created_dirs"]]
        self.actions["files"] += ["write %s" % p for p in result["changed_paths"]]
        self.diff += result["diff"]
        return result

    def retire(self):
        """The unit files in retire's paths that the set lacks: a unit whose file only
        moves (balancer_persist changed) is disabled, not stopped. Errors stopping or
        disabling a unit never loaded are ignored: its file goes anyway."""
        if not self.retire_spec:
            return []
        paths = file_utils.unlisted(self.retire_spec["paths"], self.retire_spec["patterns"],
                                    set(f[0] for f in self.files))
        kept = set(self.enabled + self.started)
        for path in paths:
            name = os.path.basename(path)
            if self.systemd and name not in kept:
                self.systemctl_do("stop", name, check=False)
            self.systemctl_do("disable", name, check=False)
            self.actions["units"].append("remove %s" % path)
            if not self.check_mode:
                os.unlink(path)
        return paths

    def enable(self):
        names = [u for u in self.enabled if not self.states[u]["enabled"]]
        if names:
            self.systemctl_do("enable", *names)

    def start(self, names):
        names = [u for u in names if self.systemd and not self.states[u]["active"]]
        if names:
            self.systemctl_do("start", *names)

    def systemctl_do(self, *args, **kwargs):
        """systemctl *args* (offline with --root=/ without systemd running), recorded as an
        action; only recorded in check mode."""
        argv = list(args) if self.systemd or args[0] in ("stop", "start") else ["--root=/"] + list(args)
        self.actions["units"].append(" ".join(args))
        if self.check_mode:
            return
        if self.systemctl is None:
            raise InstallError("units", "units: systemctl not found on the managed host (to %s)" % " ".join(args),
                               field="units")
        try:
            self.systemctl.run(*argv, check=kwargs.get("check", True))
        except CommandError as exc:
            raise InstallError("units", "units: %s" % exc, field="units")
