# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`netlb-multiwan-track`: the health tracker of a balancer host.

Reads the state document, watches each tracked uplink and writes what it
decides to the health file (``/run/netlb-multiwan/health.json``), then
converges the program's maps (module_utils/cli.converge_maps merges the health
file's down flags into the document's runtime state): the next connect avoids
a dead uplink, with no reload. Evidence (module_utils/health.py decides):

- netlink events: carrier lost, link down, address or default route gone on
  an uplink: down at once;
- probe rounds sent through the uplink itself (bound to its VRF or interface,
  or marked with its fwmark, so the balancer program leaves them alone): ICMP
  echo on a raw socket, a TCP connect, or a DNS query, to each target.

If the tracker stops, the maps keep the last state (fail-open) and systemd
restarts it; a restarted tracker rereads the health file, so an uplink that was
down stays down until it answers again. Every transition goes to the journal
(stdout) with its reason and the probe figures. With ``metrics_textfile`` in
the document it also writes node_exporter textfile metrics every second.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

from ansible_collections.netlb.multiwan.plugins.module_utils import (balancer_status, budget, cgroup, cli, datapath,
                                                                     events, health, mptcp, mptcp_upgrade, netlink, sockets,
                                                                     steering)
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool, BpftoolError
from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write

HEALTH_FILE = health.HEALTH_FILE
METRICS_EVERY = 1.0  # seconds between health file and metrics rewrites without a transition
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}


def log(message):
    # systemd puts stdout in the journal under the unit's name.
    sys.stdout.write("netlb-multiwan-track: %s\n" % message)
    sys.stdout.flush()


def family_of(address):
    return 6 if ":" in address else 4


def tracked(doc, gateway_of=None):
    """[(slot, uplink entry, its track settings)] of the uplinks the document tracks.
    Without targets an uplink's gateway is probed: the recorded one, else (device
    steering, where the inventory need not know it) ``gateway_of(uplink)``, the
    gateway of the default route it has now."""
    found = []
    for slot, up in enumerate(doc.get("uplinks", [])):
        track = up.get("track")
        if not isinstance(track, dict):  # None: not tracked; {}: the defaults
            continue
        settings = dict(health.DEFAULTS, **track)
        if not settings.get("targets"):
            settings["targets"] = [gw for gw in (up.get("gateway"), up.get("gateway6")) if gw][:1]
        if not settings["targets"] and gateway_of is not None:
            gateway = gateway_of(up)
            settings["targets"] = [gateway] if gateway else []
        if settings["targets"]:
            found.append((slot, up, settings))
    return found


def icmp_checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def dns_query(query_id):
    """A query for the root's NS records: every resolver answers it, from cache."""
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + b"\0" + struct.pack("!HH", 2, 1)


class Round(object):
    def __init__(self, seq, sent_at, deadline, targets):
        self.seq, self.sent_at, self.deadline = seq, sent_at, deadline
        self.waiting = set(targets)
        self.rtts = []
        self.sent = len(targets)

    def answered(self, target, now):
        if target in self.waiting:
            self.waiting.discard(target)
            self.rtts.append((now - self.sent_at) * 1000.0)

    def done(self, now):
        return not self.waiting or now >= self.deadline


class UplinkProbe(object):
    """Probe rounds of one uplink, on the tracker's selector."""

    def __init__(self, tracker, slot, up, settings, ident):
        self.tracker, self.slot, self.up, self.settings = tracker, slot, up, settings
        self.name = up["name"]
        self.ident = ident & 0xFFFF
        self.seq = 0
        self.rounds = []
        self.next_round = 0.0
        self.sockets = {}  # method icmp: family -> raw socket
        self.pending = {}  # tcp/dns: socket -> (round, target, dns id)

    def close(self):
        for sock in list(self.sockets.values()) + list(self.pending):
            self.tracker.unregister(sock)
            sock.close()
        self.sockets, self.pending = {}, {}

    def raw(self, family):
        if family not in self.sockets:
            if family == 4:
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            else:
                sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            sock.setblocking(False)
            steering.of(self.tracker.doc).probe(sock, self.up)
            self.tracker.register(sock, self.on_icmp)
            self.sockets[family] = sock
        return self.sockets[family]

    def start_round(self, now):
        settings = self.settings
        self.seq = (self.seq + 1) & 0xFFFF
        rnd = Round(self.seq, now, now + settings["timeout_ms"] / 1000.0, settings["targets"])
        self.rounds.append(rnd)
        for target in settings["targets"]:
            try:
                self.send(rnd, target)
            except (OSError, socket.error):
                pass  # no route (down): the round fails by its deadline
        self.next_round = now + settings["interval_ms"] / 1000.0

    def send(self, rnd, target):
        family = family_of(target)
        method = self.settings["method"]
        if method == "icmp":
            header = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, self.ident, rnd.seq)
            payload = struct.pack("!d", rnd.sent_at)
            packet = header + payload
            if family == 4:  # the kernel sums ICMPv6 itself
                packet = header[:2] + struct.pack("!H", icmp_checksum(packet)) + header[4:] + payload
            self.raw(family).sendto(packet, (target, 0))
            return
        sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                             socket.SOCK_STREAM if method == "tcp" else socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            steering.of(self.tracker.doc).probe(sock, self.up)
            port = int(self.settings.get("port") or (53 if method == "dns" else 80))
            query_id = (self.ident + rnd.seq) & 0xFFFF
            if method == "tcp":
                err = sock.connect_ex((target, port))
                if err not in (0, errno.EINPROGRESS):
                    raise OSError(err, os.strerror(err))
                self.tracker.register(sock, self.on_socket, selectors.EVENT_WRITE)
            else:
                sock.connect((target, port))
                sock.send(dns_query(query_id))
                self.tracker.register(sock, self.on_socket)
        except (OSError, socket.error):
            sock.close()
            raise
        self.pending[sock] = (rnd, target, query_id)

    def on_icmp(self, sock, now):
        family = 6 if sock.family == socket.AF_INET6 else 4
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if family == 4:
                data = data[(data[0] & 0x0F) * 4:] if data else data  # past the IPv4 header
            if len(data) < 8:
                continue
            kind, _code, _sum, ident, seq = struct.unpack("!BBHHH", data[:8])
            if kind != ECHO_REPLY[family] or ident != self.ident:
                continue
            for rnd in self.rounds:
                if rnd.seq == seq:
                    rnd.answered(addr[0], now)

    def on_socket(self, sock, now):
        rnd, target, query_id = self.pending.pop(sock)
        self.tracker.unregister(sock)
        try:
            if self.settings["method"] == "tcp":
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                # A refusal (RST) came back through the uplink: the path works.
                if err in (0, errno.ECONNREFUSED):
                    rnd.answered(target, now)
            else:
                try:
                    reply = sock.recv(512)
                except OSError:
                    reply = b""
                if len(reply) >= 2 and struct.unpack("!H", reply[:2])[0] == query_id:
                    rnd.answered(target, now)
        finally:
            sock.close()

    def finish_rounds(self, now):
        """Evaluate the rounds that are over, oldest first; returns transitions."""
        transitions = []
        while self.rounds and self.rounds[0].done(now):
            rnd = self.rounds.pop(0)
            for sock, (owner, _target, _id) in list(self.pending.items()):
                if owner is rnd:
                    del self.pending[sock]
                    self.tracker.unregister(sock)
                    sock.close()
            state = self.tracker.health[self.name]
            rtt = min(rnd.rtts) if rnd.rtts else None
            change = state.round(rnd.sent - len(rnd.waiting), rnd.sent, now, rtt)
            if change:
                transitions.append(change)
        return transitions

    def next_deadline(self):
        times = [self.next_round] + [r.deadline for r in self.rounds[:1]]
        return min(times)


class LinkWatch(object):
    """The kernel's view of each uplink, over netlink (pyroute2)."""

    def __init__(self):
        from pyroute2 import IPRoute  # pylint: disable=import-error
        from pyroute2.netlink.rtnl import (RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR,
                                           RTMGRP_IPV6_ROUTE, RTMGRP_LINK)
        self.kernel = netlink.Netlink()
        self.events = IPRoute()
        self.events.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR
                         | RTMGRP_IPV6_ROUTE)

    def fileno(self):
        return self.events.fileno()

    def drain(self):
        """The pending events; True when an address came or went (DHCP, a late link)."""
        return any(msg.get("event") in ("RTM_NEWADDR", "RTM_DELADDR") for msg in self.events.get())

    def close(self):
        self.kernel.close()
        self.events.close()

    def default_gateway(self, up):
        """The gateway of the uplink's default route in the main table, IPv4 first; None."""
        for route in self.kernel.routes(steering.MAIN_TABLE):
            if route.dst == "default" and route.dev == up["interface"] and route.gateway:
                return route.gateway
        return None

    def usable(self, doc, up, families):
        """(usable, reason): steering.usable, the status's definition too."""
        return steering.usable(self.kernel, steering.of(doc), up, families)


def reset_connections(provider, kernel, up, cgroups):
    """Destroy the TCP connections *provider* put on uplink *up*, of the cgroups whose ids
    are *cgroups* (None: any), never loopback ones; how many. Only the caller's network
    namespace is seen. An MPTCP subflow is never reset: its connection carries on over
    its other subflows, and the path manager drops it with the uplink's endpoint.
    SocketDiagError when the kernel refuses."""
    destroyed = 0
    with sockets.SockDiag() as diag:
        for sock in diag.tcp():
            if sock.loopback or sock.ulp == "mptcp" or (cgroups is not None and sock.cgroup_id not in cgroups):
                continue
            if provider.holds(kernel, up, sock) and diag.destroy(sock):
                destroyed += 1
    return destroyed


class Tracker(object):
    def __init__(self, state_file, health_file=None, watch=None, bpftool=None):
        self.state_file = state_file
        self.doc = cli.load(state_file)
        self.health_file = health_file or self.doc.get("health_file") or HEALTH_FILE
        self.metrics_file = self.doc.get("metrics_textfile") or None
        self.selector = selectors.DefaultSelector()
        self.watch = watch if watch is not None else LinkWatch()
        self.bpftool = bpftool or Bpftool(cli.Host(), cli.Host().get_bin_path("bpftool") or "bpftool")
        self.running = True
        whole = health.read_health_file(self.health_file)
        recorded = whole.get("uplinks") if isinstance(whole.get("uplinks"), dict) else {}
        self.events = events.Events(log, events.hooks_dir(state_file))
        # The drains and the tier the events reported last (None: nothing to compare with).
        self.drained = whole.get("drained") if isinstance(whole.get("drained"), list) else None
        self.tier = whole.get("active_tier") if isinstance(whole.get("active_tier"), int) else None
        now = time.time()
        self.health, self.probes = {}, []
        for slot, up, settings in tracked(self.doc, getattr(self.watch, "default_gateway", None)):
            last = recorded.get(up["name"], {})
            state = health.UplinkHealth(up["name"], settings, state=last.get("state", "up"),
                                        since=last.get("since", now))
            state.transitions = int(last.get("transitions", 0))
            state.connections_reset = int(last.get("connections_reset", 0))
            if last:
                state.reason = "as recorded before the tracker restarted: %s" % last.get("reason", "")
            self.health[up["name"]] = state
            self.probes.append(UplinkProbe(self, slot, up, settings, os.getpid() * 16 + slot))
        self.selector.register(self.watch.fileno(), selectors.EVENT_READ, self.on_netlink)
        self.last_written = 0.0
        self.metrics_warned = False
        # Data budgets: the clock moves by NETLB_MULTIWAN_CLOCK_OFFSET seconds (a lab's period
        # rollover without touching the machine's clock).
        offset = float(os.environ.get("NETLB_MULTIWAN_CLOCK_OFFSET") or 0)
        self.clock = lambda: time.time() + offset
        self.usage_file = budget.usage_file(self.doc)
        self.usage = budget.load(self.usage_file)
        self.usage_warned = False
        self.spent = dict((up["name"], self.usage[up["name"]].spent(up["budget"]))
                          for up in self.metered() if up["name"] in self.usage)
        self.reexec = False
        self.inputs = self.input_times()

    def input_times(self):
        """What a running tracker follows: the state document (a role run, drain,
        weight) and its own code (a role run installing a new version)."""
        times = []
        for path in (self.state_file, os.path.abspath(__file__)):
            try:
                times.append(os.stat(path).st_mtime)
            except OSError:
                times.append(None)
        return times

    # -- selector ----------------------------------------------------------

    def register(self, sock, callback, events=selectors.EVENT_READ):
        self.selector.register(sock, events, callback)

    def unregister(self, sock):
        try:
            self.selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def on_netlink(self, _fd, now):
        addresses_changed = self.watch.drain()
        transitions = self.check_links(now)
        if addresses_changed and not transitions:
            # The source rules and addresses that steer unconnected UDP follow the
            # uplinks' addresses (apply() converges on transitions anyway).
            self.converge()
        self.apply(transitions, now)

    # -- decisions -----------------------------------------------------------

    def check_links(self, now):
        transitions = []
        for probe in self.probes:
            families = set(family_of(t) for t in probe.settings["targets"])
            usable, reason = self.watch.usable(self.doc, probe.up, families)
            change = self.health[probe.name].link(usable, now, reason)
            if change:
                transitions.append(change)
        return transitions

    def apply(self, transitions, now):
        budgets = self.sample_budgets() if now - self.last_written >= METRICS_EVERY else []
        if transitions or budgets:
            self.converge()  # the maps first: the health file says what they hold
            # Then the connections stuck on an uplink that went down (or whose budget is
            # spent): their applications reconnect at once, and the maps now send the new
            # connects elsewhere.
            for change in transitions + budgets:
                if change["state"] in ("down", "spent"):
                    self.reset_stuck(change["uplink"])
            active = self.active_tier()
            for change in transitions + budgets:
                self.events.emit(events.event(change["state"], change["uplink"], change["reason"],
                                              self.tier_of(change["uplink"]), active, change.get("rtt_ms"),
                                              change.get("loss")))
            changed = ", ".join("%s %s" % (c["uplink"], c["state"]) for c in transitions + budgets)
            self.tier_changed(active, "after %s" % changed)
        self.events.reap(now)
        if transitions or budgets or now - self.last_written >= METRICS_EVERY:
            self.write_health(now)
            if self.input_times() != self.inputs:
                log("%s or the tracker changed: starting again" % self.state_file)
                self.reexec, self.running = True, False

    def published(self):
        """What this tracker says of the uplinks (health.runtime_uplinks reads it)."""
        return {"uplinks": dict((name, h.as_dict()) for name, h in self.health.items()),
                "budgets": self.budget_states()}

    def write_health(self, now):
        self.last_written = now
        atomic_write(self.health_file, make_dir=True, text=json.dumps(
            dict(self.published(), version=1, written=now, pid=os.getpid(), active_tier=self.tier,
                 drained=self.drained), indent=1, sort_keys=True) + "\n")
        if self.metrics_file:
            try:
                atomic_write(self.metrics_file, self.metrics())
            except OSError as exc:  # node_exporter's directory is not ours to make
                if not self.metrics_warned:
                    log("cannot write %s: %s" % (self.metrics_file, exc))
                self.metrics_warned = True

    def converge(self):
        try:
            with cli.locked(self.state_file):
                self.doc = dict(cli.load(self.state_file), health_file=self.health_file)
                changes = cli.converge_maps(self.doc, self.bpftool, published=self.published())
        except (BpftoolError, datapath.DatapathError, netlink.NetlinkError, OSError, ValueError) as exc:
            log("the maps were not updated: %s" % exc)
            return
        if changes:
            log("maps: %s" % ", ".join(changes))

    def active_tier(self):
        """The tier new connections go to, as the maps now have it (0: none)."""
        return datapath.active_tier(health.runtime_uplinks(self.doc, self.published())) or 0

    # -- data budgets ----------------------------------------------------------

    def metered(self):
        return [up for up in self.doc.get("uplinks", []) if up.get("budget")]

    def sample_budgets(self):
        """Account each metered uplink's byte counters; the budgets that became spent or
        renewed (a new period) since the last sample, as transitions."""
        now = self.clock()
        changes = []
        for up in self.metered():
            name, plan = up["name"], up["budget"]
            try:
                index, counter = self.watch.kernel.byte_counters(up["interface"])
            except (netlink.NetlinkError, OSError, AttributeError):
                index, counter = None, None
            usage = self.usage.setdefault(name, budget.Usage())
            was = self.spent.get(name)
            reset_before = usage.reset_at
            usage.sample(plan, now, counter, index, float(up.get("budget_reset") or 0))
            self.spent[name] = usage.spent(plan)
            if was is not None and was != self.spent[name]:
                if self.spent[name]:
                    reason = "%d of %d bytes used this %s" % (usage.used, plan["bytes"], plan["period"])
                elif usage.reset_at != reset_before:
                    reason = "netlb-multiwan budget %s reset" % name
                else:
                    reason = "a new %s began, or the budget grew" % plan["period"]
                changes.append({"uplink": name, "state": "spent" if self.spent[name] else "renewed", "reason": reason})
        if self.metered():
            try:
                budget.save(self.usage_file, self.usage)
            except OSError as exc:
                if not self.usage_warned:
                    log("cannot write %s: %s" % (self.usage_file, exc))
                self.usage_warned = True
        return changes

    def budget_states(self):
        now = self.clock()
        return dict((up["name"], self.usage[up["name"]].status(up["budget"], now))
                    for up in self.metered() if up["name"] in self.usage)

    def tier_of(self, name):
        return next((int(u.get("tier", 1)) for u in self.doc.get("uplinks", []) if u.get("name") == name), 0)

    def tier_changed(self, active, reason):
        if self.tier is None:  # a first start: nothing to compare with
            self.tier = active
        elif active != self.tier:
            self.tier = active
            self.events.emit(events.event("tier", reason=reason, tier=active, active_tier=active))

    def document_changes(self):
        """Drains and undrains made while no tracker ran this document (netlb-multiwan drain
        makes the tracker start again), and the tier change they made."""
        if self.drained is not None:
            for up in self.doc.get("uplinks", []):
                was, now = up.get("name") in self.drained, bool(up.get("drained"))
                if was != now:
                    self.events.emit(events.event("drained" if now else "undrained", up.get("name"),
                                                  "netlb-multiwan %s or a role run" % ("drain" if now else "undrain"),
                                                  int(up.get("tier", 1)), self.active_tier()))
        # What the events said so far: the health file keeps it for the next tracker (the
        # document may change again before this one writes it).
        self.drained = sorted(u.get("name") for u in self.doc.get("uplinks", []) if u.get("drained"))
        self.tier_changed(self.active_tier(), "the state document changed")

    def reset_stuck(self, name):
        """Destroy the TCP connections the balancer put on uplink *name* (now down, or its
        budget spent), unless its track.reset says not to: only the balanced cgroups' (the tracker sees its own
        network namespace only), never loopback ones."""
        up = next((u for u in self.doc.get("uplinks", []) if u.get("name") == name), None)
        track = up.get("track") if up else None
        if up is None or (isinstance(track, dict) and not track.get("reset", True)):
            return
        destroyed, failed = 0, None
        try:
            destroyed = reset_connections(steering.of(self.doc), self.watch.kernel, up, self.balanced_cgroups())
        except (sockets.SocketDiagError, OSError, netlink.NetlinkError) as exc:
            failed = exc
        self.health[name].connections_reset += destroyed
        log("%s: %d connection%s reset%s" % (name, destroyed, "" if destroyed == 1 else "s",
                                             " (%s)" % failed if failed else ""))

    def balanced_cgroups(self):
        """The ids of the attachments' cgroups and their descendants; None when one is the
        root (the whole host is balanced)."""
        mount = cgroup.cgroup2_mount()
        ids = set()
        if mount is None:
            return ids  # no cgroup2: nothing is balanced
        for attachment in self.doc.get("attachments", []):
            try:
                path = cgroup.resolve_cgroup(attachment.get("cgroup") or "/", mount)
            except cgroup.CgroupError:
                continue
            if path == mount:
                return None
            ids |= sockets.cgroup_ids(path)
        return ids

    def metrics(self):
        return render_metrics(self.doc, self.health, self.counters(), self.budget_states(), self.multipath())

    def multipath(self):
        """MPTCP's connections and subflows per uplink (mptcp.observe), None when off."""
        kernel = getattr(self.watch, "kernel", None)
        if kernel is None or mptcp.mode(self.doc) == "off":
            return None
        try:
            found, _problems = mptcp.observe(self.doc, health.runtime_uplinks(self.doc, self.published()), kernel)
        except (netlink.NetlinkError, OSError) as exc:
            log("mptcp not read for the metrics: %s" % exc)
            return None
        found["upgrade"], _problems = mptcp_upgrade.observe(self.doc, self.dump_map)
        return found

    def dump_map(self, path):
        try:
            return self.bpftool.json("map", "dump", "pinned", path)
        except BpftoolError as exc:
            raise ValueError(str(exc))

    def counters(self):
        """[{steered, errors}] per slot, summed over the attachments; None when unreadable."""
        total = None
        for attachment in self.doc.get("attachments", []):
            path = attachment["pin_dir"] + "/maps/" + balancer_status.COUNTERS_MAP
            try:
                slots = balancer_status.counter_slots(self.bpftool.json("map", "dump", "pinned", path))
            except (BpftoolError, ValueError):
                continue
            if total is None:
                total = slots
            else:
                total = [{"steered": a["steered"] + b["steered"], "errors": a["errors"] + b["errors"]}
                         for a, b in zip(total, slots)]
        return total

    # -- loop ----------------------------------------------------------------

    def run(self, until=None):
        now = time.time()
        self.apply(self.check_links(now), now)
        # The maps may hold another view (a tracker killed between its map update and
        # its health file, a role run): make them hold this one.
        self.converge()
        self.document_changes()
        self.write_health(now)
        for probe in self.probes:
            probe.next_round = now
        while self.running and (until is None or now < until):
            deadline = min([p.next_deadline() for p in self.probes] + [now + METRICS_EVERY])
            for key, _mask in self.selector.select(max(0.0, deadline - time.time())):
                key.data(key.fileobj, time.time())
            now = time.time()
            transitions = []
            for probe in self.probes:
                if now >= probe.next_round:
                    probe.start_round(now)
                transitions += probe.finish_rounds(now)
            self.apply(transitions, now)
        for probe in self.probes:
            probe.close()
        self.watch.close()


def render_metrics(doc, states, counters, budgets=None, multipath=None):
    """node_exporter textfile: one HELP and TYPE per metric, labels by uplink."""
    uplinks = doc.get("uplinks", [])
    rows = []

    def metric(name, kind, text, samples):
        rows.append("# HELP netlb_multiwan_%s %s" % (name, text))
        rows.append("# TYPE netlb_multiwan_%s %s" % (name, kind))
        for labels, value in samples:
            label = "{%s}" % ",".join('%s="%s"' % kv for kv in labels) if labels else ""
            rows.append("netlb_multiwan_%s%s %s" % (name, label, value))

    tracked_states = [(u["name"], states[u["name"]]) for u in uplinks if u["name"] in states]
    metric("uplink_up", "gauge", "1 when the tracker considers the uplink up.",
           [((("uplink", n),), 1 if h.state == "up" else 0) for n, h in tracked_states])
    metric("uplink_drained", "gauge", "1 when the uplink is drained (netlb-multiwan drain).",
           [((("uplink", u["name"]),), 1 if u.get("drained") else 0) for u in uplinks])
    metric("uplink_tier", "gauge", "The uplink's priority tier (1 first).",
           [((("uplink", u["name"]),), u.get("tier", 1)) for u in uplinks])
    active = datapath.active_tier(health.runtime_uplinks(doc, {
        "uplinks": dict((n, h.as_dict()) for n, h in tracked_states), "budgets": budgets or {}}))
    metric("active_tier", "gauge", "The tier new connections go to (0: no uplink is usable).",
           [((), active or 0)])
    metric("uplink_transitions_total", "counter", "Up/down transitions decided by the tracker.",
           [((("uplink", n),), h.transitions) for n, h in tracked_states])
    metric("uplink_state_since_seconds", "gauge", "Unix time of the uplink's last transition.",
           [((("uplink", n),), "%.3f" % h.since) for n, h in tracked_states])
    metric("probe_rtt_seconds", "gauge", "Round-trip time of the uplink's last answered probe round.",
           [((("uplink", n),), "%.6f" % (h.rtt_ms / 1000.0)) for n, h in tracked_states if h.rtt_ms is not None])
    metric("probe_loss_ratio", "gauge", "Share of the last probe round's targets that did not answer.",
           [((("uplink", n),), "%.3f" % h.loss) for n, h in tracked_states])
    metric("probes_sent_total", "counter", "Probes sent through the uplink.",
           [((("uplink", n),), h.probes_sent) for n, h in tracked_states])
    metric("probes_lost_total", "counter", "Probes that got no answer in time.",
           [((("uplink", n),), h.probes_lost) for n, h in tracked_states])
    metered = sorted((budgets or {}).items())
    metric("uplink_budget_bytes", "gauge", "The metered uplink's data budget for its period.",
           [((("uplink", n),), b["bytes"]) for n, b in metered])
    metric("uplink_budget_used_bytes", "gauge", "Bytes the metered uplink's interface carried this period.",
           [((("uplink", n),), b["used"]) for n, b in metered])
    metric("uplink_budget_spent", "gauge", "1 when the metered uplink's budget is spent.",
           [((("uplink", n),), 1 if b["spent"] else 0) for n, b in metered])
    metric("uplink_budget_period_end_seconds", "gauge", "Unix time the metered uplink's period ends.",
           [((("uplink", n),), "%.0f" % b["period_end"]) for n, b in metered])
    metric("connections_reset_total", "counter", "TCP connections destroyed when the uplink went down.",
           [((("uplink", n),), h.connections_reset) for n, h in tracked_states])
    if multipath is not None:
        metric("mptcp_connections", "gauge", "Established MPTCP connections of the host.",
               [((), multipath["connections"])])
        metric("mptcp_fell_back_connections", "gauge", "Established MPTCP connections that fell back to TCP.",
               [((), multipath["fell_back"])])
        if multipath["fallbacks_since_boot"] is not None:
            metric("mptcp_fallbacks_total", "counter", "MPTCP connects the far end answered as plain TCP.",
                   [((), multipath["fallbacks_since_boot"])])
        metric("mptcp_subflows", "gauge", "Established MPTCP subflows through the uplink.",
               [((("uplink", u["name"]),), multipath["subflows"].get(u["name"], 0)) for u in uplinks])
        upgrade = multipath.get("upgrade") or {}
        if upgrade.get("upgraded") is not None:
            metric("mptcp_upgraded_sockets_total", "counter",
                   "TCP sockets of the balanced applications the upgrade program made MPTCP.", [((), upgrade["upgraded"])])
            metric("mptcp_upgrade_left_alone_sockets_total", "counter",
                   "TCP sockets of other applications the upgrade program left TCP.", [((), upgrade["left_alone"])])
        metric("mptcp_endpoints", "gauge", "MPTCP endpoints on the uplink's addresses (0: no subflow opens there).",
               [((("uplink", u["name"]),), len(multipath["endpoints"].get(u["name"], []))) for u in uplinks])
    if counters is not None:
        metric("sockets_steered_total", "counter", "Sockets the balancer program put on the uplink.",
               [((("uplink", u["name"]),), counters[i]["steered"] if i < len(counters) else 0)
                for i, u in enumerate(uplinks)])
        metric("setsockopt_errors_total", "counter", "bpf_setsockopt failures while steering to the uplink.",
               [((("uplink", u["name"]),), counters[i]["errors"] if i < len(counters) else 0)
                for i, u in enumerate(uplinks)])
        metric("sockets_skipped_total", "counter",
               "Sockets the program left alone, by reason (no_uplink, local, excluded, bound, foreign_netns, type).",
               [((("reason", reason),), sockets)
                for reason, sockets in sorted(balancer_status.skipped_by_reason(counters).items())])
    return "\n".join(rows) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="netlb-multiwan-track", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--state", default=cli.DEFAULT_STATE_FILE, metavar="FILE")
    parser.add_argument("--health", default=None, metavar="FILE",
                        help="health file (default: the document's health_file, else %s)" % HEALTH_FILE)
    args = parser.parse_args(argv)
    try:
        tracker = Tracker(args.state, args.health)
    except cli.StateError as exc:
        log(str(exc))
        return 1

    def stop(_signum, _frame):
        tracker.running = False
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not tracker.probes and not tracker.metered():
        # Idle, not gone: an exit would have systemd restart it in a loop. A new
        # document (or gateway, at the next role run) starts over.
        log("no uplink of %s has a target to probe: waiting for the document to change" % args.state)
        while tracker.running and tracker.input_times() == tracker.inputs:
            time.sleep(2)
        if tracker.running:
            argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
            os.execv(sys.executable, [sys.executable] + argv[1:])
        return 0
    log("tracking %s" % ", ".join("%s (%s to %s every %d ms)" % (
        p.name, p.settings["method"], ", ".join(p.settings["targets"]), p.settings["interval_ms"])
        for p in tracker.probes) or "no uplink")
    if tracker.metered():
        log("metering %s" % ", ".join("%s (%d bytes a %s)" % (u["name"], u["budget"]["bytes"], u["budget"]["period"])
                                      for u in tracker.metered()))
    tracker.run()
    if tracker.reexec:
        # The health file carries the state over to the new process.
        argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
        os.execv(sys.executable, [sys.executable] + argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
