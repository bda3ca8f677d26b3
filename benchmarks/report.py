"""Turn the results of ``python -m benchmarks`` into a markdown report and a chart.

render_markdown(results) needs nothing beyond the standard library (a unit
test covers it); render_chart imports matplotlib (requirements-bench.txt).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.stats import Summary, integer_weights, median_ci, paired_ratios, summarize

LABELS = {
    "single": "(a) single uplink",
    "ecmp": "(b) kernel ECMP multipath",
    "nft": "(c) nftables, mwan3-style",
    "bpf_random": "(d) netlb fwmark, random",
    "bpf_weighted": "(d) netlb fwmark, weighted",
    "bpf_round_robin": "(d) netlb fwmark, round_robin",
    "vrf_weighted": "(e) netlb vrf, weighted (site.yml)",
    "vrf_random": "(e) netlb vrf, random",
    "vrf_round_robin": "(e) netlb vrf, round_robin",
    "bpf_empty": "baseline: an empty connect4 program",
    "bpf_decide": "baseline: netlb weighted, decide only (no setsockopt)",
}
TARGET_EFFICIENCY = 0.97
# The makespan targets: weighted's ideal / makespan (nominal rates) in
# every repetition, per lab; the rates name the lab when a results file lacks it.
TARGET_MAKESPAN = {"makespan": ([40.0, 20.0], 0.95), "makespan3": ([40.0, 20.0, 10.0], 0.90)}
TARGET_HOOK_NS = 300
TARGET_SCALING_NS = 150
SCALING_FLAT = 0.20  # "flat": the costliest uplink count at most 20% above the cheapest
TARGET_CONNECT_RATIO = 0.95


def label(key: str) -> str:
    return LABELS.get(key, key)


def _rates(rates: list[float]) -> str:
    return " + ".join("%g" % r for r in rates) + " Mbit/s"


def ceiling_sum(ceilings: dict[str, list[float]]) -> float:
    return sum(statistics.median(v) for v in ceilings.values())


def efficiency(samples: list[dict], capacity: float) -> Summary:
    return summarize([s["mbps"] / capacity for s in samples])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def efficiency_section(title: str, section: dict, single_from: dict | None = None) -> list[str]:
    """Two tables: received/nominal with spread, and received/measured ceiling."""
    rates, runs = section["rates"], dict(section["runs"])
    if single_from is not None and "single" not in runs:
        runs = {"single": single_from["runs"]["single"], **runs}
    nominal, ceiling = sum(rates), ceiling_sum(section["ceilings"])
    parallels = list(next(iter(runs.values())).keys())
    lines = ["### %s: %s" % (title, _rates(rates)), ""]
    lines.append("Measured ceiling (each link alone, iperf3 -P4): " + ", ".join(
        "%s %.1f" % (k, statistics.median(v)) for k, v in section["ceilings"].items())
        + " Mbit/s; together %.1f Mbit/s = %.1f%% of nominal." % (ceiling, 100 * ceiling / nominal))
    lines.append("")
    header = ["method"] + ["-P%s" % p for p in parallels]
    lines.append("Received / sum of nominal rates, median (min–max):")
    lines.append("")
    lines += _table(header, [[label(k)] + [efficiency(v[p], nominal).pct() for p in parallels]
                             for k, v in runs.items()])
    lines.append("Received / sum of measured ceilings, median:")
    lines.append("")
    lines += _table(header, [[label(k)] + ["%.1f%%" % (100 * efficiency(v[p], ceiling).median) for p in parallels]
                             for k, v in runs.items()])
    return lines


def makespan_ratios(runs: list[dict], ideal: float) -> Summary:
    return summarize([ideal / r["seconds"] for r in runs])


def makespan_ideal(mk: dict, rate_mbit: float) -> float:
    """Seconds all transfers take at *rate_mbit* in total (every link busy until the end)."""
    return mk["bytes_each"] * mk["transfers"] * 8 / (rate_mbit * 1e6)


def _median_share(runs: list[dict]) -> str:
    links = list(runs[0]["share"])
    return " / ".join("%.0f%%" % (100 * statistics.median(r["share"][k] for r in runs)) for k in links)


def _weights(rates: list[float]) -> str:
    return ":".join(map(str, integer_weights(rates)))


def _target_line(t: dict) -> list[str]:
    if t["met"] is None:
        outcome = "not measured"
    else:
        outcome = "met" if t["met"] else "**not met** (%s)" % t["why"]
    return ["Target: %s — %s." % (t["target"], outcome), ""]


def makespan_section(mk: dict, ceilings: dict, target: dict | None = None) -> list[str]:
    ideal_nominal = makespan_ideal(mk, sum(mk["rates"]))
    ideal_ceiling = makespan_ideal(mk, ceiling_sum(ceilings))
    links = " / ".join(next(iter(mk["runs"].values()))[0]["share"])
    weights = integer_weights(mk["rates"])
    lines = ["### Makespan: %d transfers of %.2f MB started together over %s" % (
        mk["transfers"], mk["bytes_each"] / 1e6, _rates(mk["rates"])), "",
        "Ideal: %.2f s at the nominal rates, %.2f s at the measured ceilings. Ratio = ideal / measured time "
        "per run, median (min–max) over the repetitions (1.0 = every link busy until the end)." % (
            ideal_nominal, ideal_ceiling)]
    if mk["transfers"] % sum(weights) == 0:
        lines.append("%d transfers are a multiple of the weight sum (%s): a split exactly in the ratio of the "
                     "rates exists (%s)." % (mk["transfers"], _weights(mk["rates"]), "/".join(
                         str(w * mk["transfers"] // sum(weights)) for w in weights)))
    lines.append("")
    rows = [[label(k), makespan_ratios(v, ideal_nominal).num(), "%.2f" % makespan_ratios(v, ideal_ceiling).median,
             summarize([r["seconds"] for r in v]).num(2, " s"), _median_share(v)] for k, v in mk["runs"].items()]
    lines += _table(["method", "ratio (nominal)", "ratio (ceiling)", "makespan", "bytes sent on " + links], rows)
    if target:
        lines += _target_line(target)
    return lines


def makespan_target(key: str, mk: dict | None, ceilings: dict | None) -> dict:
    """weighted's makespan ratio (nominal) against the issue's goal, in every repetition."""
    default_rates, goal = TARGET_MAKESPAN[key]
    rates = mk["rates"] if mk else default_rates
    target = "weighted makespan >= %.2f of the ideal in every repetition (%s, weights %s)" % (
        goal, _rates(rates), _weights(rates))
    if not mk or "bpf_weighted" not in mk["runs"] or not ceilings:
        return {"target": target, "measured": "not measured", "met": None, "why": ""}
    runs = mk["runs"]["bpf_weighted"]
    ratio = makespan_ratios(runs, makespan_ideal(mk, sum(rates)))
    of_ceiling = makespan_ratios(runs, makespan_ideal(mk, ceiling_sum(ceilings)))
    met = ratio.low >= goal
    why = []
    reachable = ceiling_sum(ceilings) / sum(rates)
    if reachable < goal:
        why.append("the links alone carry only %.1f%% of their nominal rate: even an exact split stays below "
                   "%.2f" % (100 * reachable, goal))
    slowest = max(runs, key=lambda r: r["seconds"])
    weights = integer_weights(rates)
    asked = [w / sum(weights) for w in weights]
    split = " / ".join("%.0f%%" % (100 * v) for v in slowest["share"].values())
    if all(abs(v - a) < 0.02 for v, a in zip(slowest["share"].values(), asked)):
        why.append("the slowest run (%.2f) split the bytes as the weights ask (%s on %s): its time was lost "
                   "elsewhere than in the split" % (
                       makespan_ideal(mk, sum(rates)) / slowest["seconds"], split, " / ".join(slowest["share"])))
    else:
        why.append("the slowest run (%.2f) sent %s of the bytes on %s, the weights ask for %s" % (
            makespan_ideal(mk, sum(rates)) / slowest["seconds"], split, " / ".join(slowest["share"]),
            " / ".join("%.0f%%" % (100 * a) for a in asked)))
    return {"target": target, "measured": "%s over %d runs, lowest %.2f (median %.2f against the measured "
                                          "ceiling)" % (ratio.num(), ratio.n, ratio.low, of_ceiling.median),
            "met": met, "why": "" if met else "; ".join(why)}


CONNECT_GROUPS = {
    "udp": "udp, alternating cgroups",
    "tcp": "tcp, alternating cgroups",
    "tcp_nft": "tcp, nftables rounds",
}


def connect_ratios(connect: dict, group: str, key: str, clock: str = "cpu") -> list[float]:
    """Per-block (or per-round) ratios to the run without hook or rules next to it."""
    return paired_ratios(connect[clock][group][key], connect[clock][group]["single"])


def ratio_cell(ratios: list[float]) -> str:
    """'98.1% [97.5–98.7]': median ratio and the 95% confidence interval of that median."""
    low, high = median_ci(ratios)
    return "%.1f%% [%.1f–%.1f]" % (100 * statistics.median(ratios), 100 * low, 100 * high)


def connect_section(connect: dict, hook_ns: dict, params: dict) -> list[str]:
    lines = ["### Per-connect cost", "",
             "Kernel BPF stats of the connect4 program (run_time_ns / run_cnt; stats enabled only for this):", ""]
    protos = list(next(iter(hook_ns.values())).keys())
    lines += _table(["program"] + ["ns per %s connect" % p for p in protos],
                    [[label(k)] + ["%.0f" % v[p] for p in protos] for k, v in hook_ns.items()])
    if "bpf_empty" in hook_ns and "bpf_weighted" in hook_ns:
        own = dict((p, hook_ns["bpf_weighted"][p] - hook_ns["bpf_empty"][p]) for p in protos)
        lines += ["The balancer's own share (weighted over the empty program): %s; of it, deciding alone "
                  "(no setsockopt): %s." % (
                      ", ".join("%.0f ns per %s connect" % (own[p], p) for p in protos),
                      ", ".join("%.0f ns" % (hook_ns["bpf_decide"][p] - hook_ns["bpf_empty"][p]) for p in protos)
                      if "bpf_decide" in hook_ns else "not measured"), ""]
    lines += [
        "connect() per second of one process (benchmarks/connect_rate.c). **udp**: socket + connect + close, "
        "no packet sent (the hook's largest share of the work); **tcp**: a handshake through the lab, closed with "
        "RST. The program acts only in its cgroup, so one process moves between cgroups every %d udp / %d tcp "
        "connects, %d blocks each. nftables acts on the whole namespace, so its ruleset is loaded and removed for "
        "%d rounds of %d connects." % (params["udp_count"], params["tcp_count"], params["connect_blocks"],
                                      params["nft_rounds"], params["nft_count"]), "",
        "Two clocks: connects per second of the process's **CPU time** (user + system; what a connect costs, "
        "and robust on a shared machine) and per second of **elapsed time** (what an application sees on a "
        "quiet machine; here stretched by other processes' time slices). \"vs none\" is the median ratio to "
        "the neighbouring block or round without hook or rules, [95% confidence interval of that median]; "
        "\"extra\" is 1/rate − 1/rate(none) from the medians.", ""]
    rows = []
    for group, title in CONNECT_GROUPS.items():
        cpu, wall = connect["cpu"].get(group), connect["wall"].get(group)
        if not cpu:
            continue
        for key in cpu:
            rate_cpu, rate_wall = statistics.median(cpu[key]), statistics.median(wall[key])
            if key == "single":
                rows.append([title, "none", "%.0f" % rate_cpu, "—", "—", "%.0f" % rate_wall, "—"])
                continue
            extra_ns = (1 / rate_cpu - 1 / statistics.median(cpu["single"])) * 1e9
            rows.append([title, label(key), "%.0f" % rate_cpu, ratio_cell(connect_ratios(connect, group, key)),
                         "%+.0f ns" % extra_ns, "%.0f" % rate_wall,
                         ratio_cell(connect_ratios(connect, group, key, "wall"))])
    lines += _table(["measurement", "condition", "per CPU-second", "vs none (CPU)", "extra (CPU)",
                     "per elapsed second", "vs none (elapsed)"], rows)
    return lines


def hook_scaling_target(scaling: dict | None) -> dict:
    target = "hook <= %d ns per udp connect and flat from 2 to 16 uplinks (the costliest at most %d%% above " \
             "the cheapest)" % (TARGET_SCALING_NS, 100 * SCALING_FLAT)
    udp = (scaling or {}).get("udp")
    if not udp:
        return {"target": target, "measured": "not measured", "met": None, "why": ""}
    costliest, cheapest = max(udp, key=udp.get), min(udp, key=udp.get)
    rise = udp[costliest] / udp[cheapest] - 1
    why = []
    if udp[costliest] > TARGET_SCALING_NS:
        why.append("%.0f ns with %s uplinks" % (udp[costliest], costliest))
    if rise > SCALING_FLAT:
        why.append("not flat: %s uplinks cost %+.0f%% against %s" % (costliest, 100 * rise, cheapest))
    return {"target": target, "measured": "%s ns; the costliest (%s uplinks) %+.0f%% against the cheapest (%s)" % (
        ", ".join("%s: %.0f" % kv for kv in udp.items()), costliest, 100 * rise, cheapest),
        "met": not why, "why": "; ".join(why)}


def hook_scaling_section(scaling: dict | None, params: dict) -> list[str]:
    lines = ["### Hook cost vs number of uplinks", ""]
    if not scaling:
        return lines + ["Not measured in this run.", ""]
    counts = list(next(iter(scaling.values())))
    count = params.get("hook_count")
    lines += ["The weighted program built for n uplinks (weight 1 each, every uplink marked, so every connect "
              "calls the setsockopt), kernel BPF stats%s: it reads a precomputed rotation, one lookup whatever "
              "n, so its cost should not grow with n." % (
                  " over %d connects each" % count if count else ""), ""]
    lines += _table(["ns per connect"] + ["%s uplinks" % n for n in counts],
                    [["(d) netlb fwmark, weighted, %s" % proto] + ["%.0f" % by_n[n] for n in counts]
                     for proto, by_n in scaling.items()])
    return lines + _target_line(hook_scaling_target(scaling))


def provisioning_section(prov: dict) -> list[str]:
    reps = len(prov["first"])
    lines = ["### Provisioning: playbooks/site.yml on one lab host (VM guest, ansible_connection local)", "",
             "A first run on a blank host (empty build cache: the program is compiled), then a second run%s. "
             "%s tasks per run. The emulated guest runs Ansible's Python several times slower than the host: these "
             "times are many times what a real host takes; what they show is the ratio of first to second run." % (
                 "; repeated after `balancer_state=absent`" if reps > 1 else
                 " — once: a run takes minutes in this kernel, three repetitions do not fit in `make bench`",
                 prov.get("tasks")), ""]
    lines += _table(["run", "wall time", "changed"], [
        ["first", summarize(prov["first"]).num(1, " s"), ", ".join(map(str, prov["first_changed"]))],
        ["second", summarize(prov["second"]).num(1, " s"), ", ".join(map(str, prov["second_changed"]))]])
    return lines


def vm_section(vm: dict, host_ceiling_share: float | None = None) -> list[str]:
    lines = ["## (e) VRF steering in the VM lab kernel (Debian's, under QEMU) %s" % vm.get("kernel", ""), "",
             "Another kernel (Debian's linux-image under QEMU, emulated CPUs): compare these rows "
             "with each other, not with the host's.", ""]
    if "ceilings" in vm and host_ceiling_share:
        share = ceiling_sum(vm["ceilings"]) / sum(vm["rates"])
        if share < host_ceiling_share - 0.03:
            lines += ["The guest was short of CPU in this run: its links alone carried %.1f%% of their nominal "
                      "rate, against %.1f%% on the host, so its throughput is bound by the emulation, not by the "
                      "links." % (100 * share, 100 * host_ceiling_share), ""]
    if "provisioning" in vm:
        lines += provisioning_section(vm["provisioning"])
    if "efficiency" in vm:
        lines += efficiency_section("Aggregate efficiency (VM)", {"rates": vm["rates"], "ceilings": vm["ceilings"],
                                                                   "runs": vm["efficiency"]})
    if "makespan" in vm:
        mk = {"rates": vm["rates"], "transfers": vm["transfers"], "bytes_each": vm["bytes_each"],
              "runs": vm["makespan"]}
        lines += makespan_section(mk, vm["ceilings"])
    lines += ["No per-connect cost in this kernel: it leaves the BPF stats of cgroup programs at zero, counts "
              "thread CPU time in ticks, and its elapsed time follows the host's load.", ""]
    if "error" in vm:
        lines += ["**The guest stopped with an error** (rows above are what it measured before):", "", "```",
                  vm["error"].strip()[-3000:], "```", ""]
    return lines


FAILOVER_LIMITS = {"carrier": 0.3, "silent": 1.5}
FAILOVER_RECOVERY = 3.0
MWAN3 = {"carrier": "15 s", "silent": "15 s", "recovery": "40 s"}  # every 5 s, down after 3, up after 8


def failover_targets(failover: dict | None) -> list[dict]:
    if not failover:
        return [{"target": "failover: detection and recovery", "measured": "not measured in this run",
                 "met": None, "why": ""}]
    out = []
    for how, limit in FAILOVER_LIMITS.items():
        runs = failover[how]
        detection = summarize([r["detection"] for r in runs])
        out.append({"target": "%s: no new connect to the uplink after <= %.1f s" % (how, limit),
                    "measured": "%s over %d" % (detection.num(3, " s"), len(runs)),
                    "met": max(r["detection"] for r in runs) <= limit, "why": "in at least one repetition"})
    recoveries = [r["recovery"] for how in FAILOVER_LIMITS for r in failover[how]]
    met = all(r is not None and r <= FAILOVER_RECOVERY for r in recoveries)
    known = [r for r in recoveries if r is not None]
    out.append({"target": "recovery: connects again <= %.0f s after the repair" % FAILOVER_RECOVERY,
                "measured": summarize(known).num(3, " s") if known else "never", "met": met,
                "why": "in at least one repetition"})
    return out


def mptcp_section(mptcp: dict | None, measured: dict | None = None) -> list[str]:
    lines = ["## One connection over every uplink (MPTCP, host kernel)", ""]
    if not mptcp:
        return lines + ["Not measured in this run.", ""]
    ceilings = mptcp["ceilings"]
    total = sum(ceilings.values())
    lines += ["Links shaped to %s Mbit/s (measured ceilings %s, sum %.1f); one connection for %g s, rate at the "
              "receiver; makespan: one transfer of %d bytes (what both links carry together in %.1f s) until the "
              "receiver has all of it. Medians%s." % (
                  " + ".join("%g" % r for r in mptcp["rates"]), " + ".join("%.1f" % c for c in ceilings.values()),
                  total, mptcp["seconds"], mptcp["bytes"], mptcp["bytes"] * 8 / 1e6 / total,
                  " (measured on its own at commit %s, `make bench BENCH_ARGS=--only-mptcp`)" % measured["commit"]
                  if measured else ""), ""]
    rows = [[r["title"], "%.1f Mbit/s" % r["mbit"], "%.0f%%" % (100 * r["mbit"] / total), "%.2f s" % r["makespan"],
             str(r["subflows_max"]), "yes" if r["fallback"] else "no" if "MPTCP" in r["title"] else "-",
             str(len(r["errors"]))]
            for r in mptcp["rows"].values()]
    lines += _table(["client", "rate", "of the ceilings' sum", "makespan", "extra subflows", "fell back",
                     "errors"], rows)
    upgrade = mptcp.get("upgrade")
    if upgrade:
        lines += ["`upgrade` in the VM lab (%s, links %.1f + %.1f Mbit/s measured): an unmodified client in the "
                  "balanced cgroup %.1f Mbit/s (%.0f%%, %d extra subflows), one outside it %.1f; to a plain TCP "
                  "server %s." % (upgrade["kernel"], upgrade["ceilings"][0], upgrade["ceilings"][1],
                                  upgrade["upgraded"], 100 * upgrade["upgraded"] / sum(upgrade["ceilings"]),
                                  upgrade["subflows_max"], upgrade["outside"],
                                  "it fell back and worked" if upgrade["plain_server_ok"] else "it FAILED"), ""]
    else:
        lines += ["`upgrade` (VM lab, Debian 6.12) not measured in this run.", ""]
    return lines


def failover_section(failover: dict | None, measured: dict | None = None) -> list[str]:
    lines = ["## Failover (health tracker, host kernel, fwmark steering)", ""]
    if not failover:
        return lines + ["Not measured in this run.", ""]
    reps = len(failover["carrier"])
    lines += ["The tracker with its default settings (ICMP to each gateway every 250 ms, timeout 500 ms, down "
              "after 3, up after 4) while 200 TCP connects/s come from the balanced cgroup; wlp1s0 broken from "
              "the internet side for 2.5 s, %d repetitions of each fault%s. Detection: the last connect the "
              "program still gave the broken uplink after the fault (0: none did; one connect every 5 ms). Recovery: the first connect it gets after "
              "the repair. mwan3's typical settings (a ping every 5 s, down after 3 misses, up after 8) take "
              "about 15 s and 40 s." % (reps, " (measured on its own at commit %s)" % measured["commit"]
                                       if measured else ""), ""]
    rows = []
    for how in ("carrier", "silent"):
        runs = failover[how]
        rec = [r["recovery"] for r in runs if r["recovery"] is not None]
        rows.append([how, summarize([r["detection"] for r in runs]).num(3, " s"),
                     summarize(rec).num(3, " s") if rec else "never",
                     str(sum(r["failed_after_detection"] for r in runs)), MWAN3[how], MWAN3["recovery"]])
    lines += _table(["fault", "detection", "recovery", "failed connects after detection", "mwan3 detection",
                     "mwan3 recovery"], rows)
    return lines


def targets(results: dict) -> list[dict]:
    """Each target: what, measured, met, and why when missed."""
    out = []
    for lab in ("two", "three"):
        section = results.get(lab)
        if not section:
            continue
        nominal, ceiling = sum(section["rates"]), ceiling_sum(section["ceilings"])
        runs = section["runs"]["bpf_weighted"]["10"]
        eff, of_ceiling = efficiency(runs, nominal), efficiency(runs, ceiling)
        measured = "%s of nominal, %.1f%% of the measured ceiling" % (eff.pct(), 100 * of_ceiling.median)
        if "bpf_round_robin" in section["runs"]:
            rr = section["runs"]["bpf_round_robin"]["10"]
            measured += "; round_robin %.1f%% / %.1f%%" % (100 * efficiency(rr, nominal).median,
                                                        100 * efficiency(rr, ceiling).median)
        why = ["the links alone carry only %.1f%% of their nominal rate as TCP goodput (tbf counts whole "
               "Ethernet frames; 1448 payload bytes per 1514-byte frame): 97%% of nominal is out of reach for "
               "any method" % (100 * ceiling / nominal)]
        empty = sum(1 for r in runs if min(r["share"].values()) < 0.01)
        if empty:
            why.append("in %d of %d runs an uplink carried none of the 10 streams, and that run got only the "
                       "other links' rate" % (empty, len(runs)))
        met = eff.median >= TARGET_EFFICIENCY
        out.append({"target": "-P10 efficiency >= 97%% (%s, netlb weighted)" % _rates(section["rates"]),
                    "measured": measured, "met": met, "why": "" if met else "; ".join(why)})
    for key, lab in (("makespan", "two"), ("makespan3", "three")):
        out.append(makespan_target(key, results.get(key), results.get(lab, {}).get("ceilings")))
    hook = results.get("hook_ns")
    if hook:
        worst_key = max(hook, key=lambda k: max(hook[k].values()))
        worst = max(hook[worst_key].values())
        out.append({"target": "hook <= 300 ns per connect", "measured": "%.0f ns at most (%s); weighted %s" % (
            worst, label(worst_key), ", ".join("%s %.0f ns" % kv for kv in hook["bpf_weighted"].items())),
            "met": worst <= TARGET_HOOK_NS, "why": "" if worst <= TARGET_HOOK_NS else "see the per-connect table"})
    out.append(hook_scaling_target(results.get("hook_scaling")))
    out += failover_targets(results.get("failover"))
    connect = results.get("connect")
    if connect:
        udp_key = min((k for k in connect["cpu"]["udp"] if k != "single"),
                      key=lambda k: statistics.median(connect_ratios(connect, "udp", k)))
        udp = connect_ratios(connect, "udp", udp_key)
        tcp = connect_ratios(connect, "tcp", "bpf_weighted")
        met = min(statistics.median(udp), statistics.median(tcp)) >= TARGET_CONNECT_RATIO
        out.append({"target": "connect()/s with the hook >= 95% of without",
                    "measured": "per CPU-second: udp %s (%s, the lowest), tcp %s (weighted); elapsed-time "
                                "ratios in the per-connect table" % (ratio_cell(udp), label(udp_key),
                                                                     ratio_cell(tcp)),
                    "met": met, "why": "" if met else "see the per-connect table"})
    return out


def notes(results: dict) -> list[str]:
    out = []
    cores = results["machine"]["cores"]
    samples = results.get("load", {})
    busiest = max((s["loadavg"][0] for s in samples.values()), default=0)
    others = max((s["vm_processes"] for s in samples.values()), default=0)
    if busiest > cores / 2 or others:
        out.append("Shared machine: %d cores, 1-minute load average up to %.1f, up to %d QEMU guests running "
                   "(this run's own VM guest included). Throughput is shaped by tbf and barely affected; "
                   "connect() rates are CPU-bound, which is why they are compared block by block on the CPU clock; "
                   "the VM guest is slowed down as a whole (provisioning times above all)." % (
                       cores, busiest, others))
    if results["params"].get("quick"):
        out.append("Quick run (--quick): one repetition, short runs. Not for conclusions.")
    return out


def render_markdown(results: dict, chart: str | None = None) -> str:
    m, p = results["machine"], results["params"]
    lines = ["# netlb.multiwan benchmarks", "",
             "%s, commit %s, `make bench`%s in %.0f s." % (results["started"], m["commit"],
                                                           " --quick" if p.get("quick") else "", results["seconds"]),
             "Machine: %s, %d cores, %.1f GiB, %s, kernel %s." % (m["cpu"], m["cores"], m["memory_gib"], m["os"],
                                                                  m["kernel"]), ""]
    lines += ["Medians over %d repetitions (makespan %d), spread = min–max; iperf3 -t %g; methods run in turn "
              "within each repetition. How to read this: see the Benchmarks section of the README." % (
                  p["reps"], p["makespan_reps"], p["seconds"]), ""]
    for note in notes(results):
        lines += ["> " + note, ""]
    if chart:
        lines += ["![benchmark chart](%s)" % chart, ""]
    lines += ["## Targets", ""]
    lines += _table(["target", "measured", "met"], [
        [t["target"], t["measured"] + (" — " + t["why"] if t["met"] is False else ""),
         {True: "yes", False: "**no**", None: "not measured"}[t["met"]]] for t in targets(results)])
    lines += ["## Aggregate efficiency (host kernel %s, fwmark steering)" % m["kernel"], ""]
    if "two" in results:
        lines += efficiency_section("Two uplinks", results["two"])
    if "three" in results:
        lines += efficiency_section("Three uplinks", results["three"], single_from=results.get("two"))
        lines += ["(a) with three uplinks is the same 40 Mbit/s link, measured once in the two-uplink lab.", ""]
    for key, lab, title in (("makespan", "two", "two uplinks"), ("makespan3", "three", "three uplinks")):
        target = makespan_target(key, results.get(key), results.get(lab, {}).get("ceilings"))
        if target["met"] is None:
            lines += ["### Makespan: %s" % title, "", "Not measured in this run.", ""] + _target_line(target)
        else:
            lines += makespan_section(results[key], results[lab]["ceilings"], target)
    if "connect" in results:
        lines += connect_section(results["connect"], results["hook_ns"], p)
        if results.get("hook_measured"):
            lines += ["(The hook's run times above and against the number of uplinks below: measured on their own "
                      "at commit %s, `make bench BENCH_ARGS=--only-hook`.)" % results["hook_measured"]["commit"], ""]
    lines += hook_scaling_section(results.get("hook_scaling"), p)
    lines += failover_section(results.get("failover"), results.get("failover_measured"))
    lines += mptcp_section(results.get("mptcp"), results.get("mptcp_measured"))
    if "vm" in results:
        two = results.get("two")
        lines += vm_section(results["vm"], ceiling_sum(two["ceilings"]) / sum(two["rates"]) if two else None)
    lines += ["## Methods", "",
              "- (a) everything through uplink 0 (the main table's default route).",
              "- (b) the main default route as a multipath route, nexthop weights in the ratio of the link rates, "
              "`net.ipv4.fib_multipath_hash_policy=1` (the hash includes ports).",
              "- (c) as mwan3 balances, in nftables: a connection's first packet gets a mark by weighted "
              "`numgen random`, kept in its conntrack mark and restored on later packets; `ip rule fwmark` picks "
              "the uplink's table; a route-type output chain re-routes on the mark and masquerade rewrites the "
              "source address chosen before it.",
              "- (d) this collection's program at cgroup connect4/connect6, fwmark steering (SO_MARK) into the "
              "same tables, attached by `netlb.multiwan.cgroup_bpf_attach` with its maps shared and converged "
              "(weights, policy and the selection table are written by the control plane, as the role's "
              "`balancer_maps` does). `weighted` is a deterministic smooth weighted rotation in the rate ratio "
              "(2:1 exactly over every 3 sequential connects, 4:2:1 over every 7), `random` a weighted random "
              "draw per connection, `round_robin` the rotation with equal weights; the program reads a "
              "precomputed rotation, one lookup whatever the number of uplinks. iperf3 opens a control "
              "connection before its streams, and it is balanced too: with a rotation a -P1 stream lands on the "
              "uplink after the control connection's.",
              "- (e) the same program with VRF steering (SO_BINDTODEVICE), provisioned by `playbooks/site.yml`, "
              "in the VM lab kernel (Debian's, under QEMU) (the host kernel has no VRF).", ""]
    return "\n".join(lines)


def render_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("two", "efficiency, two uplinks"), ("three", "efficiency, three uplinks")]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    for ax, (key, title) in zip(axes[0][:2], panels):
        section = results.get(key)
        if not section:
            ax.set_visible(False)
            continue
        runs = dict(section["runs"])
        if "single" not in runs and "two" in results:
            runs = {"single": results["two"]["runs"]["single"], **runs}
        _efficiency_plot(ax, runs, sum(section["rates"]), ceiling_sum(section["ceilings"]),
                         "%s (%s)" % (title, _rates(section["rates"])))
    vm = results.get("vm", {})
    if "efficiency" in vm:
        _efficiency_plot(axes[0][2], vm["efficiency"], sum(vm["rates"]), ceiling_sum(vm["ceilings"]),
                         "(e) VM kernel, VRF steering (%s)" % _rates(vm["rates"]))
    else:
        axes[0][2].set_visible(False)

    ax = axes[1][0]
    labs = [(key, results[key], colour) for key, colour in (("makespan", "tab:blue"), ("makespan3", "tab:orange"))
            if key in results]
    if labs:
        keys = list(dict.fromkeys(k for _, mk, _ in labs for k in mk["runs"]))
        width = 0.8 / len(labs)
        for j, (key, mk, colour) in enumerate(labs):
            ideal = makespan_ideal(mk, sum(mk["rates"]))
            xs = [i + (j - (len(labs) - 1) / 2) * width for i, k in enumerate(keys) if k in mk["runs"]]
            stats = [makespan_ratios(mk["runs"][k], ideal) for k in keys if k in mk["runs"]]
            ax.bar(xs, [s.median for s in stats], width,
                   yerr=[[s.median - s.low for s in stats], [s.high - s.median for s in stats]], capsize=3,
                   color=colour, label="%d transfers, %s" % (mk["transfers"], _rates(mk["rates"])))
            ax.axhline(TARGET_MAKESPAN[key][1], color=colour, linestyle="--", linewidth=1,
                       label="target %.2f (every run)" % TARGET_MAKESPAN[key][1])
            lab = results.get("three" if key == "makespan3" else "two")
            if lab:
                ax.axhline(ceiling_sum(lab["ceilings"]) / sum(mk["rates"]), color=colour, linestyle=":",
                           linewidth=1, label="measured ceiling (%d links)" % len(mk["rates"]))
        ax.set_xticks(range(len(keys)), [label(k) for k in keys], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.4)  # room for the legend above the bars
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_title("makespan ratio, equal transfers (ideal / measured)")
        ax.legend(fontsize=7, loc="upper center", ncol=2)

    ax = axes[1][1]
    connect = results.get("connect")
    if connect:
        medians, cis, names = [], [], []
        for group in CONNECT_GROUPS:
            for key in connect["cpu"].get(group, {}):
                if key != "single":
                    ratios = connect_ratios(connect, group, key)
                    medians.append(statistics.median(ratios))
                    cis.append(median_ci(ratios))
                    names.append("%s: %s" % (group.replace("_nft", ""), label(key)))
        ax.barh(range(len(medians)), medians, xerr=[[m - c[0] for m, c in zip(medians, cis)],
                                                    [c[1] - m for m, c in zip(medians, cis)]],
                capsize=4, color="tab:green")
        ax.axvline(TARGET_CONNECT_RATIO, color="tab:red", linestyle="--", label="target 95%")
        ax.set_yticks(range(len(medians)), names, fontsize=8)
        ax.set_xlim(0.5, 1.1)
        ax.set_title("connects per CPU-second relative to none (median, 95% CI)")
        ax.legend(fontsize=8)
        hook = results.get("hook_ns", {})
        if hook:
            ax.text(0.02, -0.32, "BPF stats, ns per connect: " + "; ".join(
                "%s %s" % (k.replace("bpf_", ""), "/".join("%.0f" % x for x in v.values())) for k, v in hook.items())
                + " (udp/tcp)", transform=ax.transAxes, fontsize=8)
        scaling = results.get("hook_scaling", {}).get("udp")
        if scaling:
            ax.text(0.02, -0.40, "weighted, ns per udp connect by number of uplinks: " + ", ".join(
                "%s: %.0f" % kv for kv in scaling.items()), transform=ax.transAxes, fontsize=8)

    ax = axes[1][2]
    prov = vm.get("provisioning")
    if prov:
        first, second = summarize(prov["first"]), summarize(prov["second"])
        ax.bar([0, 1], [first.median, second.median],
               yerr=[[first.median - first.low, second.median - second.low],
                     [first.high - first.median, second.high - second.median]], capsize=4, color="tab:purple")
        ax.set_xticks([0, 1], ["first run", "second run"])
        ax.set_ylabel("seconds")
        ax.set_title("site.yml wall time (VM guest)")
    else:
        ax.set_visible(False)

    m = results["machine"]
    fig.suptitle("netlb.multiwan benchmarks — %s — %s, %d cores, kernel %s" % (
        results["started"][:10], m["cpu"], m["cores"], m["kernel"]), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _efficiency_plot(ax, runs: dict, nominal: float, ceiling: float, title: str) -> None:
    for key, by_p in runs.items():
        ps = [int(p) for p in by_p]
        stats = [efficiency(by_p[p], nominal) for p in by_p]
        ax.errorbar(ps, [100 * s.median for s in stats],
                    yerr=[[100 * (s.median - s.low) for s in stats], [100 * (s.high - s.median) for s in stats]],
                    marker="o", capsize=3, label=label(key))
    ax.axhline(100 * TARGET_EFFICIENCY, color="tab:red", linestyle="--", linewidth=1, label="target 97%")
    ax.axhline(100 * ceiling / nominal, color="grey", linestyle=":", label="measured ceiling")
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 4, 10], ["1", "2", "4", "10"])
    ax.set_xlabel("iperf3 -P")
    ax.set_ylabel("% of the sum of nominal rates")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
