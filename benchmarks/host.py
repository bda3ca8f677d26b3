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
  stays in the main table (no mark), the others get theirs. weighted is a
  deterministic smooth weighted rotation in the ratio of the link rates (2:1
  exactly over every 3 sequential connects, 4:2:1 over every 7), random a
  weighted random draw per connection, round_robin the rotation with equal
  weights.

Weights, policy and the selection table live in pinned maps that the control
plane writes: a freshly attached program finds them empty and leaves every
socket alone, so each attachment is converged (as the role's
netlb.multiwan.balancer_maps does) before anything is measured.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks.testbed import Log, Method, Testbed, measure_hook_ns
from benchmarks.stats import integer_weights
from tests.integration.ansible_runner import run_cases
from tests.integration.bpf_lab import SHARED_MAPS, TestCgroup, build_object, converge
from tests.lab.netlab import Lab, Uplink
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool
from ansible_collections.netlb.multiwan.plugins.module_utils.cli import Host
from ansible_collections.netlb.multiwan.plugins.module_utils.datapath import Maps

POLICIES = ("random", "weighted", "round_robin")
# Baselines of the per-connect table: an empty program, and the balancer deciding with
# no slot to steer to (every pick leaves the socket alone: no setsockopt).
BASELINES = {"empty": "an empty connect4 program", "decide": "netlb weighted, decide only (no setsockopt)"}
EMPTY_SOURCE = Path(__file__).with_name("bpf") / "empty.bpf.c"
HOOK_SCALING_COUNTS = (2, 4, 8, 16)  # up to MW_MAX_UPLINKS
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


def attach_converged(objects: dict[str, tuple[TestCgroup, str]]) -> float:
    """Attach each (cgroup, object) in one playbook run, with the maps shared
    as the role pins them, then converge each attachment's maps: until then
    the program steers nothing. Returns the playbook's seconds."""
    seconds = attach_all([{"id": key, "args": {"cgroup": cg.name, "object": obj, "pin_dir": cg.pin_dir,
                                               "shared_maps": SHARED_MAPS}} for key, (cg, obj) in objects.items()])
    for cg, obj in objects.values():
        converge(cg.pin_dir, obj)
    return seconds


def attach_all(cases: list[dict]) -> float:
    """cgroup_bpf_attach for every case ({"id", "args"}) in one playbook run; its seconds."""
    run = run_cases(cases, playbook="attach_cases.yml")
    for case in cases:
        result = run["results"].get(case["id"])
        if not result or result.get("failed"):
            raise RuntimeError("attaching the %s program failed: %s" % (
                case["id"], (result or {}).get("msg") or run["output"][-3000:]))
    return run["seconds"]


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
        self.baseline_cgroups = {k: stack.enter_context(TestCgroup("bench_" + k)) for k in BASELINES}
        self._attach_programs()

    def _attach_programs(self) -> None:
        uplinks = [{"name": "up%d" % i, "interface": u.interface, "weight": w}
                   for i, (u, w) in enumerate(zip(self.lab.uplinks, self.weights))]
        for i in range(1, len(uplinks)):
            uplinks[i]["mark"] = mark(i)
        seconds = attach_converged({key: (cg, build_object(cg.tmp, uplinks, steering="fwmark", policy=key, name=key))
                                    for key, cg in self.cgroups.items()})
        self.log("  attached and converged %s with cgroup_bpf_attach (%.1f s)" % (", ".join(self.cgroups), seconds))
        empty, decide = self.baseline_cgroups["empty"], self.baseline_cgroups["decide"]
        empty_object = os.path.join(empty.tmp, "empty.bpf.o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                        "-I/usr/include/%s-linux-gnu" % os.uname().machine, "-c", str(EMPTY_SOURCE),
                        "-o", empty_object], check=True, capture_output=True, text=True)
        cases = [{"id": "empty", "args": {"cgroup": empty.name, "object": empty_object, "pin_dir": empty.pin_dir}},
                 {"id": "decide", "args": {"cgroup": decide.name, "pin_dir": decide.pin_dir, "shared_maps": SHARED_MAPS,
                                           "object": build_object(decide.tmp, uplinks, steering="fwmark",
                                                                  policy="weighted", name="decide")}}]
        attach_all(cases)
        # The same selection with no mark on any slot: the program picks, and leaves the socket alone.
        Maps(Bpftool(Host(), "bpftool"), decide.pin_dir + "/maps").converge(
            [dict(u, mark=None) for u in uplinks], "weighted", steering="fwmark")

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

    def baseline(self, key: str) -> Method:
        return Method("bpf_" + key, BASELINES[key], self.baseline_cgroups[key].path, prog_cgroup=True)

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


def measure_hook_scaling(bed: Testbed, count: int, log: Log,
                         counts: Sequence[int] = HOOK_SCALING_COUNTS) -> dict[str, dict[str, float]]:
    """ns per udp connect of the weighted program with n uplinks, kernel BPF
    stats as in measure_hook_ns: the program reads a precomputed rotation, so
    its cost should not grow with n. {"udp": {"2": ns, "4": ns, ...}}.

    Every uplink i gets mark(i), uplink 0 included, so every connect pays the
    same setsockopt whatever n (with uplink 0 in main, 1/n of them would skip
    it). Interfaces repeat the lab's: fwmark steering uses only the mark, and
    a mark without an `ip rule` routes via main, all that an unsent udp
    connect needs. Each program gets a cgroup of its own, removed again
    when measured."""
    lab = bed.lab
    with contextlib.ExitStack() as stack:
        cgroups = {n: stack.enter_context(TestCgroup("bench_hook%d" % n)) for n in counts}
        objects: dict[str, tuple[TestCgroup, str]] = {}
        for n, cg in cgroups.items():
            uplinks = [{"name": "up%d" % i, "interface": lab.uplinks[i % len(lab.uplinks)].interface, "weight": 1}
                       for i in range(n)]
            for i in range(n):
                uplinks[i]["mark"] = mark(i)
            key = "hook%d" % n
            objects[key] = (cg, build_object(cg.tmp, uplinks, steering="fwmark", policy="weighted", name=key))
        seconds = attach_converged(objects)
        log("  attached and converged weighted programs with %s uplinks (%.1f s)" % (
            ", ".join(map(str, counts)), seconds))
        methods = {n: Method("bpf_weighted_%d" % n, "netlb fwmark, weighted, %d uplinks" % n, cg.path,
                             prog_cgroup=True) for n, cg in cgroups.items()}
        ns = measure_hook_ns(bed, list(methods.values()), {"udp": count}, log)
    return {"udp": {str(n): ns[m.key]["udp"] for n, m in methods.items()}}
