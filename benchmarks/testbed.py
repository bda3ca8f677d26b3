"""What every balancing method is measured with, on the host and in a VM lab guest.

A ``Testbed`` wraps a lab (tests/lab/netlab.py) and adds the peers the
measurements need in the internet namespace: iperf3 (the lab's), a drain
server for equal transfers and an accept loop for connect rates. A
``Method`` is a way of balancing: the cgroup its commands run in (where the
balancer program is attached, or an empty one) and what to set up before and
undo after. The ``measure_*`` functions run every method in turn, repetition
by repetition, so that a machine that gets busier slows all of them alike.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import IPERF_PORT, SERVER4, Lab, LabError, received_mbps

HERE = Path(__file__).resolve().parent
CONNECT_PORT = 7000
HOOK_ROUNDS = 7  # per program: the per-connect figures are medians of this many rounds
TRANSFER_PORT = 7001
# Tables and rule priorities the measurements add for themselves (ceilings).
CEILING_TABLE = 200
CEILING_PRIORITY = 900

Log = Callable[[str], None]


def _nothing() -> None:
    pass


@dataclass
class Method:
    key: str
    label: str
    cgroup: str  # absolute path of the cgroup its commands run in
    setup: Callable[[], None] = _nothing
    teardown: Callable[[], None] = _nothing
    prog_cgroup: bool = False  # the balancer program is attached to that cgroup


@dataclass
class Testbed:
    lab: Lab
    connect_rate: str  # the compiled benchmarks/connect_rate.c
    log: Log = print
    _servers: list[subprocess.Popen] = field(default_factory=list)

    # -- peers -----------------------------------------------------------
    def start_servers(self) -> None:
        inet = ["ip", "netns", "exec", self.lab.inet_netns]
        for argv, port in ((inet + [self.connect_rate, "serve", str(CONNECT_PORT)], CONNECT_PORT),
                           (inet + [sys.executable, str(HERE / "transfer.py"), "serve", str(TRANSFER_PORT)],
                            TRANSFER_PORT)):
            # Lab.down() kills whatever still runs in its namespaces; stop() reaps.
            self._servers.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True))
            deadline = time.monotonic() + 10
            while not self.lab.inet_exec(["ss", "-Hltn", "sport = :%d" % port]).stdout.strip():
                if time.monotonic() > deadline or self._servers[-1].poll() is not None:
                    raise LabError("benchmark server on port %d did not start" % port)
                time.sleep(0.05)

    def stop_servers(self) -> None:
        for proc in self._servers:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._servers.clear()

    # -- running things ----------------------------------------------------
    def argv(self, method: Method, argv: Sequence[str], netns: bool = True) -> list[str]:
        """argv in the method's cgroup and (netns=True) the client namespace.
        The shell joins the cgroup, then execs: everything it starts stays there."""
        in_netns = netns and self.lab.client_netns
        inner = (["ip", "netns", "exec", self.lab.client_netns] if in_netns else []) + list(argv)
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', method.cgroup, *inner]

    def run(self, method: Method, argv: Sequence[str], timeout: float = 120, netns: bool = True) -> str:
        proc = subprocess.run(self.argv(method, argv, netns), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise LabError("%s failed (rc %d) for %s: %s" % (argv[0], proc.returncode, method.key,
                                                             (proc.stderr or proc.stdout).strip()[-1500:]))
        return proc.stdout

    @contextlib.contextmanager
    def using(self, method: Method) -> Iterator[None]:
        method.setup()
        try:
            yield
        finally:
            method.teardown()

    def link_bytes(self) -> dict[str, int]:
        """Bytes each client-side uplink has sent (its tbf qdisc counts them):
        which link carried the traffic, whatever source address it had."""
        out = {}
        for u in self.lab.uplinks:
            qdiscs = json.loads(self.lab.client_exec(["tc", "-s", "-j", "qdisc", "show", "dev", u.interface]).stdout)
            out[u.interface] = sum(q.get("bytes", 0) for q in qdiscs if q.get("kind") == "tbf")
        return out

    def _shares(self, before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
        sent = {k: after[k] - before[k] for k in before}
        total = sum(sent.values()) or 1
        return {k: round(v / total, 4) for k, v in sent.items()}

    # -- measurements ------------------------------------------------------
    def iperf(self, method: Method, parallel: int, seconds: float, extra: Sequence[str] = ()) -> dict:
        argv = ["iperf3", "-c", SERVER4, "-p", str(IPERF_PORT), "-P", str(parallel), "-t", "%g" % seconds,
                "-J", *extra]
        for _attempt in range(50):
            before = self.link_bytes()
            proc = subprocess.run(self.argv(method, argv), capture_output=True, text=True,
                                  timeout=seconds + 60, stdin=subprocess.DEVNULL)
            after = self.link_bytes()
            try:
                result = json.loads(proc.stdout)
            except json.JSONDecodeError as exc:
                raise LabError("iperf3 gave no JSON for %s: %s" % (method.key, proc.stderr.strip())) from exc
            # The lab's iperf3 -s takes one test at a time and needs a moment after each.
            if "server is busy" in str(result.get("error", "")):
                time.sleep(0.2)
                continue
            if proc.returncode != 0 or "error" in result:
                raise LabError("iperf3 failed for %s: %s" % (method.key, result.get("error", proc.stderr)))
            return {"mbps": round(received_mbps(result), 3), "share": self._shares(before, after)}
        raise LabError("iperf3 server stayed busy")

    def transfers(self, method: Method, count: int, nbytes: int) -> dict:
        before = self.link_bytes()
        out = json.loads(self.run(method, [sys.executable, str(HERE / "transfer.py"), "run", SERVER4,
                                           str(TRANSFER_PORT), str(count), str(nbytes)], timeout=600))
        return {"seconds": round(out["makespan"], 4), "share": self._shares(before, self.link_bytes())}

    def connects_per_second(self, method: Method, proto: str, count: int) -> dict[str, float]:
        """{"wall": connects per elapsed second, "cpu": per CPU-second of the process}."""
        return json.loads(self.run(method, [self.connect_rate, proto, SERVER4, str(CONNECT_PORT), str(count)]))

    def alternating_connects(self, methods: Sequence[Method], proto: str, count: int,
                             blocks: int) -> dict[str, dict[str, list[float]]]:
        """One process moving between the methods' cgroups every *count*
        connects, *blocks* times: per-block rates, taken side by side.
        {"wall"|"cpu": {method key: [rate per block]}}."""
        argv = [self.connect_rate, proto, SERVER4, str(CONNECT_PORT), str(count), "--alternate", str(blocks),
                self.lab.client_netns or "-", *(m.cgroup for m in methods)]
        # It enters the client namespace itself, after opening the cgroups.
        out = json.loads(self.run(methods[0], argv, timeout=600, netns=False))
        return {clock: {m.key: rates for m, rates in zip(methods, out[clock])} for clock in ("wall", "cpu")}


def build_connect_rate(out_dir: str) -> str:
    binary = os.path.join(out_dir, "connect_rate")
    subprocess.run(["clang", "-O2", "-Wall", "-Werror", "-o", binary, str(HERE / "connect_rate.c")],
                   check=True, capture_output=True, text=True)
    return binary


# -- measurement loops shared by the host and the guest ------------------------
def measure_ceilings(bed: Testbed, plain: Method, reps: int, seconds: float, log: Log) -> dict[str, list[float]]:
    """Goodput of each uplink alone (iperf3 -P4 bound to its address, routed
    by an `ip rule from`): what tbf lets through, the real 100%."""
    out: dict[str, list[float]] = {u.interface: [] for u in bed.lab.uplinks}
    for i, u in enumerate(bed.lab.uplinks):
        table, prio = str(CEILING_TABLE + i), str(CEILING_PRIORITY + i)
        bed.lab.client_exec(["ip", "route", "add", "default", "via", u.gateway, "dev", u.interface, "table", table])
        bed.lab.client_exec(["ip", "rule", "add", "from", u.address, "lookup", table, "priority", prio])
        try:
            for _ in range(reps):
                out[u.interface].append(bed.iperf(plain, 4, seconds, ["-B", u.address])["mbps"])
        finally:
            bed.lab.client_exec(["ip", "rule", "del", "priority", prio], check=False)
            bed.lab.client_exec(["ip", "route", "flush", "table", table], check=False)
        log("  ceiling %s (%g Mbit/s): %s" % (u.interface, u.rate_mbit, out[u.interface]))
    return out


def measure_efficiency(bed: Testbed, methods: Sequence[Method], parallels: Sequence[int], reps: int,
                       seconds: float, log: Log) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = {m.key: {str(p): [] for p in parallels} for m in methods}
    for rep in range(reps):
        for m in methods:
            with bed.using(m):
                for p in parallels:
                    out[m.key][str(p)].append(bed.iperf(m, p, seconds))
            log("  rep %d %-18s %s" % (rep + 1, m.key, " ".join(
                "P%s=%.1f" % (p, out[m.key][str(p)][-1]["mbps"]) for p in parallels)))
    return out


def measure_makespan(bed: Testbed, methods: Sequence[Method], reps: int, count: int, nbytes: int,
                     log: Log) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {m.key: [] for m in methods}
    for rep in range(reps):
        for m in methods:
            with bed.using(m):
                out[m.key].append(bed.transfers(m, count, nbytes))
            log("  rep %d %-18s %.2f s %s" % (rep + 1, m.key, out[m.key][-1]["seconds"], out[m.key][-1]["share"]))
    return out


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the block, then its previous value, also
    on failure. Global, but only adds two clock reads per program run."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    previous = knob.read_text().strip()
    knob.write_text("1\n")
    try:
        yield
    finally:
        knob.write_text(previous + "\n")


def connect4_prog_id(cgroup: str) -> int:
    shown = json.loads(subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    ids = [p["id"] for p in shown if p["attach_type"] in ("cgroup_inet4_connect", "connect4")]
    if len(ids) != 1:
        raise LabError("expected one connect4 program on %s, found %s" % (cgroup, shown))
    return ids[0]


def prog_run_stats(prog_id: int) -> tuple[int, int]:
    info = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)], capture_output=True,
                                     text=True, check=True).stdout)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def measure_hook_ns(bed: Testbed, methods: Sequence[Method], protos: dict[str, int], log: Log,
                    rounds: int = HOOK_ROUNDS) -> dict:
    """Kernel BPF stats of the connect4 program: run_time_ns / run_cnt over
    *count* connects per protocol, the median of *rounds* rounds. Each round runs
    every method once, starting with another one each time, so a moment of load
    from the rest of the machine falls on all of them alike (one sample each
    varied by a factor of two). Stats are on only here: they cost time."""
    samples: dict[str, dict[str, list[float]]] = {m.key: {proto: [] for proto in protos} for m in methods}
    progs = dict((m.key, connect4_prog_id(m.cgroup)) for m in methods)
    with bpf_stats_enabled():
        for r in range(rounds):
            for m in list(methods[r % len(methods):]) + list(methods[:r % len(methods)]):
                for proto, count in protos.items():
                    t0, n0 = prog_run_stats(progs[m.key])
                    bed.connects_per_second(m, proto, count)
                    t1, n1 = prog_run_stats(progs[m.key])
                    if n1 - n0 < count:
                        raise LabError("%s: the program ran %d times for %d connects" % (m.key, n1 - n0, count))
                    samples[m.key][proto].append((t1 - t0) / (n1 - n0))
    out = dict((key, dict((proto, round(statistics.median(v), 1)) for proto, v in by_proto.items()))
               for key, by_proto in samples.items())
    for key, by_proto in samples.items():
        log("  hook %-18s %s ns per connect (median of %d; %s)" % (key, out[key], rounds, ", ".join(
            "%s %.0f-%.0f" % (proto, min(v), max(v)) for proto, v in by_proto.items())))
    return out
