# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`netlb-multiwan`: runtime control of a balancer host without Ansible.

  netlb-multiwan status [--json]        (also installed as netlb-multiwan-status)
  netlb-multiwan drain NAME             new connections avoid uplink NAME
  netlb-multiwan undrain NAME
  netlb-multiwan weight NAME N
  netlb-multiwan budget NAME reset | set SIZE

Each change is recorded in the state document first (so the next boot applies
it too), then the pinned maps of every attachment are converged to it: the
program follows from the next connect, with no reload and no counter reset.
Writers of the document (this command, the boot unit, balancer_maps) take
turns (``locked``), so a drain made while the boot unit attaches is not lost:
the unit converges from the document as it is once the program is attached.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import sys
import time

from ansible_collections.netlb.multiwan.plugins.module_utils import balancer_status, datapath, health, runner, schema
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
# The document store, also as cli.load, cli.save and cli.locked for the tracker and the boot unit.
from ansible_collections.netlb.multiwan.plugins.module_utils.state_store import StateError, load, locked, save  # noqa: F401

DEFAULT_STATE_FILE = balancer_status.DEFAULT_STATE_FILE


class Host(object):
    """What the engine uses of an AnsibleModule, for code running without one
    (this command, the boot unit): params, check_mode, get_bin_path, run_command."""

    def __init__(self, params=None, check_mode=False):
        self.params, self.check_mode = dict(params or {}), check_mode

    def get_bin_path(self, name):
        """In PATH, then /usr/sbin and /sbin; None when absent."""
        return runner.which(name)

    def run_command(self, argv):
        """(rc, out, err); rc 127 when the command cannot be started (runner.subprocess_executor)."""
        return runner.subprocess_executor()(argv)


Subprocess = Host


def maps_pinned(attachment):
    return os.path.isdir(attachment["pin_dir"] + "/maps")


def port_ranges(doc):
    """The document's exclude_ports as [{"proto", "first", "last"}] (validated by the role)."""
    out = []
    for entry in doc.get("exclude_ports") or []:
        bounds = str(entry["port"]).split("-")
        out.append({"proto": entry["proto"], "first": int(bounds[0]), "last": int(bounds[-1])})
    return out


def converge_maps(doc, bpftool, check_mode=False, published=None, routing=True):
    """Every attachment's maps to the document's runtime state; the changes, as
    "cgroup: change". ``routing``: also, in this namespace and first, what the
    steering needs of the host: loose reverse-path filtering on the steered uplinks
    (rp_filter.converge), and the source rules that steer unconnected UDP
    (uplink_routing.converge_source_rules), so every address the maps hold has its rule,
    and the MPTCP endpoints of the uplinks that may be picked now (mptcp.converge).
    Run by the role, the boot unit, the tracker and this command alike: an uplink
    that comes back (a replugged modem) gets both again. rp_filter goes last: a
    setting that cannot be written (rp_filter.RpFilterError, an OSError) leaves the
    maps converged all the same."""
    changes, sources = [], None  # None: each uplink keeps the addresses the maps give it
    from ansible_collections.netlb.multiwan.plugins.module_utils import mptcp, netlink, rp_filter

    uplinks = health.runtime_uplinks(doc, published)

    # The netlb-multiwan command runs on the host's python3, which may lack pyroute2:
    # it then leaves rules and addresses to the engine's runs (role, boot, tracker).
    if routing and doc.get("attachments") and netlink.HAS_PYROUTE2:
        from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing

        with netlink.Netlink() as link:
            found, actions = uplink_routing.converge_source_rules(doc, link, check_mode=check_mode)
            actions += mptcp.converge(doc, uplinks, link, check_mode=check_mode)
        changes += actions
        sources = dict((slot, s["addresses"]) for slot, s in found.items())
    cookie = datapath.own_netns_cookie() if doc.get("netns_guard") else 0
    for attachment in doc.get("attachments", []):
        maps = datapath.Maps(bpftool, attachment["pin_dir"] + "/maps")
        changes += ["%s: %s" % (attachment["cgroup"], c)
                    for c in maps.converge(uplinks, doc["policy"], doc.get("exclude", []), check_mode=check_mode,
                                           exclude_ports=port_ranges(doc), sources=sources, netns_cookie=cookie,
                                           steering=doc["steering"])]
    if routing:
        changes += rp_filter.converge(doc, check_mode=check_mode)
    return changes


def set_uplink(doc, name, **fields):
    """The uplink named *name*, updated with *fields*."""
    for up in doc["uplinks"]:
        if up["name"] == name:
            up.update(fields)
            return up
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
    metered = sub.add_parser("budget", help="reset a metered uplink's usage, or set its budget (e.g. 30G)")
    metered.add_argument("name")
    metered.add_argument("action", choices=("reset", "set"))
    metered.add_argument("size", nargs="?")
    args = parser.parse_args(argv)
    if args.command in (None, "status"):
        return balancer_status.main(["--state", args.state] + (["--json"] if getattr(args, "json", False) else []))
    try:
        if args.command == "weight":
            schema.weight(args.weight, "weight", allow_zero=True)
        elif args.command == "budget" and args.action == "set":
            args.size = schema.size(args.size, "size") if args.size else parser.error("budget NAME set needs a size")
        elif args.command == "budget" and args.size:
            parser.error("budget NAME reset takes no size")
    except schema.SchemaError as exc:
        parser.error(str(exc))
    with locked(args.state):
        try:
            doc = load(args.state)
        except StateError as exc:
            sys.stderr.write("netlb-multiwan: %s\n" % exc)
            return 1
        if args.command == "weight":
            set_uplink(doc, args.name, weight=args.weight)
        elif args.command == "budget":
            up = set_uplink(doc, args.name)
            if not up.get("budget") and args.action == "reset":
                raise SystemExit("netlb-multiwan: %s has no data budget" % args.name)
            if args.action == "set":
                # Until the next role run, which sets the inventory's budget again.
                up["budget"] = dict(up.get("budget") or schema.budget({"bytes": 1}, "budget"), bytes=args.size)
            else:
                # The tracker starts the period's usage again from zero (it keeps the usage).
                up["budget_reset"] = time.time()
        else:
            set_uplink(doc, args.name, drained=args.command == "drain")
        save(args.state, doc)
        # Not attached yet (the boot unit is still on its way): it converges the
        # maps from this document once it has attached the program.
        waiting = [a["cgroup"] for a in doc["attachments"] if not maps_pinned(a)]
        try:
            changes = converge_maps(dict(doc, attachments=[a for a in doc["attachments"] if maps_pinned(a)]),
                                    Bpftool(Host(), Host().get_bin_path("bpftool") or "bpftool"))
        except (BpftoolError, datapath.DatapathError, OSError) as exc:
            sys.stderr.write("netlb-multiwan: recorded in %s, but the maps were not updated: %s\n" % (args.state, exc))
            return 1
    changes += ["%s: not attached yet, applied when netlb-multiwan-bpf.service attaches the program" % cgroup
                for cgroup in waiting]
    sys.stdout.write("%s %s: %s\n" % (args.command, args.name, ", ".join(changes) or "already so"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
