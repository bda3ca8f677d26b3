# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpftool, always with JSON output (-j), for loading, pinning and attaching.

Written against Debian 12's bpftool v7.1 (legacy cgroup attach, flags multi
/ override) and the older spelling of attach types, which the JSON readers
normalise through bpf_object.short_attach_type.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys

from ansible_collections.netlb.multiwan.plugins.module_utils.bpf_object import short_attach_type
from ansible_collections.netlb.multiwan.plugins.module_utils.runner import CmdRunner, CommandError, module_executor


def hex_number(value):
    """An integer bpftool printed as a number (BTF-formatted) or as hex bytes in host order."""
    if isinstance(value, int):
        return value
    return int.from_bytes(bytes(int(b, 16) for b in value or []), sys.byteorder)


def per_cpu_values(dump):
    """{key: [each CPU's value]} from ``bpftool -j map dump`` of an array: keys as integers,
    values as bpftool printed them (BTF-formatted, or hex bytes). A plain (not per-CPU)
    array's entry reads as one CPU's."""
    entries = {}
    for entry in dump or []:
        formatted = entry.get("formatted") or {}
        key = hex_number(formatted.get("key", entry.get("key")))
        per_cpu = formatted.get("values", entry.get("values"))
        if per_cpu is not None:
            entries[key] = [v.get("value") for v in per_cpu]
        else:
            entries[key] = [formatted.get("value", entry.get("value"))]
    return entries


class BpftoolError(CommandError):
    """A failed bpftool command; ``detail`` is bpftool's JSON "error" when it printed one."""

    max_args = 4  # "bpftool -j prog loadall": not every map it was given


class Bpftool(object):
    """bpftool at ``path``, run through ``module``'s run_command (an AnsibleModule or cli.Host)."""

    def __init__(self, module, path):
        self.module = module
        self.path = path
        execute = module_executor(module)
        self.runner = CmdRunner(path, ["-j"], executor=execute, error=BpftoolError)
        self.text_runner = CmdRunner(path, executor=execute, error=BpftoolError)

    def run(self, *args, check=True):
        return self.runner.run(*args, check=check)

    def json(self, *args):
        return self.runner.json(*args)

    def loadall(self, obj, pin_dir, reuse=None):
        """Load every program of ``obj``, pinning programs in pin_dir and maps in pin_dir/maps.
        ``reuse``: {map name: pinned path} of existing maps the object uses instead of new ones."""
        # Without -j: bpftool prints the verifier log as text only then.
        args = ["prog", "loadall", obj, pin_dir]
        for name, path in sorted((reuse or {}).items()):
            args += ["map", "name", name, "pinned", path]
        args += ["pinmaps", pin_dir + "/maps"]
        self.text_runner.run(*args)

    def map_shape(self, pinned):
        """What a program that reuses the map at ``pinned`` relies on: type, key and value
        sizes, entries, flags. libbpf reuses a pinned map whatever its shape."""
        info = self.json("map", "show", "pinned", pinned) or {}
        return tuple(info.get(k) for k in ("type", "bytes_key", "bytes_value", "max_entries", "flags"))

    def pin_map(self, pinned, path):
        """Pin the map pinned at ``pinned`` at ``path`` too."""
        self.run("map", "pin", "pinned", pinned, path)

    def prog_id(self, pinned):
        info = self.json("prog", "show", "pinned", pinned)
        return info["id"] if isinstance(info, dict) else None

    def cgroup_programs(self, cgroup):
        """[{id, attach_type (short), attach_flags, name}] attached directly at ``cgroup``."""
        data = self.json("cgroup", "show", cgroup) or []
        result = []
        for entry in data:
            result.append({
                "id": entry.get("id"),
                "attach_type": short_attach_type(entry.get("attach_type", "")),
                "attach_flags": entry.get("attach_flags", ""),
                "name": entry.get("name", ""),
            })
        return result

    def attach(self, cgroup, attach_type, pinned):
        self.run("cgroup", "attach", cgroup, attach_type, "pinned", pinned, "multi")

    def detach(self, cgroup, attach_type, prog_id):
        self.run("cgroup", "detach", cgroup, attach_type, "id", str(prog_id))

    def version(self):
        info = self.json("version") or {}
        return info.get("version", "unknown")
