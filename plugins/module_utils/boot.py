# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-apply the netlb.multiwan balancer at boot, without Ansible.

The role netlb.multiwan.balancer installs this as the command netlb-multiwan-apply (with
the rest of the engine, under /usr/local/lib/netlb-multiwan) and writes what it set up to
/etc/netlb-multiwan/balancer.json. systemd units run it after a reboot:

  netlb-multiwan-apply uplink NAME   VRF (or fwmark table + rules) of one uplink:
                                     netlb-multiwan-uplink-NAME.service, bound to
                                     the interface's device so a late USB modem
                                     or wifi card is routed when it appears
  netlb-multiwan-apply bpf           load the installed program and attach it to
                                     every cgroup of the state file:
                                     netlb-multiwan-bpf.service

Each step is idempotent: what is already there is left alone, so running it on
a host Ansible just provisioned changes nothing. At boot there is no controller
to ask: both steps run the code the modules run (uplink_routing, apply), so a boot
applies what a role run applies, with the same checks.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import sys

from ansible_collections.netlb.multiwan.plugins.module_utils import apply, cli, datapath, state_store
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils import uplink_routing, vrf_model
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

STATE_FILE = os.environ.get("NETLB_MULTIWAN_STATE", state_store.DEFAULT_PATH)


class ApplyError(Exception):
    pass


def log(message):
    # systemd puts stdout in the journal under the unit's name.
    sys.stdout.write("netlb-multiwan-apply: %s\n" % message)
    sys.stdout.flush()


def load_state(path=None):
    try:
        return state_store.load(path or STATE_FILE)
    except state_store.StateError as exc:
        raise ApplyError(str(exc))


def host_bpftool():
    host = cli.Host()
    return Bpftool(host, host.get_bin_path("bpftool") or "bpftool")


# -- routing -----------------------------------------------------------------

def apply_uplink(state, name, netlink=None):
    """What netlb.multiwan.vrf or netlb.multiwan.fwmark_table did for this uplink."""
    try:
        kind, actions, warnings = uplink_routing.apply_uplink(state, name, netlink=netlink)
    except (uplink_routing.RoutingError, vrf_model.ValidationError, nl.NetlinkError, nl.NetnsNotFound) as exc:
        raise ApplyError(str(exc))
    for text in warnings:
        log("warning: %s" % text)
    for action in actions:
        log(action)
    if kind is None:
        log("%s stays in the main table: nothing to do" % name)
        return
    log("uplink %s routed%s" % (name, "" if actions else " (already in place)"))
    # A late interface (USB modem, wifi) routed after the program was attached: its
    # addresses get their source rules and reach the maps now, for unconnected UDP.
    if netlink is None and any(cli.maps_pinned(a) for a in state.get("attachments", [])):
        try:
            with state_store.locked(STATE_FILE):
                changes = cli.converge_maps(load_state(), host_bpftool())
        except (BpftoolError, datapath.DatapathError, nl.NetlinkError) as exc:
            raise ApplyError("uplink %s routed, but the maps were not updated: %s" % (name, exc))
        for change in changes:
            log(change)


# -- program -----------------------------------------------------------------

def apply_bpf(state):
    """The attach and maps phases of the role's apply (module_utils/apply.py, the
    engine the modules run), from the document on disk."""
    try:
        actions, warnings = apply.attach_all(state, cli.Host)
        for text in warnings:
            log("warning: %s" % text)
        for action in actions:
            log(action)
        # From the document as it is now, not as it was when this unit started:
        # `netlb-multiwan drain` may have changed it while the program was attached.
        with state_store.locked(STATE_FILE):
            changes = cli.converge_maps(load_state(), host_bpftool())
    except (apply.ApplyError, BpftoolError, datapath.DatapathError) as exc:
        raise ApplyError(str(exc))
    log("program attached; maps: %s" % (", ".join(changes) or "already converged"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="netlb-multiwan-apply", description=__doc__.split("\n", 1)[0])
    steps = parser.add_subparsers(dest="step")
    steps.add_parser("uplink", help="route one uplink (its unit runs when its interface appears)").add_argument("name")
    steps.add_parser("bpf", help="load the installed program and attach it to every attachment")
    args = parser.parse_args(argv)
    if args.step is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        state = load_state()
        if args.step == "uplink":
            apply_uplink(state, args.name)
        else:
            apply_bpf(state)
    except (ApplyError, OSError, KeyError, ValueError) as exc:
        sys.stderr.write("netlb-multiwan-apply: %s\n" % exc)
        return 1
    return 0
