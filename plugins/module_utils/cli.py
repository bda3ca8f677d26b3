# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`netlb-multiwan`: runtime control of a balancer host without Ansible.

  netlb-multiwan status [--json]        (also installed as netlb-multiwan-status)
  netlb-multiwan drain NAME             new connections avoid uplink NAME
  netlb-multiwan undrain NAME
  netlb-multiwan weight NAME N

Each change is recorded in the state document first (so the next boot applies
it too), then the pinned maps of every attachment are converged to it: the
program follows from the next connect, with no reload and no counter reset.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import subprocess
import sys
import tempfile

from ansible_collections.netlb.multiwan.plugins.module_utils import balancer_status, datapath
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

DEFAULT_STATE_FILE = balancer_status.DEFAULT_STATE_FILE
MAX_WEIGHT = 1000


class Host(object):
    """What the engine uses of an AnsibleModule, for code running without one
    (this command, the boot unit): params, check_mode, get_bin_path, run_command."""

    def __init__(self, params=None, check_mode=False):
        self.params, self.check_mode = dict(params or {}), check_mode

    def get_bin_path(self, name):
        for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
            path = os.path.join(directory, name)
            if directory and os.access(path, os.X_OK):
                return path
        return None

    def run_command(self, argv):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        out, err = proc.communicate()
        return proc.returncode, out, err


Subprocess = Host


def load(path):
    with open(path) as handle:
        return json.load(handle)


def save(path, doc):
    """Atomically (a boot unit reading it never sees half a document), and in the
    role's layout (to_nice_json), so the next role run finds nothing to rewrite."""
    try:
        with open(path) as handle:
            newline = "\n" if handle.read().endswith("\n") else ""
    except (IOError, OSError):
        newline = "\n"
    directory = os.path.dirname(path) or "."
    handle, tmp = tempfile.mkstemp(prefix=".balancer.", dir=directory)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(doc, indent=2, sort_keys=True, separators=(",", ": ")) + newline)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def converge_maps(doc, bpftool, check_mode=False):
    """Every attachment's maps to the document's runtime state; the changes, as "cgroup: change"."""
    changes = []
    for attachment in doc.get("attachments", []):
        maps = datapath.Maps(bpftool, attachment["pin_dir"] + "/maps")
        changes += ["%s: %s" % (attachment["cgroup"], c)
                    for c in maps.converge(doc["uplinks"], doc["policy"], doc.get("exclude", []),
                                           check_mode=check_mode)]
    return changes


def set_uplink(doc, name, **fields):
    for up in doc["uplinks"]:
        if up["name"] == name:
            up.update(fields)
            return
    raise SystemExit("netlb-multiwan: no uplink named %r (uplinks: %s)"
                     % (name, ", ".join(u["name"] for u in doc["uplinks"])))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="netlb-multiwan", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--state", default=DEFAULT_STATE_FILE, metavar="FILE",
                        help="state document written by the role (default: %(default)s)")
    sub = parser.add_subparsers(dest="command")
    status = sub.add_parser("status", help="uplinks, connections per uplink, attachments, problems")
    status.add_argument("--json", action="store_true")
    for command in ("drain", "undrain"):
        sub.add_parser(command, help="%s an uplink" % command).add_argument("name")
    weight = sub.add_parser("weight", help="set an uplink's weight")
    weight.add_argument("name")
    weight.add_argument("weight", type=int)
    args = parser.parse_args(argv)
    if args.command in (None, "status"):
        return balancer_status.main(["--state", args.state] + (["--json"] if getattr(args, "json", False) else []))
    if args.command == "weight" and not 0 <= args.weight <= MAX_WEIGHT:
        parser.error("weight: must be 0-%d, got %d" % (MAX_WEIGHT, args.weight))
    doc = load(args.state)
    if args.command == "weight":
        set_uplink(doc, args.name, weight=args.weight)
    else:
        set_uplink(doc, args.name, drained=args.command == "drain")
    save(args.state, doc)
    try:
        changes = converge_maps(doc, Bpftool(Host(), Host().get_bin_path("bpftool") or "bpftool"))
    except (BpftoolError, OSError) as exc:
        sys.stderr.write("netlb-multiwan: recorded in %s, but the maps were not updated: %s\n" % (args.state, exc))
        return 1
    sys.stdout.write("%s %s: %s\n" % (args.command, args.name, ", ".join(changes) or "already so"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
