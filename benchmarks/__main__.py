"""make bench: every balancing method in turn on the same labs, in one run.

  python -m benchmarks            full run (<15 min): benchmarks/results/latest.{md,json,png}
  python -m benchmarks --quick    one repetition, short runs: benchmarks/results/quick/
  python -m benchmarks --no-vm    leave out the VM part (Debian's kernel under QEMU)
  python -m benchmarks --only-mptcp   the MPTCP section alone, into the existing latest.json

Order: the VM guest (provisioning, VRF steering) boots first and runs on its
own while the host measures (two labs: three uplinks, then two; makespan on
both, connect() cost and the hook's cost per number of uplinks on the second).
The guest is the longer part; the host's connect() rates, which are CPU-bound,
are compared on the CPU clock, block by block, so that load next to them
cancels out.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.failover import measure_failover
from benchmarks.host import host_testbed, measure_connect_cost, measure_hook_scaling
from benchmarks.mptcp import measure_mptcp, measure_upgrade_in_vm
from benchmarks.report import render_chart, render_markdown
from benchmarks.stats import integer_weights
from benchmarks.testbed import (build_connect_rate, measure_ceilings, measure_efficiency, measure_hook_ns,
                                measure_makespan)
from benchmarks.vm_guest import RESULT_MARKER
from tests.lab.vm import vm_available

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TWO_LINKS = [40.0, 20.0]
THREE_LINKS = [40.0, 20.0, 10.0]
# Makespan transfers: a multiple of the weight sum, so that a split exactly in
# the weights' ratio exists (2:1 -> 8/4; 4:2:1 -> 8/4/2, where 12 would leave
# even the best integer split at 0.857 of the ideal).
TRANSFERS = 12
TRANSFERS_THREE = 2 * sum(integer_weights(THREE_LINKS))

PARAMS = {
    "full": {"reps": 3, "seconds": 2, "parallels": [1, 2, 4, 10], "makespan_reps": 5, "ideal_seconds": 4,
             "connect_blocks": 150, "udp_count": 2000, "tcp_count": 200, "nft_rounds": 30, "nft_count": 1000,
             "hook_count": 20000, "hook_count_tcp": 2000,
             "provision_reps": 1, "vm_makespan_reps": 3, "failover_reps": 5, "mptcp_reps": 3, "mptcp_seconds": 10},
    "quick": {"reps": 1, "seconds": 1, "parallels": [1, 2, 4, 10], "makespan_reps": 1, "ideal_seconds": 1.5,
              "connect_blocks": 20, "udp_count": 1000, "tcp_count": 100, "nft_rounds": 4, "nft_count": 300,
              "hook_count": 5000, "hook_count_tcp": 500,
              "provision_reps": 1, "vm_makespan_reps": 1, "failover_reps": 1, "mptcp_reps": 1, "mptcp_seconds": 4},
}


def log(line: str) -> None:
    print("%s %s" % (time.strftime("%H:%M:%S"), line), flush=True)


def transfer_bytes(rates: list[float], ideal_seconds: float, transfers: int = TRANSFERS) -> int:
    """Bytes per transfer so that *transfers* of them take ideal_seconds at the nominal rates."""
    return int(sum(rates) * 1e6 / 8 * ideal_seconds / transfers)


def _vm_guests() -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if Path("/proc", pid, "comm").read_text().strip().startswith("qemu-system"):
                count += 1
    return count


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    os_name = next((ln.split("=", 1)[1].strip('"') for ln in Path("/etc/os-release").read_text().splitlines()
                    if ln.startswith("PRETTY_NAME=")), "")
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "os": os_name,
            "kernel": platform.release(), "commit": git.stdout.strip()}


def load_sample() -> dict:
    return {"loadavg": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
            "vm_processes": _vm_guests()}


@contextlib.contextmanager
def vm_guest(params: dict, workdir: str) -> Iterator[callable]:
    """Boot the guest in the background; yield a function that waits for its facts."""
    problem = vm_available()
    if problem:
        raise RuntimeError(problem)
    script = ".venv/bin/python -m benchmarks.vm_guest --params " + shlex.quote(json.dumps(params))
    out_path = Path(workdir, "vm-guest.log")
    with open(out_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.lab.vm", "--no-stream", "--timeout", "1200",
                                 "--", script], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)

    def wait() -> dict:
        proc.wait()
        text = out_path.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_MARKER)]
        guest_log = "\n".join(ln for ln in text.splitlines() if not ln.startswith(RESULT_MARKER)) + "\n"
        if not lines:
            return {"error": "the guest gave no result (rc %s):\n%s" % (proc.returncode, text[-4000:]),
                    "log": guest_log}
        facts = json.loads(lines[-1][len(RESULT_MARKER):])
        if "driver_error" in facts:
            facts["error"] = facts.pop("driver_error")
        facts["log"] = guest_log
        return facts

    try:
        yield wait
    finally:
        if proc.poll() is None:
            proc.terminate()  # tests.lab.vm kills and reaps the guest on SIGTERM
            proc.wait()


def hook_methods(methods) -> list:
    """The per-connect table's programs: the baselines, then each policy."""
    return [methods.baseline("empty"), methods.baseline("decide")] + [
        methods.bpf(p) for p in ("random", "weighted", "round_robin")]


def measure_hook_alone(params: dict) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="netlb-bench-") as tmp:
        connect_rate = build_connect_rate(tmp)
        with host_testbed("nlbbenchh", TWO_LINKS, connect_rate, log) as (bed, methods):
            log("hook run time (kernel BPF stats)")
            hook = measure_hook_ns(bed, hook_methods(methods),
                                   {"udp": params["hook_count"], "tcp": params["hook_count_tcp"]}, log)
            log("hook run time vs number of uplinks (kernel BPF stats)")
            return hook, measure_hook_scaling(bed, params["hook_count"], log)


def measure_mptcp_all(params: dict, with_vm: bool) -> dict:
    out = measure_mptcp(params["mptcp_reps"], params["mptcp_seconds"], params["ideal_seconds"], log)
    out["upgrade"] = measure_upgrade_in_vm(log) if with_vm else None
    return out


def run(params: dict, with_vm: bool) -> dict:
    results: dict = {"params": params, "machine": machine(), "load": {"start": load_sample()},
                     "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    t0 = time.monotonic()
    reps, seconds, parallels = params["reps"], params["seconds"], params["parallels"]
    with tempfile.TemporaryDirectory(prefix="netlb-bench-") as tmp, contextlib.ExitStack() as stack:
        connect_rate = build_connect_rate(tmp)
        vm_params = dict(params, transfers=TRANSFERS,
                          transfer_bytes=transfer_bytes(TWO_LINKS, params["ideal_seconds"]))
        wait_vm = stack.enter_context(vm_guest(vm_params, tmp)) if with_vm else None
        if wait_vm:
            log("VM guest booting in the background (provisioning, VRF steering)")

        log("three uplinks %s Mbit/s" % THREE_LINKS)
        with host_testbed("nlbbench3", THREE_LINKS, connect_rate, log) as (bed, methods):
            three = {"rates": THREE_LINKS,
                     "ceilings": measure_ceilings(bed, methods.single(), reps, seconds, log)}
            # The single uplink is the same 40 Mbit/s link as with two: measured there.
            three["runs"] = measure_efficiency(bed, methods.all(single=False), parallels, reps, seconds, log)
            results["three"] = three
            nbytes = transfer_bytes(THREE_LINKS, params["ideal_seconds"], TRANSFERS_THREE)
            log("makespan: %d transfers of %d bytes" % (TRANSFERS_THREE, nbytes))
            # Without the single uplink: the slowest run, and the two-link makespan shows that link alone.
            results["makespan3"] = {"rates": THREE_LINKS, "transfers": TRANSFERS_THREE, "bytes_each": nbytes,
                                    "runs": measure_makespan(bed, methods.all(single=False),
                                                             params["makespan_reps"], TRANSFERS_THREE, nbytes, log)}

        log("two uplinks %s Mbit/s" % TWO_LINKS)
        with host_testbed("nlbbench2", TWO_LINKS, connect_rate, log) as (bed, methods):
            two = {"rates": TWO_LINKS, "ceilings": measure_ceilings(bed, methods.single(), reps, seconds, log)}
            two["runs"] = measure_efficiency(bed, methods.all(), parallels, reps, seconds, log)
            results["two"] = two
            nbytes = transfer_bytes(TWO_LINKS, params["ideal_seconds"])
            log("makespan: %d transfers of %d bytes" % (TRANSFERS, nbytes))
            results["makespan"] = {"rates": TWO_LINKS, "transfers": TRANSFERS, "bytes_each": nbytes,
                                   "runs": measure_makespan(bed, methods.all(), params["makespan_reps"],
                                                            TRANSFERS, nbytes, log)}
            results["load"]["connect"] = load_sample()
            log("connect() rates")
            results["connect"] = measure_connect_cost(bed, methods, params, log)
            log("hook run time (kernel BPF stats)")
            results["hook_ns"] = measure_hook_ns(bed, hook_methods(methods),
                                                 {"udp": params["hook_count"], "tcp": params["hook_count_tcp"]}, log)
            log("hook run time vs number of uplinks (kernel BPF stats)")
            results["hook_scaling"] = measure_hook_scaling(bed, params["hook_count"], log)
        log("failover: the health tracker under a connect loop")
        results["failover"] = measure_failover(params["failover_reps"], log)
        log("mptcp: one connection over both uplinks")
        results["mptcp"] = measure_mptcp_all(params, with_vm)
        if wait_vm:
            log("waiting for the VM guest")
            results["vm"] = wait_vm()
            log("VM guest done%s" % (": " + results["vm"]["error"].splitlines()[-1]
                                      if "error" in results["vm"] else ""))
    results["load"]["end"] = load_sample()
    results["seconds"] = round(time.monotonic() - t0, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, short runs (development)")
    parser.add_argument("--no-vm", action="store_true", help="leave out the VM part")
    parser.add_argument("--out", type=Path, help="results directory (default: benchmarks/results[/quick])")
    parser.add_argument("--only-failover", action="store_true",
                        help="measure the failover section alone and put it into the existing latest.json")
    parser.add_argument("--only-mptcp", action="store_true",
                        help="measure the MPTCP section alone (with the VM's upgrade unless --no-vm) and put it into "
                             "the existing latest.json")
    parser.add_argument("--only-hook", action="store_true",
                        help="measure the hook's run time alone (with its baselines, and against the number of "
                             "uplinks) and put it into the existing latest.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, cgroups, BPF)")
    params = dict(PARAMS["quick" if args.quick else "full"], quick=args.quick)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    if args.only_failover:
        results = json.loads((out / "latest.json").read_text())
        t0 = time.monotonic()
        results["failover"] = measure_failover(params["failover_reps"], log)
        results["params"]["failover_reps"] = params["failover_reps"]
        results["failover_measured"] = {"commit": machine()["commit"], "seconds": round(time.monotonic() - t0, 1),
                                        "at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    elif args.only_mptcp:
        results = json.loads((out / "latest.json").read_text())
        t0 = time.monotonic()
        results["mptcp"] = measure_mptcp_all(params, not args.no_vm)
        results["params"].update(mptcp_reps=params["mptcp_reps"], mptcp_seconds=params["mptcp_seconds"])
        results["mptcp_measured"] = {"commit": machine()["commit"], "seconds": round(time.monotonic() - t0, 1),
                                     "at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    elif args.only_hook:
        results = json.loads((out / "latest.json").read_text())
        t0 = time.monotonic()
        results["hook_ns"], results["hook_scaling"] = measure_hook_alone(params)
        results["hook_measured"] = {"commit": machine()["commit"], "seconds": round(time.monotonic() - t0, 1),
                                    "at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    else:
        results = run(params, with_vm=not args.no_vm)
    guest_log = results.get("vm", {}).pop("log", None)
    if guest_log is not None:
        (out / "latest-vm.log").write_text(guest_log)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "latest.md").write_text(render_markdown(results, chart="latest.png"))
    render_chart(results, out / "latest.png")
    log("wrote %s/latest.md, latest.json, latest.png (%.0f s)" % (out, results["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
