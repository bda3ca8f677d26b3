# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Status of a netlb.multiwan balancer host, like ``mwan3 status``.

Reads the state file the balancer role writes (/etc/netlb-multiwan/balancer.json)
and compares it with the live kernel: uplink links, addresses, VRF masters,
routing tables and policy rules (over netlink, module_utils/netlink: the
tracker's reader, and the tracker's definition of a usable uplink,
steering.usable), and the cgroup attachments and per-uplink counters of the
program (``bpftool -j``). Read only.

The same file is the module_utils of netlb.multiwan.balancer_info and, installed
by the role under /usr/local/lib/netlb-multiwan with the engine, the command
/usr/local/sbin/netlb-multiwan-status on managed hosts (a wrapper calling main).
So it imports the Python standard library, pyroute2 (optional: without it the
status says what it could not read) and the engine's module_utils, nothing from
ansible.

    netlb-multiwan-status [--json] [--state FILE]

Exit status: 0 when no problem was found, 1 when at least one was (they are
listed under "problems"), 2 on a usage error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import hashlib
import json
import os
import re
import sys
import time

from ansible_collections.netlb.multiwan.plugins.module_utils import (datapath, files, health, mptcp, mptcp_upgrade, netlink,
                                                                     rp_filter, runner, schema, state_store, steering)
from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as model
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import per_cpu_values

DEFAULT_STATE_FILE = state_store.DEFAULT_PATH
DIGEST_LEN = 16  # hex characters of the object's sha256 naming its pin directory
DIGEST_DIR_RE = re.compile(r"^[0-9a-f]{%d}$" % DIGEST_LEN)
COUNTERS_MAP = "mw_counters"
# bpftool and ip live in sbin, which a module's or a user's PATH may lack.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# bpftool >= 7 prints the kernel's attach type names (cgroup_inet4_connect).
LONG_ATTACH_TYPE_RE = re.compile(r"^cgroup_(?:inet|udp)([46])_(\w+)$")
COMMAND_TIMEOUT = 30
FAMILY_LABELS = {model.AF_INET: "IPv4", model.AF_INET6: "IPv6"}


def short_attach_type(name):
    """'cgroup_inet4_connect' -> 'connect4'; short or unknown names unchanged."""
    match = LONG_ATTACH_TYPE_RE.match(name or "")
    return match.group(2) + match.group(1) if match else name


class Host(object):
    """What the collector reads from the machine. Tests replace ``run`` and the paths."""

    def __init__(self, sys_class_net="/sys/class/net", proc_mounts="/proc/mounts", run=None, which=None,
                 ipv4_conf=rp_filter.CONF):
        self.sys_class_net = sys_class_net
        self.proc_mounts = proc_mounts
        self.ipv4_conf = ipv4_conf
        if run is not None:
            self.run = run
        if which is not None:
            self.which = which

    def which(self, name):
        return runner.which(name, dirs=SBIN_DIRS)

    @staticmethod
    def kernel():
        """The reader of links, addresses, routes and rules (the tracker's too)."""
        if not netlink.HAS_PYROUTE2:
            raise ImportError("pyroute2 is not installed (python3-pyroute2)")
        return netlink.Netlink()

    def run(self, argv):
        """(rc, stdout, stderr) in the C locale; rc 127 when the command cannot be started,
        124 when it ran longer than COMMAND_TIMEOUT (runner.subprocess_executor)."""
        return runner.subprocess_executor(timeout=COMMAND_TIMEOUT, environ_update={"LC_ALL": "C"})(argv)

    def read(self, path):
        """Stripped text of a file, or None when it cannot be read (a down link's carrier: EINVAL)."""
        try:
            with open(path) as handle:
                return handle.read().strip()
        except (IOError, OSError):
            return None

    def cgroup2_mount(self):
        for line in (self.read(self.proc_mounts) or "").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
        return None


class Collector(object):
    def __init__(self, state_file, host):
        self.state_file = state_file
        self.host = host
        self.problems = []
        self.tools = {"bpftool": host.which("bpftool"), "pyroute2": netlink.PYROUTE2_VERSION}
        self.kernel = None  # module_utils/netlink.Netlink while collecting

    def problem(self, text):
        self.problems.append(text)

    def command_json(self, tool, args):
        """Parsed JSON output of ``tool -j args``, or (None, reason)."""
        if not self.tools[tool]:
            return None, "%s not found" % tool
        command = runner.CmdRunner(self.tools[tool], ["-j"], executor=self.host.run)
        try:
            data = command.json(*args)
        except runner.CommandError as exc:
            return None, "; ".join(line.strip() for line in str(exc.detail).splitlines()) or "rc %d" % exc.rc
        except ValueError as exc:
            return None, "unreadable JSON from %s: %s" % (tool, exc)
        return [] if data is None else data, None

    # -- state file --------------------------------------------------------

    def read_state(self):
        try:
            state = state_store.read(self.state_file)
        except state_store.StateError as exc:
            self.problem("state file %s" % exc)
            return None
        if state is None:
            self.problem("state file %s missing: the balancer role has not been applied to this host"
                         % self.state_file)
        return state

    # -- uplinks -----------------------------------------------------------

    def link(self, interface):
        found = self.kernel.link(interface) if interface else None
        if found is None:
            return {"exists": False, "operstate": None, "carrier": None, "master": None}, None
        return {
            "exists": True,
            "operstate": (found.operstate or "unknown").lower(),
            "carrier": found.carrier,
            "master": self.kernel.master_name(found),
        }, found

    def uplink(self, state, provider, entry):
        name = entry.get("name") or entry.get("interface") or "slot %s" % entry.get("slot")
        interface = entry.get("interface")
        described = provider.describe(entry)
        up = {
            "slot": entry.get("slot"),
            "name": name,
            "interface": interface,
            "gateway": entry.get("gateway"),
            "gateway6": entry.get("gateway6"),
            "vrf": described["vrf"],
            # device steering: sockets bound to the interface itself, its main-table routes
            "device": described["device"],
            "table": described["table"],
            "mark": described["mark"],
            "weight": entry.get("weight", 1),
            "tier": entry.get("tier", 1),
            "standby": False,
            # As recorded by the role or `netlb-multiwan drain`; the maps follow it.
            "drained": bool(entry.get("drained")),
            "addresses": [], "routes": [], "default_route": None, "default_route6": None,
            "usable": None, "usable_reason": None,
        }
        # The kernel's effective reverse-path filter on the uplink (max of all and its own).
        up["rp_filter"] = rp_filter.effective(interface, self.host.ipv4_conf) if interface else None
        if (name, interface) in rp_filter.strict(state, self.host.ipv4_conf):
            self.problem("%s: strict reverse-path filtering (rp_filter=1) on %s drops the replies of the sockets "
                         "steered to it: balancer_rp_filter: loose, or sysctl net.ipv4.conf.%s.rp_filter=2"
                         % (name, interface, interface))
        if self.kernel is None:
            up.update(exists=None, operstate=None, carrier=None, master=None)
            return up
        link, found = self.link(interface)
        up.update(link)
        if up["vrf"]:
            vrf = self.kernel.link(up["vrf"])
            if vrf is None:
                self.problem("%s: VRF %s does not exist" % (name, up["vrf"]))
            elif vrf.vrf_table is not None and entry.get("table") is not None and vrf.vrf_table != entry["table"]:
                self.problem("%s: VRF %s uses table %s, the state file says %s"
                             % (name, up["vrf"], vrf.vrf_table, entry["table"]))
        families = set([4] if entry.get("gateway") or not entry.get("gateway6") else [])
        if state.get("ipv6") and entry.get("gateway6"):
            families.add(6)
        # The tracker's definition: what a socket steered to this uplink would find.
        up["usable"], up["usable_reason"] = steering.usable(self.kernel, provider, entry, families)
        if not up["usable"]:
            self.problem("%s: not usable: %s" % (name, up["usable_reason"]))
        if found is None:
            return up
        up["addresses"] = (self.kernel.global_addresses(found.index, 4)
                           + self.kernel.global_addresses(found.index, 6))
        table = provider.table(entry)
        in_main = table == steering.MAIN_TABLE
        up["routes"] = [r.render() for r in self.kernel.routes(table) if not in_main or r.dev == interface]
        for family, key in ((4, "default_route"), (6, "default_route6")):
            if family in families:
                up[key] = self.kernel.default_route(table, family, found.index)
        return up

    # -- rules -------------------------------------------------------------

    def rules(self, state, provider):
        families = [model.AF_INET] + ([model.AF_INET6] if state.get("ipv6") else [])
        entries = state.get("uplinks") or []
        result = []
        for rule in provider.rules(self.kernel, entries, families):
            rule = dict(rule, family=FAMILY_LABELS[rule["family"]])
            result.append(rule)
            if rule["present"]:
                continue
            if rule["rule"] == "l3mdev":
                self.problem("no %s l3mdev rule (ip rule add l3mdev): VRF tables are never consulted" % rule["family"])
            else:
                self.problem("%s: no %s rule %s" % (rule["uplink"], rule["family"], rule["rule"]))
        return result

    # -- attachments -------------------------------------------------------

    def pinned_programs(self, pin_path):
        """{prog id: name} of the programs pinned in one object's pin directory."""
        progs = {}
        try:
            names = sorted(os.listdir(pin_path))
        except OSError:
            return progs
        for name in names:
            if name == "maps":
                continue
            info, _err = self.command_json("bpftool", ["prog", "show", "pinned", os.path.join(pin_path, name)])
            if isinstance(info, dict) and "id" in info:
                progs[info["id"]] = name
        return progs

    def counters(self, pin_path):
        """([{steered, errors}] per slot of the counters map, None) or (None, reason). The map is
        shared by every object loaded at the attachment (<pin_dir>/maps), else the object's own."""
        counters_map = os.path.join(os.path.dirname(pin_path), "maps", COUNTERS_MAP)
        if not os.path.exists(counters_map):
            counters_map = os.path.join(pin_path, "maps", COUNTERS_MAP)
        dump, err = self.command_json("bpftool", ["map", "dump", "pinned", counters_map])
        if dump is None:
            return None, err
        return counter_slots(dump), None

    def attachment(self, state, entry, mount, object_digest):
        cgroup = entry.get("cgroup") or "/"
        path = None
        if mount:
            path = mount if cgroup in ("/", ".") else os.path.join(mount, cgroup.lstrip("/"))
        label = "attachment %s" % cgroup
        att = {"cgroup": cgroup, "path": path, "exists": bool(path) and os.path.isdir(path), "processes": None,
               "pin_dir": entry.get("pin_dir"), "pinned": [], "object": None, "current": False,
               "hooks": [], "counters": None}
        if path is None:
            self.problem("%s: no cgroup2 file system is mounted" % label)
        elif not att["exists"]:
            self.problem("%s: cgroup %s does not exist" % (label, path))
        else:
            procs = self.host.read(os.path.join(path, "cgroup.procs"))
            att["processes"] = len(procs.split()) if procs is not None else None

        pin_dir = att["pin_dir"] or ""
        try:
            att["pinned"] = sorted(e for e in os.listdir(pin_dir) if DIGEST_DIR_RE.match(e))
        except OSError:
            pass
        if not att["pinned"]:
            self.problem("%s: no program pinned in %s (not loaded; bpffs does not survive a reboot)"
                         % (label, pin_dir or "(no pin_dir)"))
        elif object_digest and object_digest not in att["pinned"]:
            self.problem("%s: pinned object %s is not the installed object %s"
                         % (label, ", ".join(att["pinned"]), object_digest))
        # The object whose programs and counters count: the installed one, else the only one pinned.
        if object_digest in att["pinned"]:
            att["object"] = object_digest
        elif len(att["pinned"]) == 1:
            att["object"] = att["pinned"][0]
        att["current"] = bool(object_digest) and att["object"] == object_digest

        if not self.tools["bpftool"]:
            return att  # reported once by collect()
        pin_path = os.path.join(pin_dir, att["object"]) if att["object"] else None
        ours = self.pinned_programs(pin_path) if pin_path else {}
        attached = []
        if att["exists"]:
            data, err = self.command_json("bpftool", ["cgroup", "show", path])
            if data is None:
                self.problem("%s: bpftool cgroup show %s failed: %s" % (label, path, err))
            attached = data or []
        for hook in state.get("attach_types") or ["connect4", "connect6"]:
            progs = [{"id": p.get("id"), "name": p.get("name"), "attach_flags": p.get("attach_flags", ""),
                      "pinned": p.get("id") in ours}
                     for p in attached if short_attach_type(p.get("attach_type")) == hook]
            ok = any(p["pinned"] for p in progs)
            att["hooks"].append({"attach_type": hook, "programs": progs, "ok": ok})
            if ok or not att["exists"]:
                continue
            foreign = [p for p in progs if (p["name"] or "").startswith("mw_")]
            if foreign:
                self.problem("%s: %s at %s is not the pinned program (%s)"
                             % (label, ", ".join("%s id %s" % (p["name"], p["id"]) for p in foreign), hook,
                                ", ".join("%s id %s" % (n, i) for i, n in sorted(ours.items())) or "none pinned"))
            else:
                self.problem("%s: program not attached at %s" % (label, hook))
        if pin_path:
            att["counters"], err = self.counters(pin_path)
            if att["counters"] is None:
                self.problem("%s: counters unreadable: %s" % (label, err))
        return att

    # -- all ---------------------------------------------------------------

    def collect(self):
        result = {"state_file": self.state_file, "state_found": False, "steering": None, "policy": None,
                  "ipv6": None, "object": None, "object_digest": None, "uplinks": [], "active_tier": None, "skipped": None, "skipped_by_reason": None,
                  "connections": None, "attachments": [], "rules": [], "mptcp": None, "tools": self.tools,
                  "problems": self.problems}
        state = self.read_state()
        if state is None:
            return result
        result.update(state_found=True, steering=state.get("steering"), policy=state.get("policy"),
                      ipv6=bool(state.get("ipv6")), object=state.get("object"))
        try:
            self.kernel = self.host.kernel()
        except (netlink.NetlinkError, OSError, ImportError) as exc:
            self.problem("links, addresses, routes and rules not read (netlink: %s)" % exc)
        if not self.tools["bpftool"]:
            self.problem("bpftool not found: attachments and counters not checked")

        if result["object"]:
            try:
                result["object_digest"] = file_digest(result["object"])[:DIGEST_LEN]
            except (IOError, OSError):
                self.problem("installed object %s missing" % result["object"])

        try:
            provider = steering.of(state)
        except schema.SchemaError as exc:
            self.problem("state file %s: %s" % (self.state_file, exc))
            return result
        entries = sorted(state.get("uplinks") or [], key=lambda u: u.get("slot", 0))
        try:
            uplinks = [self.uplink(state, provider, entry) for entry in entries]
            result["rules"] = self.rules(state, provider) if self.kernel is not None else []
        finally:
            if self.kernel is not None:
                self.kernel.close()
        result["uplinks"] = uplinks
        published = self.add_health(state, entries, uplinks)
        # The maps' view (datapath.live_weights): the lowest tier with a pickable uplink.
        runtime = health.runtime_uplinks(dict(state, uplinks=entries), published)
        result["active_tier"] = datapath.active_tier(runtime)
        for entry, up in zip(runtime, uplinks):
            up["standby"] = datapath.pickable(entry) and up["tier"] != result["active_tier"]
        result["mptcp"] = self.mptcp(state, runtime)

        mount = self.host.cgroup2_mount()
        result["attachments"] = [self.attachment(state, entry, mount, result["object_digest"])
                                 for entry in state.get("attachments") or []]
        if not result["attachments"]:
            self.problem("the state file lists no attachment: the program balances nothing")
        self.add_counters(result)
        return result

    def mptcp(self, state, runtime):
        """MPTCP's endpoints, connections and subflows per uplink (mptcp.observe), None when off."""
        if mptcp.mode(state) == "off" and not files.read_json(mptcp.record_path(state)):
            return None
        try:
            with self.host.kernel() as link:
                found, problems = mptcp.observe(state, runtime, link)
        except (netlink.NetlinkError, OSError, ImportError) as exc:
            self.problem("mptcp: not read (%s)" % exc)
            return None
        for text in problems:
            self.problem(text)
        if found is not None:
            found["upgrade"], problems = mptcp_upgrade.observe(state, self.dump_map)
            for text in problems:
                self.problem(text)
        return found

    def dump_map(self, path):
        dump, err = self.command_json("bpftool", ["map", "dump", "pinned", path])
        if dump is None:
            raise ValueError(err)
        return dump

    def add_health(self, state, entries, uplinks):
        """What netlb-multiwan-track decided (the health file), per tracked uplink, and the
        usage of each metered uplink's budget; the file's content."""
        published = health.read_health_file(state.get("health_file") or health.HEALTH_FILE)
        recorded = published.get("uplinks") if isinstance(published.get("uplinks"), dict) else {}
        budgets = published.get("budgets") if isinstance(published.get("budgets"), dict) else {}
        for entry, up in zip(entries, uplinks):
            up["budget"] = None
            if entry.get("budget"):
                up["budget"] = dict(budgets.get(up["name"]) or {"used": None, "spent": None, "period_end": None},
                                    bytes=entry["budget"]["bytes"], period=entry["budget"]["period"],
                                    when_spent=entry["budget"].get("when_spent", "drain"))
                if up["budget"]["spent"]:
                    self.problem("%s: data budget spent (%s of %s this %s), %s until %s" % (
                        up["name"], human_bytes(up["budget"]["used"]), human_bytes(up["budget"]["bytes"]),
                        up["budget"]["period"], "drained" if up["budget"]["when_spent"] == "drain" else "a backup",
                        time.strftime("%Y-%m-%d %H:%M", time.localtime(up["budget"]["period_end"] or 0))))
        for entry, up in zip(entries, uplinks):
            if not isinstance(entry.get("track"), dict):
                up["health"] = None
                continue
            found = recorded.get(up["name"])
            up["health"] = dict(found) if found else {"state": "unknown", "reason": "the tracker has not reported"}
            if up["health"]["state"] == "down":
                self.problem("%s: down since %s (health tracker: %s)" % (
                    up["name"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(up["health"].get("since") or 0)),
                    up["health"].get("reason")))
        return published

    def add_counters(self, result):
        """Per-uplink counters summed over every attachment (each has its own maps)."""
        uplinks = result["uplinks"]
        readable = [a["counters"] for a in result["attachments"] if a["counters"] is not None]
        for att in result["attachments"]:
            if att["counters"] is not None and len(att["counters"]) < len(uplinks) + 1:
                self.problem("attachment %s: counters map has %d slots, the state file has %d uplinks "
                             "(+1 skipped): the object was built for other uplinks"
                             % (att["cgroup"], len(att["counters"]), len(uplinks)))
        if not readable:
            for up in uplinks:
                up.update(connections=None, errors=None, share=None)
            return

        def total(slot, field):
            return sum(c[slot][field] for c in readable if slot < len(c))

        for i, up in enumerate(uplinks):
            up["connections"] = total(i, "steered")
            up["errors"] = total(i, "errors")
        by_reason = {}
        for c in readable:
            for reason, sockets in skipped_by_reason(c).items():
                by_reason[reason] = by_reason.get(reason, 0) + sockets
        result["skipped_by_reason"] = by_reason
        result["skipped"] = sum(by_reason.values())
        result["connections"] = sum(up["connections"] for up in uplinks)
        for up in uplinks:
            up["share"] = round(100.0 * up["connections"] / result["connections"], 1) if result["connections"] else None


def _int(text):
    try:
        return int(str(text), 0)
    except (TypeError, ValueError):
        return None


def file_digest(path):
    """sha256 of the object, as cgroup_bpf_attach names its pin directory (a BPF object is small)."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _counter_value(value):
    """{steered, errors} from bpftool's BTF-formatted value or its raw hex bytes."""
    if isinstance(value, dict):
        return {"steered": int(value.get("steered", 0)), "errors": int(value.get("errors", 0))}
    raw = bytes(int(b, 16) for b in value or [])
    if len(raw) < 16:
        return {"steered": 0, "errors": 0}
    return {"steered": int.from_bytes(raw[0:8], sys.byteorder), "errors": int.from_bytes(raw[8:16], sys.byteorder)}


# How `netlb-multiwan status` names each reason a socket was left alone.
REASON_WORDS = {"no_uplink": "no usable uplink", "local": "local destination", "excluded": "excluded",
                "bound": "bound by the application", "foreign_netns": "other namespace", "type": "other socket type"}


def skipped_by_reason(slots):
    """{reason: sockets left alone} from counter_slots: the entries past the uplinks', one
    per MW_SKIP_* reason (an object before 0.2.0 had one for every reason: "unspecified")."""
    rest = slots[datapath.MAX_UPLINKS:]
    if len(rest) == 1:
        return {"unspecified": rest[0]["steered"]}
    return dict((reason, rest[i]["steered"] if i < len(rest) else 0) for i, reason in enumerate(datapath.SKIP_REASONS))


def counter_slots(dump):
    """[{steered, errors}] by slot from ``bpftool -j map dump``.

    mw_counters is per CPU, summed here; an older object's plain array reads the same.
    """
    slots = {}
    for key, per_cpu in per_cpu_values(dump).items():
        values = [_counter_value(v) for v in per_cpu]
        slots[key] = {"steered": sum(v["steered"] for v in values), "errors": sum(v["errors"] for v in values)}
    return [slots.get(i, {"steered": 0, "errors": 0}) for i in range(max(slots) + 1)] if slots else []


def collect(state_file=DEFAULT_STATE_FILE, host=None):
    """The status as a dict (see netlb.multiwan.balancer_info's RETURN); never raises for a broken host."""
    return Collector(state_file, host or Host()).collect()


# -- the command ---------------------------------------------------------------


def _table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(c).ljust(w) if i < 4 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def human_bytes(count):
    """1234567 -> '1.2 MB' (powers of 1000, as providers bill); '?' for None."""
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return ("%d %s" if unit == "B" else "%.1f %s") % (count, unit)
        count /= 1000.0
    return "%.1f TB" % count


def link_state(up):
    if up["exists"] is None:
        return "?"  # not read (no netlink)
    if not up["exists"]:
        return "missing"
    if up["operstate"] == "down":
        return "down"
    if up["carrier"] is False:
        return "no-carrier"
    if up.get("drained"):
        return "drained"
    if (up.get("health") or {}).get("state") == "down":
        return "failed"  # the link is up, its probes are not answered
    if up.get("usable") is False:
        return "unusable"  # no address or no default route: the problems say which
    if (up.get("budget") or {}).get("spent"):
        return "spent"  # its data budget, until the next period
    if up.get("standby"):
        return "standby"  # a backup tier while a lower one has a usable uplink
    return up["operstate"] or "?"


def route_label(up):
    if up.get("device"):
        return "device %s (main routes)" % up["device"]
    if up["vrf"]:
        return "vrf %s (table %s)" % (up["vrf"], up["table"])
    if up["mark"] is not None:
        return "mark %#x -> table %s" % (up["mark"], up["table"])
    return "main"


def render(status):
    """The status as text, one line per uplink, like ``mwan3 status``."""
    lines = []
    if status["state_found"]:
        lines.append("netlb-multiwan: %s steering, %s policy (%s)"
                     % (status["steering"], status["policy"], status["state_file"]))
    else:
        lines.append("netlb-multiwan: no balancer state (%s)" % status["state_file"])
    if status["uplinks"]:
        rows = [("uplink", "interface", "state", "route", "tier", "weight", "connections", "share", "errors")]
        for up in status["uplinks"]:
            rows.append((up["name"], up["interface"], link_state(up), route_label(up), up["tier"], up["weight"],
                         "?" if up["connections"] is None else up["connections"],
                         "-" if up["share"] is None else "%.1f%%" % up["share"],
                         "?" if up["errors"] is None else up["errors"]))
        lines.append("")
        lines += _table(rows)
        reasons = ", ".join("%s %d" % (REASON_WORDS.get(reason, reason), sockets)
                            for reason, sockets in sorted((status["skipped_by_reason"] or {}).items()) if sockets)
        lines.append("  never steered%s: %s" % (" (%s)" % reasons if reasons else "",
                                                "?" if status["skipped"] is None else status["skipped"]))
        for up in status["uplinks"]:
            defaults = ["%s %s" % (family, "yes" if present else "NO")
                        for family, present in (("IPv4", up["default_route"]), ("IPv6", up["default_route6"]))
                        if present is not None]
            routes = "; default route %s" % ", ".join(defaults) if defaults else ""
            lines.append("  %s: %s%s" % (up["name"], ", ".join(up["addresses"]) or "no address", routes))
            metered = up.get("budget")
            if metered:
                lines.append("    budget: %s of %s this %s%s, until %s" % (
                    human_bytes(metered["used"]), human_bytes(metered["bytes"]), metered["period"],
                    " (spent: %s)" % ("drained" if metered["when_spent"] == "drain" else "a backup")
                    if metered["spent"] else "",
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(metered["period_end"]))
                    if metered.get("period_end") else "?"))
            tracked = up.get("health")
            if tracked:
                figures = ["rtt %.1f ms" % tracked["rtt_ms"]] if tracked.get("rtt_ms") is not None else []
                if tracked.get("loss") is not None:
                    figures.append("loss %.0f%%" % (100 * tracked["loss"]))
                if tracked.get("connections_reset"):
                    figures.append("%d connections reset" % tracked["connections_reset"])
                since = (" since " + time.strftime("%H:%M:%S", time.localtime(tracked["since"]))
                         if tracked.get("since") else "")
                extra = "; " + ", ".join(figures) if figures else ""
                lines.append("    health: %s%s (%s)%s" % (tracked["state"], since, tracked.get("reason", ""), extra))
    multipath = status.get("mptcp")
    if multipath:
        fell_back = ", %d fell back to TCP" % multipath["fell_back"] if multipath["fell_back"] else ""
        since = multipath["fallbacks_since_boot"]
        lines += ["", "mptcp: %s; %d connections%s%s" % (
            multipath["mode"], multipath["connections"], fell_back,
            "" if not since else "; %d fallbacks to TCP since boot" % since)]
        upgrade = multipath.get("upgrade")
        if upgrade and upgrade["upgraded"] is not None:
            lines.append("  upgrade: %d TCP sockets of the balanced applications made MPTCP, %d of others left TCP"
                         % (upgrade["upgraded"], upgrade["left_alone"]))
        elif upgrade:
            lines.append("  upgrade: %s" % ("attached" if upgrade["attached"] else "not attached"))
        for name in [up["name"] for up in status["uplinks"]]:
            endpoints = ", ".join(multipath["endpoints"].get(name, [])) or "none"
            lines.append("  %s: %d subflows; endpoints %s" % (name, multipath["subflows"].get(name, 0), endpoints))
    if status["attachments"]:
        lines += ["", "attachments:"]
        for att in status["attachments"]:
            where = att["path"] or att["cgroup"]
            if not att["exists"]:
                where += " (missing)"
            elif att["processes"] is not None:
                where += " (%d processes)" % att["processes"]
            obj = att["object"] or "none"
            if att["object"]:
                obj += " (installed)" if att["current"] else " (not the installed object)"
            lines.append("  %s  object %s" % (where, obj))
            for hook in att["hooks"]:
                progs = ", ".join("%s id %s%s" % (p["name"], p["id"], "" if p["pinned"] else " (not ours)")
                                  for p in hook["programs"]) or "nothing attached"
                lines.append("    %-9s %s" % (hook["attach_type"] + ":", progs))
    if status["rules"]:
        lines += ["", "rules:"]
        for rule in status["rules"]:
            lines.append("  %s %s: %s" % (rule["family"], rule["rule"],
                                          "priority %s" % rule["priority"] if rule["present"] else "MISSING"))
    lines += ["", "problems:" if status["problems"] else "problems: none"]
    lines += ["  - %s" % p for p in status["problems"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="netlb-multiwan-status",
        description="Status of the netlb.multiwan balancer: uplinks, connections per uplink, attachments, problems.",
        epilog="Exit status: 0 when no problem was found, 1 when there is at least one, 2 on a usage error.")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument("--state", default=DEFAULT_STATE_FILE, metavar="FILE",
                        help="state file written by the role (default: %(default)s)")
    args = parser.parse_args(argv)
    status = collect(args.state)
    if args.json:
        sys.stdout.write(json.dumps(status, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(render(status))
    return 1 if status["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
