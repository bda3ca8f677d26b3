"""`make demo`: the technique on a built-in lab, before and after.

Two emulated uplinks (usb0 40 Mbit/s with the default route, wlp1s0 20 Mbit/s)
to a lab "internet" running iperf3. The playbook tests/lab/demo_vrf.yml puts
wlp1s0 into wifi-vrf (table 10) with netlb.multiwan.vrf; then iperf3 shows
that sockets bound to the VRF leave through wifi while the others stay on
usb0, so both links carry traffic at once.

This machine's kernel may lack VRF: then the demo runs inside Debian's
user-mode-linux kernel (Linux 6.1 with VRF), on an overlay of this root, so
nothing on the host changes. Per-connection balancing by the eBPF program
arrives with the cgroup_bpf_attach module and the balancer role.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.integration.ansible_runner import ansible_bin, ansible_env, ROOT
from tests.lab.netlab import (IPERF_PORT, SERVER4, Lab, Uplink, kernel_has_vrf, received_mbps,
                              received_mbps_by_local_host)
from tests.lab.uml import run_in_uml, uml_kernel

SECOND_PORT = IPERF_PORT + 1


def show_iperf(title: str, results: list[dict]) -> None:
    print("\n== %s" % title)
    total = 0.0
    for result in results:
        for stream in result["start"]["connected"]:
            print("  stream %-3s local %-15s -> %s:%s" % (stream["socket"], stream["local_host"],
                                                       stream["remote_host"], stream["remote_port"]))
        for host, mbps in sorted(received_mbps_by_local_host(result).items()):
            print("  from %-15s %6.1f Mbit/s" % (host, mbps))
        total += received_mbps(result)
    print("  [SUM] %.1f Mbit/s received" % total)


def iperf_json(lab: Lab, port: int, parallel: int, seconds: int, extra: list[str]) -> subprocess.Popen:
    argv = ["iperf3", "-c", SERVER4, "-p", str(port), "-P", str(parallel), "-t", str(seconds), "-J", *extra]
    if lab.client_netns:
        argv = ["ip", "netns", "exec", lab.client_netns, *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def in_lab() -> int:
    """The demo proper, in a kernel with VRF (a UML guest or a VRF-capable host)."""
    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with ansible's
    in_guest = os.environ.get("NETLB_IN_UML") == "1"
    uplinks = [Uplink("usb0", 40), Uplink("wlp1s0", 20)]
    with Lab(uplinks, name="demo", client_netns=None if in_guest else "auto") as lab:
        usb, wifi = lab.uplinks
        print("Lab: usb0 %s (40 Mbit/s, default route)  wlp1s0 %s (20 Mbit/s)  server %s"
              % (usb.address, wifi.address, SERVER4))
        lab.inet_exec(["iperf3", "-s", "-D", "-p", str(SECOND_PORT)])
        time.sleep(0.5)

        before = lab.iperf3(parallel=10, seconds=5)
        show_iperf("Before: iperf3 -P10, every socket on the main table", [before])

        print("\n== ansible-playbook tests/lab/demo_vrf.yml (netlb.multiwan.vrf)")
        extra = {"demo_gateway": wifi.gateway, "demo_netns": lab.client_netns}
        argv = [ansible_bin("ansible-playbook"), "-i", "localhost,", "-c", "local",
                "-e", json.dumps(extra), str(ROOT / "tests" / "lab" / "demo_vrf.yml")]
        rc = subprocess.run(argv, env=ansible_env()).returncode
        if rc != 0:
            return rc
        for argv in (["ip", "-d", "link", "show", "wifi-vrf"], ["ip", "route", "show", "vrf", "wifi-vrf"]):
            print("$ " + " ".join(argv))
            sys.stdout.write(lab.client_exec(argv).stdout)

        # Half the streams bound to the VRF (what the eBPF program will do per
        # connect), half left alone: both uplinks carry traffic at once.
        main = iperf_json(lab, IPERF_PORT, 5, 5, [])
        vrf = iperf_json(lab, SECOND_PORT, 5, 5, ["--bind-dev", "wifi-vrf"])
        after = [json.loads(main.communicate()[0]), json.loads(vrf.communicate()[0])]
        show_iperf("After: 5 streams unbound + 5 streams bound to wifi-vrf", after)
        links = 40 + 20
        total = sum(received_mbps(r) for r in after)
        print("\nBefore %.1f Mbit/s (one uplink), after %.1f Mbit/s = %.0f%% of the links' %d Mbit/s."
              % (received_mbps(before), total, 100 * total / links, links))
    return 0


def main() -> int:
    if os.environ.get("NETLB_IN_UML") == "1" or kernel_has_vrf():
        return in_lab()
    if uml_kernel() is None:
        print("This kernel has no VRF and user-mode-linux is not installed: run `make deps` first.")
        return 1
    print("This kernel (%s) has no VRF: running the demo inside the user-mode-linux kernel "
          "(Linux 6.1 with VRF) on an overlay of this root; the host is not changed." % os.uname().release)
    result = run_in_uml(".venv/bin/python -m tests.lab.demo", timeout=900, stream=sys.stdout)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
