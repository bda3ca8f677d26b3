"""`make demo`: the balancer (playbooks/site.yml) on a built-in lab, before and after.

The lab is the original write-up's laptop: usb0 (40 Mbit/s, default route) and
wlp1s0 (20 Mbit/s), emulated veth uplinks to a lab "internet" running iperf3
(tests/lab/netlab.py). The demo runs iperf3 -P10 without the balancer, applies
site.yml with a demo inventory (VRF steering), runs iperf3 -P10 again from the
balancer's cgroup, reads the program's per-uplink counters, then removes
everything with balancer_state=absent.

It always runs inside Debian's own kernel (Linux 6.1, has VRF) in QEMU, on a
throw-away overlay of this root. This machine's kernel has no VRF; and where a
kernel has one, site.yml would still write files, cgroups and pins on the
machine it manages, with interface names (usb0, wlp1s0) a real laptop may have.

Exit status: 0 when the balanced run used both uplinks' addresses and its [SUM]
reached 90% of the links' 60 Mbit/s (the issue's requirement), 1 otherwise.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import yaml

from tests.integration.ansible_runner import ROOT, ansible_bin, ansible_env
from tests.lab.netlab import SERVER4, Lab, Uplink, kernel_has_vrf, received_mbps
from tests.lab.vm import accelerator, run_in_vm, vm_available
from tests.lab.vmkernel import VmSetupError, ensure_kernel

sys.path.insert(0, str(ROOT / ".build" / "collections"))
from ansible_collections.netlb.multiwan.plugins.module_utils.cgroup import cgroup2_mount  # noqa: E402

RATES_MBIT = {"usb0": 40, "wlp1s0": 20}
LINKS_MBIT = sum(RATES_MBIT.values())
REQUIRED_SHARE = 0.90
STREAMS = 10
SECONDS = 5
STEPS = 6
# Round robin rather than weighted 2:1: measured, the aggregate is the same.
# Once an uplink carries one TCP stream or more it fills to its rate whatever
# the stream count (4 runs each here: round_robin 56.5-57.5, weighted
# 57.3-57.5 Mbit/s, splits 7:3, 7:3, 8:2, 6:4). But weighted picks at random per
# socket: in 1 run of 58 ((2/3)^10) all ten streams land on usb0, and the demo
# would show one uplink and fail. Round robin alternates: always 5 and 5.
POLICY = "round_robin"
CGROUP = "multiwan"
PIN_DIR = "/sys/fs/bpf/netlb_multiwan"
# The lab's tbf buckets hold 4 ms of traffic. An emulated guest's timers fire late when the
# host is busy: with those buckets the links gave 85-90% of their rate at a
# host load of 6 (the guest itself 30-60% busy), with 50 ms buckets 95-96%.
# The long-run rate stays the same; the bucket starts full, so iperf3 -O 1
# leaves the first second out of the figures.
BUCKET_SECONDS = 0.050
STATUS_COMMAND = "/usr/local/sbin/netlb-multiwan-status"
# Lines the guest sends to the host's ansible log file rather than the screen.
LOG_LINE = "netlb-demo-log| "
DEFAULT_LOG = ROOT / ".build" / "demo" / "ansible.log"


def step(number: int, title: str) -> None:
    print("\n[%d/%d] %s" % (number, STEPS, title))


# -- guest side --------------------------------------------------------------
def show_streams(result: dict, interface_of: dict[str, str]) -> tuple[set[str], float]:
    """Stream -> local address -> uplink -> Mbit/s, then the [SUM] line.
    Returns the local addresses used and the received total."""
    local = {c["socket"]: c["local_host"] for c in result["start"]["connected"]}
    print("    %-7s %-15s %-7s %s" % ("stream", "local address", "uplink", "Mbit/s"))
    for number, stream in enumerate(result["end"]["streams"], 1):
        receiver = stream["receiver"]
        address = local[receiver["socket"]]
        mbps = receiver["bits_per_second"] / 1e6
        print("    %-7d %-15s %-7s %6.1f" % (number, address, interface_of.get(address, "?"), mbps))
    total = received_mbps(result)
    print("    [SUM]   %.1f Mbit/s = %.0f%% of the links' %d Mbit/s"
          % (total, 100 * total / LINKS_MBIT, LINKS_MBIT))
    return set(local.values()), total


def iperf3(argv_prefix: list[str], shown_prefix: str = "") -> dict:
    command = ["iperf3", "-c", SERVER4, "-P", str(STREAMS), "-t", str(SECONDS), "-O", "1"]
    print("    $ %s%s" % (shown_prefix, " ".join(command)))
    argv = argv_prefix + command + ["-J"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60)
    result = json.loads(proc.stdout)
    if proc.returncode != 0 or "error" in result:
        raise RuntimeError("iperf3 failed: %s" % result.get("error", proc.stderr))
    return result


def widen_buckets(lab: Lab) -> None:
    for uplink in lab.uplinks:
        burst = int(uplink.rate_mbit * 1e6 / 8 * BUCKET_SECONDS)
        for netns, device in ((lab.client_netns, uplink.interface), (lab.inet_netns, uplink.peer)):
            subprocess.run(["tc", *(["-n", netns] if netns else []), "qdisc", "change", "dev", device, "root", "tbf",
                            "rate", "%gmbit" % uplink.rate_mbit, "burst", str(burst), "latency", "50ms"], check=True)


def write_inventory(lab: Lab, policy: str, directory: str) -> Path:
    usb, wifi = lab.uplinks
    host = {
        "balancer_uplinks": [
            {"name": "mobile", "interface": usb.interface, "gateway": usb.gateway, "weight": 2},
            {"name": "wifi", "interface": wifi.interface, "gateway": wifi.gateway, "gateway6": wifi.gateway6,
             "vrf": "wifi-vrf", "table": 10, "weight": 1},
        ],
        "balancer_steering": "vrf",
        "balancer_policy": policy,
        "balancer_cgroup": CGROUP,
        "balancer_pin_dir": PIN_DIR,
        # Demo plumbing: Ansible runs on the guest itself, with this checkout's
        # Python and the packages this machine already has.
        "ansible_connection": "local",
        "ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python"),
        "balancer_manage_packages": False,
        "balancer_build_cache": os.path.join(directory, "build"),
    }
    path = Path(directory, "inventory.yml")
    path.write_text(yaml.safe_dump({"multiwan": {"hosts": {"laptop": host}}}, sort_keys=False))
    return path


def site(inventory: Path, *extra: str) -> bool:
    """ansible-playbook playbooks/site.yml: the full output goes to the log,
    the screen gets the PLAY RECAP (and what failed)."""
    argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "site.yml"), *extra]
    print("    $ " + " ".join(["ansible-playbook", "-i", str(inventory), "playbooks/site.yml", *extra]))
    started = time.monotonic()
    # Every process start is slow in an emulated guest: pipelining saves the module's temp
    # files and their shell commands, the fact cache the second fact gathering
    # (measured: the whole demo used 22% less CPU time).
    env = dict(ansible_env(), ANSIBLE_PIPELINING="True", ANSIBLE_GATHERING="smart",
               ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(inventory.parent / "facts"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    recap = False
    task = ""
    failures = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("TASK [") or line.startswith("PLAY RECAP"):
            # When each task started: where the time goes (Ansible is slow in an emulated guest).
            print(LOG_LINE + "[%6.1f s] " % (time.monotonic() - started) + line)
        else:
            print(LOG_LINE + line)
        if line.startswith("TASK ["):
            task = line.strip(" *")
        elif line.startswith(("fatal:", "failed:")) or line.startswith("ERROR!"):
            failures += [task, line] if task else [line]
        if line.startswith("PLAY RECAP"):
            recap = True
        elif recap and line.strip():
            print("    " + re.sub(r"\s+", " ", line.strip()))
    rc = proc.wait()
    for line in failures:
        print("    " + line[:2000])
    print("    (%s in %.0f s)" % ("ok" if rc == 0 else "FAILED, exit status %d" % rc, time.monotonic() - started))
    return rc == 0


def show_counters(uplinks: list[tuple[str, str]]) -> None:
    """The role's status command when it has one, else the raw counters map."""
    print("    (%d streams + iperf3's control connection = %d sockets; those given to usb0 stay on the"
          " main table)" % (STREAMS, STREAMS + 1))
    if os.access(STATUS_COMMAND, os.X_OK):
        print("    $ " + STATUS_COMMAND)
        proc = subprocess.run([STATUS_COMMAND], capture_output=True, text=True)
        sys.stdout.write("".join("    " + ln for ln in (proc.stdout + proc.stderr).splitlines(True)))
        return
    pins = glob.glob(os.path.join(PIN_DIR, "*", "maps", "mw_counters"))
    if len(pins) != 1:
        print("    counters map not found (%s/*/maps/mw_counters: %s)" % (PIN_DIR, pins or "none"))
        return
    print("    $ bpftool map dump pinned " + pins[0])
    proc = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", pins[0]], capture_output=True, text=True)
    try:
        entries = json.loads(proc.stdout)
    except ValueError:
        print("    bpftool failed: " + proc.stderr.strip())
        return
    print("    %-5s %-10s %-9s %-8s %s" % ("slot", "uplink", "interface", "sockets", "errors"))
    labels = uplinks + [("(skipped)", "-")]
    for entry in entries:
        value = entry.get("formatted", entry)["value"]
        slot = entry.get("formatted", entry)["key"]
        name, interface = labels[slot] if slot < len(labels) else ("?", "?")
        print("    %-5s %-10s %-9s %-8s %s" % (slot, name, interface, value["steered"], value["errors"]))
    print("    (skipped): sockets never steered (loopback, excluded prefixes, already bound)")


def in_guest(policy: str) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the children's
    log_path = os.environ.get("NETLB_DEMO_LOG", "")
    verdict_ok = False
    with Lab([Uplink(i, rate) for i, rate in RATES_MBIT.items()], name="demo", client_netns=None) as lab, \
            tempfile.TemporaryDirectory(prefix="netlb-demo-") as workdir:
        widen_buckets(lab)
        usb, wifi = lab.uplinks
        interface_of = {u.address: u.interface for u in lab.uplinks}
        step(1, "Lab: two emulated uplinks (veth pairs shaped with tbf) to a lab internet, iperf3 server %s"
             % SERVER4)
        for u in lab.uplinks:
            route = "default route (main table)" if u is usb else "no default route yet"
            print("    %-7s %-13s %2d Mbit/s  gateway %-13s %s"
                  % (u.interface, u.address, u.rate_mbit, u.gateway, route))

        step(2, "Before: %d TCP streams for %d s without the balancer (every socket follows the main table)"
             % (STREAMS, SECONDS))
        _, before = show_streams(iperf3([]), interface_of)

        step(3, "Apply playbooks/site.yml (role netlb.multiwan.balancer) with this inventory")
        inventory = write_inventory(lab, policy, workdir)
        sys.stdout.write("".join("    | " + ln for ln in inventory.read_text().splitlines(True)))
        if log_path:
            print("    full ansible-playbook output: " + log_path)
        print("    (Ansible is slow inside an emulated guest: minutes per run)")
        if not site(inventory):
            print("\nDemo FAILED: site.yml failed (the log has the whole output).")
            return 1

        cgroup = os.path.join(cgroup2_mount(), CGROUP)
        step(4, "After: the same %d streams from a process in the balancer's cgroup %s" % (STREAMS, cgroup))
        shell = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        after = iperf3(["sh", "-c", shell, cgroup], "echo $$ > %s/cgroup.procs; " % cgroup)
        addresses, total = show_streams(after, interface_of)

        step(5, "The program's counters: sockets per uplink")
        show_counters([("mobile", usb.interface), ("wifi", wifi.interface)])

        step(6, "Remove everything: site.yml -e balancer_state=absent, then the lab")
        removed = site(inventory, "-e", "balancer_state=absent")

        both = {usb.address, wifi.address} <= addresses
        share = total / LINKS_MBIT
        verdict_ok = both and share >= REQUIRED_SHARE and removed
        print("\nResult: after balancing the streams used %s (%s), [SUM] %.1f Mbit/s = %.0f%% of the links' "
              "%d Mbit/s (required: both addresses and >= %.0f%%); before: %.1f Mbit/s on usb0 alone."
              % ("both uplinks" if both else "ONE uplink only", ", ".join(sorted(addresses)), total,
                 100 * share, LINKS_MBIT, 100 * REQUIRED_SHARE, before))
        if not removed:
            print("balancer_state=absent failed (see the log)")
    print("Lab removed. Demo %s." % ("passed" if verdict_ok else "FAILED"))
    return 0 if verdict_ok else 1


# -- host side ---------------------------------------------------------------
class LogSplitter:
    """Stream for run_in_vm: lines marked LOG_LINE go to the log file,
    the rest to the screen."""

    def __init__(self, screen: TextIO, log: TextIO) -> None:
        self.screen, self.log, self.pending = screen, log, ""

    def write(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.startswith(LOG_LINE):
                self.log.write(line[len(LOG_LINE):] + "\n")
            else:
                self.screen.write(line + "\n")

    def flush(self) -> None:
        if self.pending and not LOG_LINE.startswith(self.pending[:len(LOG_LINE)]):
            self.screen.write(self.pending)
            self.pending = ""
        self.screen.flush()
        self.log.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default=POLICY, choices=["random", "weighted", "round_robin", "hash_dst"])
    args = parser.parse_args(argv)
    if os.environ.get("NETLB_IN_VM") == "1":
        return in_guest(args.policy)
    problem = vm_available()
    if problem:
        print("The demo needs the VM lab: " + problem)
        return 1
    try:
        kernel = ensure_kernel()
    except VmSetupError as e:
        print("The demo needs the VM lab: %s" % e)
        return 1
    accel, why = accelerator(kernel)
    reason = "has VRF, but the demo keeps this machine unchanged" if kernel_has_vrf() else "has no VRF"
    print("This kernel (%s) %s: running the demo inside a QEMU guest booting Debian linux-image-%s"
          " (accelerator %s: %s; a kernel with VRF) on a throw-away overlay of this root: nothing on"
          " this machine changes." % (os.uname().release, reason, kernel.release, accel.upper(), why))
    started = time.monotonic()
    DEFAULT_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(DEFAULT_LOG, "w") as log:
        screen = LogSplitter(sys.stdout, log)
        result = run_in_vm(".venv/bin/python -m tests.lab.demo --policy " + args.policy, timeout=1500,
                            env={"NETLB_DEMO_LOG": str(DEFAULT_LOG)}, stream=screen)
        screen.write("\n" if screen.pending else "")
        screen.flush()
    print("(demo took %.0f s)" % (time.monotonic() - started))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
