# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-apply the netlb.multiwan balancer at boot, without Ansible.

The role netlb.multiwan.balancer installs this as /usr/local/sbin/netlb-multiwan-apply
and writes what it set up to /etc/netlb-multiwan/balancer.json. systemd units
run it after a reboot:

  netlb-multiwan-apply uplink NAME   VRF (or fwmark table + rules) of one uplink:
                                     netlb-multiwan-uplink-NAME.service, bound to
                                     the interface's device so a late USB modem
                                     or wifi card is routed when it appears
  netlb-multiwan-apply bpf           load the installed program and attach it to
                                     every cgroup of the state file:
                                     netlb-multiwan-bpf.service

Each step is idempotent: what is already there is left alone, so running it on
a host Ansible just provisioned changes nothing. At boot there is no controller
to ask: both steps run the collection's own engine (module_utils, installed by
the role under /usr/local/lib/netlb-multiwan), the code the modules run, so a
boot applies what a role run applies, with the same checks.
"""

import functools
import os
import sys

STATE_FILE = os.environ.get("NETLB_MULTIWAN_STATE", "/etc/netlb-multiwan/balancer.json")
# The collection's module_utils, installed by the role (the engine the modules run).
LIB = os.environ.get("NETLB_MULTIWAN_LIB", "/usr/local/lib/netlb-multiwan")


class ApplyError(Exception):
    pass


def log(message):
    # systemd puts stdout in the journal under the unit's name.
    print("netlb-multiwan-apply: %s" % message, flush=True)


def load_state(path=STATE_FILE):
    """The engine's one reader of the document (module_utils/state_store)."""
    use_engine()
    from ansible_collections.netlb.multiwan.plugins.module_utils import state_store
    try:
        return state_store.load(path)
    except state_store.StateError as exc:
        raise ApplyError(str(exc))


def use_engine():
    if LIB not in sys.path:
        sys.path.insert(0, LIB)


# -- routing -----------------------------------------------------------------

def apply_uplink(state, name, netlink=None):
    """What netlb.multiwan.vrf or netlb.multiwan.fwmark_table did for this uplink."""
    use_engine()
    from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl, uplink_routing, vrf_model
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
    from ansible_collections.netlb.multiwan.plugins.module_utils import cli, datapath
    if netlink is None and any(cli.maps_pinned(a) for a in state.get("attachments", [])):
        from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
        try:
            with cli.locked(STATE_FILE):
                changes = cli.converge_maps(load_state(), Bpftool(cli.Host(), cli.Host().get_bin_path("bpftool") or "bpftool"))
        except (BpftoolError, datapath.DatapathError, nl.NetlinkError) as exc:
            raise ApplyError("uplink %s routed, but the maps were not updated: %s" % (name, exc))
        for change in changes:
            log(change)


# -- program -----------------------------------------------------------------

def apply_bpf(state):
    """The attach and maps phases of the role's apply (module_utils/apply.py, the
    engine installed by the role under LIB), from the document on disk."""
    use_engine()
    from ansible_collections.netlb.multiwan.plugins.module_utils import apply, cli, datapath
    from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

    try:
        actions, warnings = apply.attach_all(state, cli.Host)
        for text in warnings:
            log("warning: %s" % text)
        for action in actions:
            log(action)
        # From the document as it is now, not as it was when this unit started:
        # `netlb-multiwan drain` may have changed it while the program was attached.
        with cli.locked(STATE_FILE):
            changes = cli.converge_maps(load_state(), Bpftool(cli.Host(), cli.Host().get_bin_path("bpftool") or "bpftool"))
    except (apply.ApplyError, BpftoolError, datapath.DatapathError) as exc:
        raise ApplyError(str(exc))
    log("program attached; maps: %s" % (", ".join(changes) or "already converged"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["uplink"] and len(argv) == 2:
        step = functools.partial(apply_uplink, name=argv[1])
    elif argv == ["bpf"]:
        step = apply_bpf
    else:
        sys.stderr.write("usage: netlb-multiwan-apply uplink NAME | bpf\n")
        return 2
    try:
        step(load_state())
    except (ApplyError, OSError, KeyError, ValueError) as exc:
        sys.stderr.write("netlb-multiwan-apply: %s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
