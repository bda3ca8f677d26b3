# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the role installs around a host's state document - the engine's commands, the
units and their systemd state - decided on the host itself by M(netlb.multiwan.balancer_apply)
(option install): whether systemd runs (units can be started, the slice exists), whether
udev does (an uplink's unit can be bound to its device) and the interpreter the module
runs under (the commands' shebang; it has pyroute2). The controller needs no facts from
the host for it, so a run that changes nothing is one module run per host.

Everything else comes from the document: the routed uplinks (a unit each, with
persistence), the tracker (an uplink tracked or metered), the slice (an attachment that
names it), the kernel modules the steering needs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import zipfile

from ansible_collections.netlb.multiwan.plugins.module_utils import steering
from ansible_collections.netlb.multiwan.plugins.module_utils.install import UNIT_DIRS

PACKAGE = "ansible_collections.netlb.multiwan.plugins.module_utils"
DEFAULT_LIB = "/usr/local/lib/netlb-multiwan"
DEFAULT_HEADER = "Ansible managed"
BOOT_DIR, RUNTIME_DIR = UNIT_DIRS  # the units re-applied at boot; those until the next boot
APPLY_COMMAND = "/usr/local/sbin/netlb-multiwan-apply"
TRACK_COMMAND = "/usr/local/sbin/netlb-multiwan-track"
PROGRAM_UNIT = "netlb-multiwan-bpf.service"
TRACKER_UNIT = "netlb-multiwan-track.service"
MODULES_LOAD = "/etc/modules-load.d/netlb-multiwan.conf"
# Each command: the module_utils whose main() it runs, and what it is for.
COMMANDS = {
    "netlb-multiwan": ("cli", "runtime control (status, drain, undrain, weight)"),
    "netlb-multiwan-status": ("balancer_status", "status of the balancer (uplinks, connections, problems)"),
    "netlb-multiwan-apply": ("boot", "re-apply the state document at boot (the boot units run it)"),
    "netlb-multiwan-track": ("tracker", "uplink health tracker"),
}


# "from <PACKAGE> import a, b as c" (parenthesised over lines too) and "from <PACKAGE>.x import y".
# A regex, not ast: cheap enough to run at every apply (tests/unit/test_engine_files checks
# it against ast).
_IMPORT = re.compile(r"^[ \t]*from[ \t]+%s(?:\.(\w+))?[ \t]+import[ \t]+(\([^)]*\)|(?:[^\n\\]|\\\n)*)"
                     % re.escape(PACKAGE), re.M)


def imports_of(source):
    """The collection's module_utils that *source* imports, anywhere in it (a function's late
    import too)."""
    names = set()
    for submodule, imported in _IMPORT.findall(source):
        if submodule:
            names.add(submodule)
            continue
        for item in re.sub(r"#[^\n]*", "", imported).strip("()").replace("\\\n", " ").split(","):
            words = item.split()  # "name" or "name as alias"
            if words:
                names.add(words[0])
    return names


def closure(names, source_of):
    """*names* and every module_utils they import, transitively, sorted; *source_of(name)*
    gives a module's source."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports_of(source_of(name)))
    return sorted(seen)


def engine_modules(source_of):
    """The engine on a host: every module_utils its commands import (whichever commands are
    installed: it is one package everywhere)."""
    return closure((module for module, _summary in COMMANDS.values()), source_of)


def carried_sources():
    """{name: source} of the collection's module_utils this process can read: the package in
    the module's own AnsiballZ payload (a zip; balancer_apply imports the commands' modules so
    that it carries them) or in a directory."""
    from ansible_collections.netlb.multiwan.plugins import module_utils as package

    out = {}
    for entry in package.__path__:
        if os.path.isdir(entry):
            for name in sorted(os.listdir(entry)):
                if name.endswith(".py"):
                    with open(os.path.join(entry, name)) as handle:
                        out.setdefault(name[:-3], handle.read())
            continue
        archive = entry
        while archive and not os.path.isfile(archive):
            archive = os.path.dirname(archive)
        if not archive:
            continue
        prefix = os.path.relpath(entry, archive).replace(os.sep, "/") + "/"
        with zipfile.ZipFile(archive) as carried:
            for name in carried.namelist():
                rest = name[len(prefix):]
                if name.startswith(prefix) and rest.endswith(".py") and "/" not in rest:
                    out.setdefault(rest[:-3], carried.read(name).decode("utf-8"))
    return out


def engine_files(lib, source_of):
    """The engine's package under *lib* (files entries); *source_of(name)* gives a module's source."""
    package_dir = os.path.join(lib, *PACKAGE.split("."))
    return [{"path": os.path.join(package_dir, name + ".py"), "content": source_of(name), "mode": "0644"}
            for name in engine_modules(source_of)]


def command_script(python, lib, module, summary):
    return ("#!%s\n# netlb.multiwan: %s\nimport sys\nsys.path.insert(0, %r)\n"
            "from %s.%s import main\nraise SystemExit(main())\n" % (python, summary, lib, PACKAGE, module))


def uplink_unit_name(up):
    return "netlb-multiwan-uplink-%s.service" % up["name"]


def device_unit(interface):
    """systemd's device unit of a network interface (a dash in the name escaped)."""
    return "sys-subsystem-net-devices-%s.device" % interface.replace("-", "\\x2d")


def uplink_unit(header, up, udev):
    """Routes the uplink at boot and whenever its interface appears again."""
    device = device_unit(up["interface"])
    how = ("VRF %s" % up["vrf"]) if up.get("vrf") else ("fwmark %s" % up.get("mark"))
    lines = [
        "# %s" % header,
        "# Routes uplink %s (%s) at boot and whenever the" % (up["name"], up["interface"]),
        "# interface appears again (USB modem, wifi card): %s, table %s." % (how, up["table"]),
        "[Unit]",
        "Description=netlb.multiwan uplink %s (%s, table %s)" % (up["name"], up["interface"], up["table"]),
        "Documentation=https://github.com/netlb/multiwan",
    ]
    if udev:
        lines += ["BindsTo=%s" % device, "After=%s network.target" % device]
    else:
        lines += ["# No udev on this host (a container): systemd has no device units to bind to, so",
                  "# the unit starts at boot and retries until the interface is there.",
                  "After=network.target"]
    lines += [
        "Before=%s" % PROGRAM_UNIT,
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=%s uplink %s" % (APPLY_COMMAND, up["name"]),
        "# The interface may get its address a moment after it appears.",
        "Restart=on-failure",
        "RestartSec=3",
        "",
        "[Install]",
        "WantedBy=multi-user.target%s" % ((" " + device) if udev else ""),
    ]
    return "\n".join(lines) + "\n"


def program_unit(header, cgroups, slice_unit):
    """Loads the program and attaches it at boot (netlb-multiwan-apply bpf)."""
    lines = [
        "# %s" % header,
        "# Loads the balancer program installed by the role and attaches it to",
        "# %s." % ", ".join(cgroups),
        "# Uplink units are ordered before it but not required: a missing uplink must",
        "# not stop balancing over the others (the program fails open).",
        "[Unit]",
        "Description=netlb.multiwan balancer program",
        "Documentation=https://github.com/netlb/multiwan",
        "After=local-fs.target sys-fs-bpf.mount",
    ]
    if slice_unit:
        lines += ["Requires=%s" % slice_unit, "After=%s" % slice_unit]
    lines += ["", "[Service]", "Type=oneshot", "RemainAfterExit=yes", "ExecStart=%s bpf" % APPLY_COMMAND,
              "", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"


def tracker_unit(header):
    return "\n".join([
        "# %s" % header,
        "# Tracks the health of the uplinks and takes a failed one out of the balancer",
        "# (through the program's maps); see /run/netlb-multiwan/health.json and",
        "# `netlb-multiwan status`. If it stops, balancing goes on with the last state.",
        "[Unit]",
        "Description=netlb.multiwan uplink health tracker",
        "Documentation=https://github.com/netlb/multiwan",
        "After=%s network.target" % PROGRAM_UNIT,
        "Wants=%s" % PROGRAM_UNIT,
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=%s" % TRACK_COMMAND,
        "Restart=always",
        "RestartSec=1",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]) + "\n"


def slice_unit_text(header, slice_unit):
    name = slice_unit[:-len(".slice")]
    return "\n".join([
        "# %s" % header,
        "# Apps started here have their connections balanced over the uplinks:",
        "#   systemd-run --slice=%s APP      (or Slice=%s in a unit)" % (name, slice_unit),
        "#   systemd-run --scope --slice=%s --shell" % name,
        "[Unit]",
        "Description=netlb.multiwan balanced apps",
        "Documentation=https://github.com/netlb/multiwan",
        "Before=slices.target",
        "",
        "[Install]",
        "WantedBy=slices.target",
    ]) + "\n"


def for_host(doc, systemd):
    """*doc* as this host can have it: without systemd running there is no slice to attach to
    (its cgroup exists only while systemd runs the slice), so its attachment is left out."""
    if systemd:
        return doc
    return dict(doc, attachments=[a for a in doc.get("attachments", []) if not a.get("slice")])


def tracked(doc):
    """The tracker runs when an uplink is tracked (it probes) or metered (a data budget)."""
    return any(up.get("track") or up.get("budget") for up in doc.get("uplinks", []))


def retire_spec(slice_unit, systemd):
    """Where the role's unit files may be and their names: those the run does not install are retired."""
    return {"paths": [BOOT_DIR] + ([RUNTIME_DIR] if systemd else []),
            "patterns": ["netlb-multiwan-*.service"] + ([slice_unit] if slice_unit else [])}


class Layout(object):
    """The files and units of the role for document *doc* (already for_host) on this host.

    *persist*: every unit in /etc/systemd/system, enabled, and the boot units that re-apply
    the document at boot; otherwise there is nothing to re-apply at boot: the tracker and the
    slice run from /run/systemd/system until the next boot, and only under a running systemd.
    *slice_unit*: the slice's unit name ("" for none), installed when an attachment names it.
    *commands*: {command name: path} the role installs; netlb-multiwan-apply only with
    persistence, netlb-multiwan-track only where the tracker runs; with them the engine's
    package under *lib*, from *sources* (carried_sources() by default)."""

    def __init__(self, doc, persist, slice_unit, commands, systemd, udev, python, lib=DEFAULT_LIB,
                 header=DEFAULT_HEADER, sources=None):
        self.doc, self.persist, self.systemd, self.udev = doc, persist, systemd, udev
        self.python, self.lib, self.header, self.sources = python, lib, header, sources
        self.slice_unit = slice_unit
        attached_slices = [a.get("slice") for a in doc.get("attachments", []) if a.get("slice")]
        self.active_slice = slice_unit if systemd and slice_unit in attached_slices else ""
        provider = steering.of(doc)
        self.routed = [up for up in doc.get("uplinks", []) if provider.routed(up)]
        self.kernel_modules = list(provider.kernel_modules)
        runtime = ([TRACKER_UNIT] if tracked(doc) else []) + ([self.active_slice] if self.active_slice else [])
        self.runtime_units = runtime if (persist or systemd) else []
        boot = [uplink_unit_name(up) for up in self.routed] + [PROGRAM_UNIT] if persist else []
        self.enabled = boot + self.runtime_units if persist else []
        wanted = set(COMMANDS) - set([] if persist else ["netlb-multiwan-apply"]) \
            - set([] if TRACKER_UNIT in self.runtime_units else ["netlb-multiwan-track"])
        self.commands = dict((name, path) for name, path in commands.items() if name in wanted)

    def units(self):
        """balancer_apply's units: enabled, started, retired."""
        return {"enabled": self.enabled, "started": self.runtime_units,
                "retire": retire_spec(self.slice_unit, self.systemd)}

    def files(self):
        """Entries as balancer_apply's files takes them (path, content, mode)."""
        out = [{"path": path, "mode": "0755",
                "content": command_script(self.python, self.lib, *COMMANDS[name])}
               for name, path in sorted(self.commands.items())]
        if self.commands:
            out += engine_files(self.lib, (self.sources if self.sources is not None else carried_sources()).__getitem__)
        if self.persist:
            out.append({"path": os.path.join(BOOT_DIR, PROGRAM_UNIT),
                        "content": program_unit(self.header, [a["cgroup"] for a in self.doc.get("attachments", [])],
                                                self.active_slice)})
            if self.kernel_modules:
                out.append({"path": MODULES_LOAD, "content": "# netlb.multiwan: what %s steering needs\n%s\n"
                            % (self.doc.get("steering"), "\n".join(self.kernel_modules))})
            out += [{"path": os.path.join(BOOT_DIR, uplink_unit_name(up)),
                     "content": uplink_unit(self.header, up, self.udev)} for up in self.routed]
        unit_dir = BOOT_DIR if self.persist else RUNTIME_DIR
        if TRACKER_UNIT in self.runtime_units:
            out.append({"path": os.path.join(unit_dir, TRACKER_UNIT), "content": tracker_unit(self.header)})
        if self.active_slice in self.runtime_units:
            out.append({"path": os.path.join(unit_dir, self.active_slice),
                        "content": slice_unit_text(self.header, self.active_slice)})
        return [dict(entry, mode=entry.get("mode", "0644")) for entry in out]
