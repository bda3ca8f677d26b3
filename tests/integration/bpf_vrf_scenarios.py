"""VRF steering in a network namespace of a VRF-capable kernel.

Run by test_bpf_vrf.py in a namespace made for it (guest.netns_facts), on this
machine's kernel or inside a VM lab guest. The original experiment: usb0 in
main, wlp1s0 in wifi-vrf (table 10, made by netlb.multiwan.vrf), the balancer
attached to a cgroup by netlb.multiwan.cgroup_bpf_attach, iperf3 -P10 from
the cgroup. Then DNS through a stub on 127.0.0.53, with our program and with
the original write-up's program. Facts go out as one JSON line.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.guest import report
from tests.integration.ansible_runner import run_cases
from tests.integration.bpf_lab import SHARED_MAPS, TestCgroup, build_object, converge
from tests.lab.netlab import SERVER4, SERVER6, Lab, Uplink, in_throwaway_netns, received_mbps, stream_local_hosts
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink, sockets, steering, tracker

RESULT_MARKER = "NETLB-BPF-VRF-RESULT "
HERE = Path(__file__).resolve().parent
UPLINKS = [{"name": "mobile", "interface": "usb0", "weight": 1},
           {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "weight": 1}]


def attach(cg: TestCgroup, obj: str, ours: bool = True) -> dict:
    """Attach *obj*; ours: with the balancer's shared maps, converged after (the write-up's
    program has no such maps)."""
    args = {"cgroup": cg.name, "object": obj, "pin_dir": cg.pin_dir}
    if ours:
        args["shared_maps"] = SHARED_MAPS
    run = run_cases([{"id": "a", "args": args}], playbook="attach_cases.yml")
    result = run["results"].get("a", {"failed": True, "msg": run["output"][-2000:]})
    if ours and not result.get("failed"):
        converge(cg.pin_dir, obj)
    return result


def in_cgroup(cg: TestCgroup, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cg.argv(argv), capture_output=True, text=True, timeout=timeout)


def dns_lookups(cg: TestCgroup) -> dict:
    proc = in_cgroup(cg, [sys.executable, str(HERE / "dns_lookups.py"), "100"], timeout=600)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}


def reset_held_connection(lab: Lab, cg: TestCgroup) -> dict:
    """A connection held from the cgroup through wifi-vrf (a byte every 100 ms, echoed),
    destroyed as netlb-multiwan-track does when wifi goes down: {destroyed, events}."""
    echo = subprocess.Popen(lab._in(lab.inet_netns, [sys.executable, str(HERE / "connect_loop.py"), "--echo", "9"]),
                            stdout=subprocess.PIPE, text=True)
    try:
        # Python starts slowly in an emulated guest: the holder's first connect must find the echo listening.
        echo.stdout.readline()
        holder = subprocess.Popen(cg.argv([sys.executable, str(HERE / "connect_loop.py"), "--dst", SERVER4,
                                           "--port", "9", "--hold", "--want-device", "wifi-vrf", "--duration", "8"]),
                                  stdout=subprocess.PIPE, text=True)
        wifi = {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "table": 10, "mark": None}
        with netlink.Netlink() as kernel:
            # Python starts slowly in an emulated guest: wait for the held connection itself.
            vrf_index = kernel.link("wifi-vrf").index
            end = time.time() + 60
            while time.time() < end:
                with sockets.SockDiag() as diag:
                    if any(s.dport == 9 and s.bound_ifindex == vrf_index for s in diag.tcp()):
                        break
                time.sleep(0.2)
            time.sleep(0.5)  # an echo or two through it first
            destroyed = tracker.reset_connections(steering.provider("vrf"), kernel, wifi, sockets.cgroup_ids(cg.path))
        held = json.loads(holder.communicate(timeout=120)[0])["events"]
    finally:
        echo.kill()
        echo.wait()
    return {"destroyed": destroyed, "events": held}


def main() -> dict:
    facts: dict = {}
    with Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)], name="bv", client_netns=None) as lab, \
            TestCgroup("vrf") as cg:
        usb, wifi = lab.uplinks
        facts["addresses"] = {"usb0": usb.address, "wlp1s0": wifi.address}
        vrf = run_cases([{"id": "vrf", "args": {
            "name": "wifi-vrf", "table": 10, "interfaces": ["wlp1s0"],
            "routes": [{"gateway": wifi.gateway}, {"gateway": wifi.gateway6}]}}])
        facts["vrf"] = vrf["results"].get("vrf", {"failed": True, "msg": vrf["output"][-2000:]})

        obj = build_object(cg.tmp, UPLINKS, steering="vrf", policy="random")
        facts["attach"] = attach(cg, obj)
        facts["cgroup_show"] = subprocess.run(["bpftool", "-j", "cgroup", "show", cg.path],
                                              capture_output=True, text=True).stdout

        iperf = in_cgroup(cg, ["iperf3", "-c", SERVER4, "-P10", "-t5", "-J"])
        try:
            result = json.loads(iperf.stdout)
            facts["iperf"] = {"local_hosts": stream_local_hosts(result), "mbps": received_mbps(result)}
        except ValueError:
            facts["iperf"] = {"error": iperf.stderr[-2000:] + iperf.stdout[-2000:]}
        probe4 = cg.probe(["--dst", SERVER4, "--count", "200"])
        probe6 = cg.probe(["--dst", SERVER6, "--count", "200"])
        facts["decisions4"] = sorted(set(probe4["decisions"]))
        facts["decisions6"] = sorted(set(probe6["decisions"]))
        facts["counters"] = cg.counters()
        facts["reset"] = reset_held_connection(lab, cg)

        # DNS through a local stub, as systemd-resolved provides it. The resolver
        # configuration is bind-mounted in this namespace's own mount namespace only.
        if not in_throwaway_netns():
            raise RuntimeError("run through tests.lab.netlab.run_in_netns: /etc/resolv.conf is replaced here")
        resolv = Path(cg.tmp, "resolv.conf")
        resolv.write_text("nameserver ::1\noptions timeout:1 attempts:1\n")
        subprocess.run(["mount", "--bind", str(resolv), os.path.realpath("/etc/resolv.conf")], check=True)
        stub = subprocess.Popen([sys.executable, str(HERE / "dns_stub.py"), "::1"])
        try:
            time.sleep(0.5)
            facts["dns_ours6"] = dns_lookups(cg)  # connect6 to ::1
        finally:
            stub.kill()
            stub.wait()
        resolv.write_text("nameserver 127.0.0.53\noptions timeout:1 attempts:1\n")
        stub = subprocess.Popen([sys.executable, str(HERE / "dns_stub.py"), "127.0.0.53"])
        try:
            time.sleep(0.5)
            facts["dns_ours"] = dns_lookups(cg)
            original = str(Path(cg.tmp) / "original.bpf.o")
            subprocess.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/%s-linux-gnu" % os.uname().machine,
                            "-c", str(HERE / "bpf" / "original.bpf.c"), "-o", original], check=True)
            facts["attach_original"] = attach(cg, original, ours=False)
            facts["dns_original"] = dns_lookups(cg)
        finally:
            stub.kill()
            stub.wait()
    return facts


if __name__ == "__main__":
    report(main, RESULT_MARKER)
