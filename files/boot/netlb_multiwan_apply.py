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
to ask: the bpf step runs the collection's own engine (module_utils, installed
by the role under /usr/local/lib/netlb-multiwan); the uplink step still has its
own netlink code (issue 12 moves it onto the engine too).
"""

import functools
import ipaddress
import json
import os
import subprocess
import sys

STATE_FILE = os.environ.get("NETLB_MULTIWAN_STATE", "/etc/netlb-multiwan/balancer.json")
# The collection's module_utils, installed by the role (the engine the modules run).
LIB = os.environ.get("NETLB_MULTIWAN_LIB", "/usr/local/lib/netlb-multiwan")
FWMASK = 0xFFFFFFFF
# As netlb.multiwan.vrf keeps it: a VRF lookup that finds no route stops in the
# VRF instead of falling through to the next rule (the main table).
UNREACHABLE_METRIC = "4278198272"


class ApplyError(Exception):
    pass


def log(message):
    # systemd puts stdout in the journal under the unit's name.
    print("netlb-multiwan-apply: %s" % message, flush=True)


def run(argv, check=True):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if check and proc.returncode != 0:
        raise ApplyError("%s: %s" % (" ".join(argv), proc.stderr.strip() or "exit %d" % proc.returncode))
    return proc


def ip_json(*args):
    out = run(["ip", "-j"] + list(args)).stdout
    return json.loads(out) if out.strip() else []


def load_state(path=STATE_FILE):
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ApplyError("cannot read %s: %s" % (path, exc))
    if state.get("version") != 1:
        raise ApplyError("%s: unknown version %r" % (path, state.get("version")))
    return state


# -- routing -----------------------------------------------------------------

def link(name):
    found = ip_json("-d", "link", "show", "dev", name) if os.path.isdir("/sys/class/net/" + name) else []
    return found[0] if found else None


def global_ipv6(ifname):
    """IPv6 addresses the kernel drops when the interface changes master."""
    found = []
    for entry in ip_json("-6", "addr", "show", "dev", ifname, "scope", "global"):
        for addr in entry.get("addr_info", []):
            if addr.get("family") == "inet6":
                found.append("%s/%s" % (addr["local"], addr["prefixlen"]))
    return found


def ensure_vrf(uplink):
    vrf, table, ifname = uplink["vrf"], uplink["table"], uplink["interface"]
    current = link(vrf)
    if current is None:
        log("create %s (table %d)" % (vrf, table))
        run(["ip", "link", "add", vrf, "type", "vrf", "table", str(table)])
    elif current.get("linkinfo", {}).get("info_kind") != "vrf":
        raise ApplyError("%s exists and is not a VRF" % vrf)
    run(["ip", "link", "set", vrf, "up"])
    iface = link(ifname)
    if iface is None:
        raise ApplyError("interface %s does not exist (yet)" % ifname)
    if iface.get("master") != vrf:
        saved = global_ipv6(ifname)
        log("enslave %s to %s" % (ifname, vrf))
        run(["ip", "link", "set", ifname, "master", vrf])
        have = set(global_ipv6(ifname))
        for addr in saved:
            if addr not in have:
                run(["ip", "-6", "addr", "add", addr, "dev", ifname, "nodad"])
    run(["ip", "link", "set", ifname, "up"])
    families = ["-4"] + (["-6"] if os.path.isdir("/proc/sys/net/ipv6") else [])
    for family in families:
        run(["ip", family, "route", "replace", "unreachable", "default", "metric", UNREACHABLE_METRIC,
             "table", str(table), "proto", "static"])
    for family, gateway in (("-4", uplink.get("gateway")), ("-6", uplink.get("gateway6"))):
        if gateway:
            run(["ip", family, "route", "replace", "default", "via", gateway, "table", str(table),
                 "proto", "static"])


def connected_prefixes(ifname):
    """(family flag, prefix, source) of the interface's link routes, as fwmark_table copies them."""
    found = []
    for entry in ip_json("addr", "show", "dev", ifname):
        for addr in entry.get("addr_info", []):
            iface = ipaddress.ip_interface("%s/%s" % (addr["local"], addr["prefixlen"]))
            if iface.version == 6 and (iface.ip.is_link_local or iface.network.prefixlen == 128):
                continue
            if iface.version == 4 and iface.network.prefixlen == 32:
                continue
            found.append(("-%d" % iface.version, str(iface.network), str(iface.ip)))
    return found


def ensure_fwmark_table(uplink, priority):
    table, ifname, mark = str(uplink["table"]), uplink["interface"], uplink["mark"]
    if link(ifname) is None:
        raise ApplyError("interface %s does not exist (yet)" % ifname)
    families = set()
    for family, prefix, source in connected_prefixes(ifname):
        argv = ["ip", family, "route", "replace", prefix, "dev", ifname, "table", table, "proto", "static"]
        if family == "-4":
            argv += ["scope", "link", "src", source]
        else:
            argv += ["metric", "256"]
        run(argv)
    for family, gateway in (("-4", uplink.get("gateway")), ("-6", uplink.get("gateway6"))):
        if gateway:
            run(["ip", family, "route", "replace", "default", "via", gateway, "dev", ifname, "table", table,
                 "proto", "static"])
            families.add(family)
    for family in sorted(families):
        rules = ip_json(family, "rule", "show")
        present = any(r.get("priority") == priority and r.get("table") == table
                      and int(str(r.get("fwmark", "0")), 0) == mark for r in rules)
        if not present:
            log("add rule fwmark %#x lookup %s (%s)" % (mark, table, family))
            run(["ip", family, "rule", "add", "pref", str(priority), "fwmark", "%#x/%#x" % (mark, FWMASK),
                 "lookup", table])


def apply_uplink(state, name):
    for uplink in state["uplinks"]:
        if uplink["name"] == name:
            break
    else:
        raise ApplyError("no uplink %r in %s" % (name, STATE_FILE))
    if state["steering"] == "vrf" and uplink.get("vrf"):
        ensure_vrf(uplink)
    elif state["steering"] == "fwmark" and uplink.get("mark"):
        ensure_fwmark_table(uplink, state["rule_priority"])
    else:
        log("%s stays in the main table: nothing to do" % name)
        return
    log("uplink %s routed" % name)


# -- program -----------------------------------------------------------------

def apply_bpf(state):
    """The engine's own code (module_utils, installed by the role under LIB):
    what netlb.multiwan.cgroup_bpf_attach does for each attachment, then the
    runtime maps converged to the state document."""
    sys.path.insert(0, LIB)
    from ansible_collections.netlb.multiwan.plugins.module_utils import attach, cli, datapath
    from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError

    try:
        for attachment in state["attachments"]:
            attacher = attach.Attacher(cli.Host({
                "cgroup": attachment["cgroup"], "object": state["object"], "pin_dir": attachment["pin_dir"],
                "attach_types": state["attach_types"], "shared_maps": list(datapath.Maps.NAMES),
                "create_cgroup": not attachment.get("slice"), "state": "present"}))
            attacher.prepare()
            attacher.read_state()
            attacher.present()
            for action in attacher.actions:
                log(action)
        changes = cli.converge_maps(state, Bpftool(cli.Host(), cli.Host().get_bin_path("bpftool") or "bpftool"))
    except (attach.AttachError, BpftoolError, datapath.DatapathError) as exc:
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
