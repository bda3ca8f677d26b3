"""make bench, provisioning part: the no-change run of playbooks/site.yml over SSH, the
run fleets make most (often on a schedule from AWX / Automation Controller).

  python -m benchmarks.fleet [--reps N] [--hosts 6]

Systemd containers on this machine's kernel (tests/lab/containers.py), each with its own
uplink lab, reached over SSH with pipelining from the fleet's management netns; fwmark
steering (the host kernel has no VRF), the program built on the controller. One host,
then --hosts hosts with forks equal to their number: the first run provisions, the next
--reps runs change nothing (asserted: changed=0 on every host). Measured: wall seconds of
each no-change run, the controller's CPU seconds per host (ansible-playbook and its
children, from getrusage), the tasks each host ran. Written to
benchmarks/results/fleet.{md,json}. Goals (issue 27): one host <= 5 s; six hosts with
forks 6 <= 2x one host.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.ansible_runner import ROOT, ansible_bin, ansible_env, play_recap
from tests.lab.containers import ContainerFleet, containers_available
from tests.lab.fleet import GuestSpec
from tests.lab.netlab import Uplink

RESULTS = ROOT / "benchmarks" / "results"
_TASK = re.compile(r"^TASK \[", re.M)


def log(line: str) -> None:
    print("%s %s" % (time.strftime("%H:%M:%S"), line), flush=True)


def host_vars(guest, build_cache: Path) -> dict:
    by_if = {u.interface: u for u in guest.uplinks}
    return {
        "balancer_manage_packages": False,  # no package mirror reachable from the containers
        "balancer_build_on": "controller",
        "balancer_build_cache": str(build_cache),
        "balancer_steering": "fwmark",
        "balancer_policy": "weighted",
        "balancer_cgroup": "multiwan",
        "balancer_uplinks": [
            {"name": "mobile", "interface": "usb0", "gateway": by_if["usb0"].gateway, "weight": 2},
            {"name": "wifi", "interface": "wlp1s0", "gateway": by_if["wlp1s0"].gateway, "table": 100,
             "mark": 0x100, "weight": 1}],
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(count: int, reps: int) -> dict:
    specs = [GuestSpec("host-%d" % i, [Uplink("usb0", 40), Uplink("wlp1s0", 20)]) for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="netlb-bench-fleet-") as tmp, \
            ContainerFleet(specs, name="nlbbf") as fleet:
        hosts = {g.name: {**fleet.host_vars(g), **host_vars(g, Path(tmp, "build"))} for g in fleet.guests}
        inventory = Path(tmp, "hosts.json")
        inventory.write_text(json.dumps({"multiwan": {"hosts": hosts}}))
        times = Path(tmp, "task_times.json")
        env = {**ansible_env(), **fleet.ansible_env(), "ANSIBLE_PIPELINING": "True", "ANSIBLE_FORKS": str(count),
               "ANSIBLE_CALLBACK_PLUGINS": str(Path(__file__).parent / "callback"),
               "ANSIBLE_CALLBACKS_ENABLED": "task_times", "NETLB_TASK_TIMES": str(times)}
        argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site.yml")]
        runs = []
        for rep in range(reps + 1):
            cpu, started = children_cpu(), time.monotonic()
            proc = fleet.controller_run(argv, env=env, timeout=1800)
            seconds, cpu = time.monotonic() - started, children_cpu() - cpu
            output = proc.stdout + proc.stderr
            recap = play_recap(output)
            if proc.returncode != 0 or len(recap) != count:
                raise RuntimeError("site.yml failed (rc %d):\n%s" % (proc.returncode, output[-4000:]))
            changed = sum(r["changed"] for r in recap.values())
            log("%d host(s), run %d: %.1f s, controller CPU %.1f s, changed %d"
                % (count, rep + 1, seconds, cpu, changed))
            runs.append({"seconds": seconds, "cpu": cpu, "changed": changed, "tasks": len(_TASK.findall(output)),
                         "ok_per_host": max(r["ok"] for r in recap.values()),
                         "task_times": json.loads(times.read_text()) if times.exists() else []})
    noop = runs[1:]
    if any(r["changed"] for r in noop):
        raise RuntimeError("a run after the first changed something: %s" % noop)
    return {"hosts": count, "first_seconds": runs[0]["seconds"],
            "noop_seconds": [round(r["seconds"], 2) for r in noop],
            "noop_median": statistics.median(r["seconds"] for r in noop),
            "cpu_per_host": statistics.median(r["cpu"] for r in noop) / count,
            "tasks": noop[-1]["tasks"], "ok_per_host": noop[-1]["ok_per_host"],
            "slowest": sorted(noop[-1]["task_times"], key=lambda t: -t[1])[:8], "task_times": noop[-1]["task_times"]}


def render(one: dict, many: dict) -> str:
    ratio = many["noop_median"] / one["noop_median"]
    lines = [
        "### Provisioning over SSH: the no-change run of playbooks/site.yml", "",
        "Systemd containers on this machine's kernel, SSH with pipelining, fwmark steering, program "
        "built on the controller; median of the no-change runs (changed=0 on every host).", "",
        "| hosts (forks) | first run | no-change run | controller CPU per host | tasks run per host |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in (one, many):
        lines.append("| %d (%d) | %.1f s | %.1f s (%s) | %.2f s | %d |" % (
            r["hosts"], r["hosts"], r["first_seconds"], r["noop_median"],
            ", ".join("%.1f" % s for s in r["noop_seconds"]), r["cpu_per_host"], r["ok_per_host"]))
    for r in (one, many):
        lines += ["", "Slowest tasks of the last no-change run, %d host(s): %s." % (
            r["hosts"], "; ".join("%s %.2f s" % (name, sec) for name, sec in r["slowest"]))]
    lines += ["", "Goals: one host <= 5 s (%s); %d hosts <= 2x one host (%.2fx, %s)." % (
        "met" if one["noop_median"] <= 5 else "missed", many["hosts"], ratio, "met" if ratio <= 2 else "missed"), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="no-change runs per fleet (default 3)")
    parser.add_argument("--hosts", type=int, default=6, help="hosts of the larger fleet (default 6)")
    parser.add_argument("--one", action="store_true", help="one host only (a quick look at the task times)")
    args = parser.parse_args(argv)
    problem = containers_available()
    if problem:
        sys.stderr.write("benchmarks.fleet: %s\n" % problem)
        return 1
    one = measure(1, args.reps)
    if args.one:
        print(json.dumps(one, indent=1))
        return 0
    many = measure(args.hosts, args.reps)
    text = render(one, many)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.md").write_text(text)
    (RESULTS / "fleet.json").write_text(json.dumps({"one": one, "many": many}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
