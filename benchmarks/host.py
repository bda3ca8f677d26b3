"""The methods on this machine's kernel (no VRF), in network namespaces.

Every uplink i has a table (101 + i) with its default route and a rule
`fwmark (i+1)<<8 lookup 101+i`, as mwan3 sets up; the main table's default
goes via uplink 0. Then, one at a time:

- single: nothing more, everything leaves through uplink 0;
- ecmp: the main default becomes a multipath route, nexthop weights in the
  ratio of the link rates, fib_multipath_hash_policy=1 (hash on ports too);
- nft: the mwan3 way with nftables: the first packet of a connection gets a
  random mark (weighted by the link rates), saved in its conntrack entry and
  restored on every later packet; a route-type output chain re-routes on the
  new mark, and masquerade fixes the source address chosen before it;
- bpf_<policy>: this collection's program, fwmark steering, attached by
  netlb.multiwan.cgroup_bpf_attach to a cgroup the traffic runs in. Uplink 0
  stays in the main table (no mark), the others get theirs.
- bpf_rr_slots (two links 2:1, makespan only): a what-if. The weighted policy
  picks at random; round_robin over the slots (uplink 0, uplink 0, uplink 1)
  shows what a deterministic weighted policy would reach.
"""
from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator

from benchmarks.testbed import Log, Method, Testbed
from benchmarks.stats import integer_weights
from tests.integration.ansible_runner import run_cases
from tests.integration.bpf_lab import TestCgroup, build_object
from tests.lab.netlab import Lab, Uplink

POLICIES = ("random", "weighted", "round_robin")
SLOTS = "rr_slots"
CLOCKS = ("wall", "cpu")
NFT_TABLE = "netlb_bench"
MARK_PRIORITY = 1000


def mark(i: int) -> int:
    return (i + 1) << 8


def table(i: int) -> int:
    return 101 + i


def lab_uplinks(rates: list[float]) -> list[Uplink]:
    return [Uplink("wan%d" % i, r) for i, r in enumerate(rates)]


def route_by_mark(lab: Lab) -> None:
    for i, u in enumerate(lab.uplinks):
        lab.client_exec(["ip", "route", "add", "default", "via", u.gateway, "dev", u.interface,
                         "table", str(table(i))])
        lab.client_exec(["ip", "rule", "add", "fwmark", hex(mark(i)), "lookup", str(table(i)),
                         "priority", str(MARK_PRIORITY + i)])


def nft_ruleset(lab: Lab, weights: list[int]) -> str:
    """mwan3's balancing as nftables rules: per-connection weighted random mark
    (numgen over the sum of the weights), kept in the connmark."""
    ranges, start = [], 0
    for i, w in enumerate(weights):
        span = "%d" % start if w == 1 else "%d-%d" % (start, start + w - 1)
        ranges.append("%s : %s" % (span, hex(mark(i))))
        start += w
    primary = lab.uplinks[0].interface
    return """table ip %(table)s {
  chain balance {
    type route hook output priority mangle; policy accept;
    ct mark != 0 meta mark set ct mark return
    meta mark set numgen random mod %(total)d map { %(map)s }
    ct mark set meta mark
  }
  chain source {
    type nat hook postrouting priority srcnat; policy accept;
    oifname != "%(primary)s" masquerade
  }
}
""" % {"table": NFT_TABLE, "total": start, "map": ", ".join(ranges), "primary": primary}


class HostMethods:
    """The methods of one host lab, their cgroups and programs."""

    def __init__(self, lab: Lab, stack: contextlib.ExitStack, log: Log) -> None:
        self.lab = lab
        self.log = log
        rates = [u.rate_mbit for u in lab.uplinks]
        self.weights = integer_weights(rates)
        route_by_mark(lab)
        self.plain_cgroup = stack.enter_context(TestCgroup("bench_plain"))
        os.mkdir(self.plain_cgroup.path)  # no program: the attach module makes the others
        self.cgroups = {p: stack.enter_context(TestCgroup("bench_" + p)) for p in POLICIES}
        if self.weights == [2, 1]:
            self.cgroups[SLOTS] = stack.enter_context(TestCgroup("bench_" + SLOTS))
        self._attach_programs()

    def _attach_programs(self) -> None:
        uplinks = [{"name": "up%d" % i, "interface": u.interface, "weight": w}
                   for i, (u, w) in enumerate(zip(self.lab.uplinks, self.weights))]
        for i in range(1, len(uplinks)):
            uplinks[i]["mark"] = mark(i)
        cases = []
        for key, cg in self.cgroups.items():
            if key == SLOTS:
                # What a deterministic weighted policy would do, emulated with
                # round_robin over uplink 0 twice (main table, then its own
                # table via mark) and uplink 1 once.
                slots = [uplinks[0], dict(uplinks[0], name="up0b", mark=mark(0)), uplinks[1]]
                obj = build_object(cg.tmp, slots, steering="fwmark", policy="round_robin", name=key)
            else:
                obj = build_object(cg.tmp, uplinks, steering="fwmark", policy=key, name=key)
            cases.append({"id": key, "args": {"cgroup": cg.name, "object": obj, "pin_dir": cg.pin_dir}})
        run = run_cases(cases, playbook="attach_cases.yml")
        for key in self.cgroups:
            result = run["results"].get(key)
            if not result or result.get("failed"):
                raise RuntimeError("attaching the %s program failed: %s" % (
                    key, (result or {}).get("msg") or run["output"][-3000:]))
        self.log("  attached %s with cgroup_bpf_attach (%.1f s)" % (", ".join(self.cgroups), run["seconds"]))

    # -- methods -----------------------------------------------------------
    def single(self) -> Method:
        return Method("single", "single uplink", self.plain_cgroup.path)

    def ecmp(self) -> Method:
        lab = self.lab
        primary = lab.uplinks[0]
        hops: list[str] = []
        for u, w in zip(lab.uplinks, self.weights):
            hops += ["nexthop", "via", u.gateway, "dev", u.interface, "weight", str(w)]
        knob = "net.ipv4.fib_multipath_hash_policy"

        def setup() -> None:
            lab.client_exec(["sysctl", "-qw", knob + "=1"])
            lab.client_exec(["ip", "route", "replace", "default", *hops])

        def teardown() -> None:
            lab.client_exec(["ip", "route", "replace", "default", "via", primary.gateway, "dev", primary.interface])
            lab.client_exec(["sysctl", "-qw", knob + "=0"])

        return Method("ecmp", "kernel ECMP", self.plain_cgroup.path, setup, teardown)

    def nft(self) -> Method:
        lab = self.lab
        rules = nft_ruleset(lab, self.weights)

        def setup() -> None:
            lab.client_exec(["nft", "-f", "-"], input=rules, stdin=None)

        def teardown() -> None:
            lab.client_exec(["nft", "delete", "table", "ip", NFT_TABLE], check=False)

        return Method("nft", "nftables, mwan3-style", self.plain_cgroup.path, setup, teardown)

    def bpf(self, policy: str) -> Method:
        return Method("bpf_" + policy, "netlb fwmark, " + policy, self.cgroups[policy].path, prog_cgroup=True)

    def slots(self) -> Method | None:
        if SLOTS not in self.cgroups:
            return None
        return Method("bpf_" + SLOTS, "what-if: round_robin over 2:1 slots", self.cgroups[SLOTS].path,
                      prog_cgroup=True)

    def all(self, single: bool = True) -> list[Method]:
        return ([self.single()] if single else []) + [self.ecmp(), self.nft()] + [self.bpf(p) for p in POLICIES]


@contextlib.contextmanager
def host_testbed(name: str, rates: list[float], connect_rate: str, log: Log) -> Iterator[tuple[Testbed, HostMethods]]:
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab(lab_uplinks(rates), name=name, ipv6=False))
        bed = Testbed(lab, connect_rate, log)
        stack.callback(bed.stop_servers)
        bed.start_servers()
        yield bed, HostMethods(lab, stack, log)


def measure_connect_cost(bed: Testbed, methods: HostMethods, p: dict, log: Log) -> dict:
    """connect() per second with and without the program, and with nftables.

    udp: socket + connect + close, no packet: the hook's share is largest.
    tcp: a full handshake through the lab: what an application pays.
    The program only acts in its cgroup, so one process alternates between
    cgroups every few milliseconds (connect_rate.c): each block is compared
    with its neighbour under the same load from the rest of the machine.
    nftables acts on the whole namespace: its rules are loaded and removed
    round by round instead (tcp_nft), where conntrack and NAT show."""
    plain = methods.single()
    udp = bed.alternating_connects([plain] + [methods.bpf(x) for x in POLICIES], "udp", p["udp_count"],
                                   p["connect_blocks"])
    tcp = bed.alternating_connects([plain, methods.bpf("weighted")], "tcp", p["tcp_count"], p["connect_blocks"])
    out = {clock: {"udp": udp[clock], "tcp": tcp[clock], "tcp_nft": {}} for clock in CLOCKS}
    nft = methods.nft()
    for clock in CLOCKS:
        out[clock]["tcp_nft"] = {plain.key: [], nft.key: []}
    for r in range(p["nft_rounds"]):
        for m in (plain, nft) if r % 2 == 0 else (nft, plain):
            with bed.using(m):
                rate = bed.connects_per_second(m, "tcp", p["nft_count"])
            for clock in CLOCKS:
                out[clock]["tcp_nft"][m.key].append(rate[clock])
    for group in ("udp", "tcp", "tcp_nft"):
        log("  %-7s %s" % (group, " ".join("%s=%.0f/s (cpu %.0f/s)" % (
            k, statistics.median(v), statistics.median(out["cpu"][group][k])) for k, v in out["wall"][group].items())))
    return out
