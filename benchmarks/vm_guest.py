"""The VM part of the benchmarks, run inside a VM lab guest (Debian's Linux 6.1 under QEMU, VRF).

Booted by ``python -m benchmarks``. One lab host, the original laptop: usb0
(40 Mbit/s, default route) and wlp1s0 (20 Mbit/s).

1. Each uplink's goodput alone (the tbf ceiling in this kernel).
2. Provisioning: playbooks/site.yml with ansible_connection local, a first
   run on a blank host and a second one; repeated after balancer_state=absent.
   Every first run starts with an empty build cache (it compiles the program).
3. VRF steering: the role's cgroup (policy weighted 2:1, wlp1s0 in wifi-vrf)
   against the single uplink: iperf3 efficiency and equal transfers.

No per-connect cost here: this kernel leaves the BPF stats of cgroup
programs at zero, counts thread CPU time in ticks, and its elapsed time
follows the host's load (the whole guest is one host process).

Facts go out as one JSON line after RESULT_MARKER.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.testbed import (Method, Testbed, build_connect_rate, measure_ceilings, measure_efficiency,
                                measure_makespan)
from tests.integration.ansible_runner import ROOT, ansible_bin, ansible_env
from tests.integration.bpf_lab import TestCgroup
from tests.integration.guest import report
from tests.lab.netlab import Lab, Uplink

RESULT_MARKER = "NETLB-BENCH-VM "
ROLE_CGROUP = "multiwan"
RECAP = re.compile(r"^\S+\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
VRF = "wifi-vrf"


def log(line: str) -> None:
    print("[vm] " + line, flush=True)


def site(inventory: Path, *extra: str) -> dict:
    argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site.yml"), *extra]
    started = time.monotonic()
    proc = subprocess.run(argv, env=ansible_env(), capture_output=True, text=True, timeout=1500)
    seconds = round(time.monotonic() - started, 1)
    recap = RECAP.search(proc.stdout)
    if proc.returncode != 0 or not recap:
        raise RuntimeError("site.yml %s failed (rc %d):\n%s" % (" ".join(extra), proc.returncode,
                                                               (proc.stdout + proc.stderr)[-4000:]))
    return {"seconds": seconds, "ok": int(recap.group(1)), "changed": int(recap.group(2))}


def write_inventory(lab: Lab, directory: Path, cache: str) -> Path:
    usb, wifi = lab.uplinks
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python"),
        "balancer_manage_packages": False,  # the guest runs on this machine's packages
        "balancer_build_cache": cache,
        "balancer_cgroup": ROLE_CGROUP,
        "balancer_policy": "weighted",
        "balancer_uplinks": [
            {"name": "mobile", "interface": usb.interface, "gateway": usb.gateway, "weight": 2},
            {"name": "wifi", "interface": wifi.interface, "gateway": wifi.gateway, "gateway6": wifi.gateway6,
             "vrf": VRF, "table": 10, "weight": 1},
        ],
    }
    path = directory / "hosts.json"
    path.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host_vars}}}))
    return path


def provision(lab: Lab, reps: int, tmp: Path) -> dict:
    out: dict = {"first": [], "second": [], "first_changed": [], "second_changed": [], "tasks": None}
    for rep in range(reps):
        inventory = write_inventory(lab, tmp, tempfile.mkdtemp(prefix="netlb-build-", dir=tmp))
        if rep:
            site(inventory, "-e", "balancer_state=absent")
        first, second = site(inventory), site(inventory)
        out["first"].append(first["seconds"])
        out["second"].append(second["seconds"])
        out["first_changed"].append(first["changed"])
        out["second_changed"].append(second["changed"])
        out["tasks"] = second["ok"]
        log("site.yml rep %d: first %.1f s (%d changed), second %.1f s (%d changed)" % (
            rep + 1, first["seconds"], first["changed"], second["seconds"], second["changed"]))
    return out


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", required=True, help="JSON: reps, seconds, parallels, ...")
    p = json.loads(parser.parse_args().params)
    facts: dict = {"kernel": os.uname().release}
    try:
        measure(p, facts)
    except Exception:
        # Keep what was measured: the report shows it next to the error.
        facts["error"] = traceback.format_exc()
    return facts


def measure(p: dict, facts: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="netlb-bench-"))
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)], name="bu", client_netns=None))
        bed = Testbed(lab, build_connect_rate(str(tmp)), log)
        stack.callback(bed.stop_servers)
        bed.start_servers()
        plain_cg = stack.enter_context(TestCgroup("bench_plain"))
        os.mkdir(plain_cg.path)
        single = Method("single", "single uplink", plain_cg.path)
        facts.update(rates=[u.rate_mbit for u in lab.uplinks], transfers=p["transfers"],
                     bytes_each=p["transfer_bytes"])

        log("ceilings")
        facts["ceilings"] = measure_ceilings(bed, single, p["reps"], p["seconds"], log)
        log("provisioning")
        facts["provisioning"] = provision(lab, p["provision_reps"], tmp)
        # The role's cgroup: policy weighted 2:1, wlp1s0 in wifi-vrf.
        steered = Method("vrf_weighted", "netlb vrf, weighted", os.path.join(os.path.dirname(plain_cg.path),
                                                                           ROLE_CGROUP), prog_cgroup=True)
        methods = [single, steered]
        log("efficiency")
        facts["efficiency"] = measure_efficiency(bed, methods, p["parallels"], p["reps"], p["seconds"], log)
        log("makespan")
        facts["makespan"] = measure_makespan(bed, methods, p["vm_makespan_reps"], p["transfers"],
                                             p["transfer_bytes"], log)


if __name__ == "__main__":
    report(main, RESULT_MARKER)
