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
a host Ansible just provisioned changes nothing. It uses only the standard
library, ip(8) and bpftool(8): at boot there is no controller to ask.
"""

import functools
import hashlib
import ipaddress
import json
import os
import subprocess
import sys

STATE_FILE = os.environ.get("NETLB_MULTIWAN_STATE", "/etc/netlb-multiwan/balancer.json")
DIGEST_LEN = 16  # pin directory name: sha256 prefix of the object, as cgroup_bpf_attach does
FWMASK = 0xFFFFFFFF
# As netlb.multiwan.vrf keeps it: a VRF lookup that finds no route stops in the
# VRF instead of falling through to the next rule (the main table).
UNREACHABLE_METRIC = "4278198272"
# bpftool attach-type argument and program name of each hook.
HOOKS = {"connect4": "mw_connect4", "connect6": "mw_connect6"}


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

def cgroup2_mount():
    with open("/proc/mounts") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1]
    raise ApplyError("no cgroup2 file system is mounted")


def bpffs_mounted(path):
    with open("/proc/mounts") as handle:
        mounts = [line.split() for line in handle]
    best = max((m for m in mounts if path == m[1] or path.startswith(m[1].rstrip("/") + "/")),
               key=lambda m: len(m[1]), default=None)
    return best is not None and best[2] == "bpf"


def attached_ids(cgroup, hook_name):
    out = run(["bpftool", "-j", "cgroup", "show", cgroup]).stdout
    progs = json.loads(out) if out.strip() else []
    if not isinstance(progs, list):
        raise ApplyError("bpftool cgroup show %s: %s" % (cgroup, out.strip()))
    attach_types = ("cgroup_inet%s_connect" % hook_name[-1], hook_name)
    return set(p["id"] for p in progs if p.get("attach_type") in attach_types)


def prog_id(pin):
    return json.loads(run(["bpftool", "-j", "prog", "show", "pinned", pin]).stdout)["id"]


def apply_bpf(state):
    obj = state["object"]
    with open(obj, "rb") as handle:
        key = hashlib.sha256(handle.read()).hexdigest()[:DIGEST_LEN]
    if not bpffs_mounted("/sys/fs/bpf"):
        run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])
    root = cgroup2_mount()
    for attachment in state["attachments"]:
        cgroup = os.path.normpath(os.path.join(root, attachment["cgroup"].lstrip("/")))
        if not os.path.isdir(cgroup):
            if attachment.get("slice"):
                raise ApplyError("%s is missing: is %s started?" % (cgroup, attachment["slice"]))
            os.makedirs(cgroup)
        pin_path = os.path.join(attachment["pin_dir"], key)
        if not os.path.isdir(pin_path):
            log("load %s into %s" % (obj, pin_path))
            os.makedirs(attachment["pin_dir"], exist_ok=True)
            run(["bpftool", "prog", "loadall", obj, pin_path, "pinmaps", os.path.join(pin_path, "maps")])
        for hook in state["attach_types"]:
            pin = os.path.join(pin_path, HOOKS[hook])
            if prog_id(pin) not in attached_ids(cgroup, hook):
                log("attach %s at %s of %s" % (HOOKS[hook], hook, cgroup))
                run(["bpftool", "cgroup", "attach", cgroup, hook, "pinned", pin, "multi"])
    log("program attached")


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
