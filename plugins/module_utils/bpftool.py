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

import json

from ansible_collections.netlb.multiwan.plugins.module_utils.bpf_object import short_attach_type


class BpftoolError(Exception):
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        detail = (err or out or "").strip()
        try:
            detail = json.loads(out).get("error", detail)
        except (ValueError, AttributeError):
            pass
        super(BpftoolError, self).__init__("%s failed (rc=%s): %s" % (" ".join(argv[:4]), rc, detail))
        self.detail = detail

    def last_lines(self, count=15):
        text = "\n".join(x for x in (self.err, self.out) if x)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return "\n".join(lines[-count:])


class Bpftool(object):
    def __init__(self, module, path):
        self.module = module
        self.path = path

    def run(self, *args, **kwargs):
        argv = [self.path, "-j"] + list(args)
        rc, out, err = self.module.run_command(argv)
        if rc != 0 and kwargs.get("check", True):
            raise BpftoolError(argv, rc, out, err)
        return rc, out, err

    def json(self, *args):
        _rc, out, _err = self.run(*args)
        return json.loads(out) if out.strip() else None

    def loadall(self, obj, pin_dir, reuse=None):
        """Load every program of ``obj``, pinning programs in pin_dir and maps in pin_dir/maps.
        ``reuse``: {map name: pinned path} of existing maps the object uses instead of new ones."""
        # Without -j: bpftool prints the verifier log as text only then.
        argv = [self.path, "prog", "loadall", obj, pin_dir]
        for name, path in sorted((reuse or {}).items()):
            argv += ["map", "name", name, "pinned", path]
        argv += ["pinmaps", pin_dir + "/maps"]
        rc, out, err = self.module.run_command(argv)
        if rc != 0:
            raise BpftoolError(argv, rc, out, err)

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
