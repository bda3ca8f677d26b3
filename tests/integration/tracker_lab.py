"""A balancer host for the health tracker, in namespaces on this machine's kernel:
used by tests/integration/test_tracker.py and the failover part of `make bench`.

The lab (tests/lab/netlab.py) gives the client namespace usb0, wlp1s0 and wwan0,
each a veth to the internet namespace, where a TCP listener answers. The uplinks
are routed for fwmark steering by the boot command (netlb-multiwan-apply, the
engine the modules run), the program is attached to a test cgroup, and the
tracker (module_utils/tracker.py) runs in the client namespace with the default
settings. A TCP connect loop in the cgroup records for each connect its time,
its uplink (the socket's mark) and its outcome while an uplink is broken from
the internet side.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.integration.ansible_runner import ROOT
from tests.integration.bpf_lab import TestCgroup, build_object
from tests.lab.netlab import SERVER4, Lab, Uplink
from ansible_collections.netlb.multiwan.plugins.module_utils import attach, cli, datapath
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool

LOOP = Path(__file__).with_name("connect_loop.py")
# netlb-multiwan-apply as the role installs it: the engine's boot.main.
APPLY = ["-c", "from ansible_collections.netlb.multiwan.plugins.module_utils.boot import main; raise SystemExit(main())"]
PORT = 7
ECHO_PORT = 9  # the far end of held connections (connect_loop.py --hold)
RATE = 200  # connects per second (the issue asks >= 100)
COLLECTIONS = str(ROOT / ".build" / "collections")
MARK_TO_INTERFACE = {0: "usb0", 11: "wlp1s0", 12: "wwan0"}


@contextlib.contextmanager
def tracker_host(tag: str = "tr") -> Iterator[dict]:
    """{lab, cg, state (path), doc, tmp, address}: routed, attached, not yet tracked."""
    name = "nlb%s%d" % (tag, os.getpid() % 10000)
    with Lab([Uplink("usb0"), Uplink("wlp1s0"), Uplink("wwan0")], name=name, server=False) as lab, \
            TestCgroup("track") as cg:
        servers = [subprocess.Popen(["ip", "netns", "exec", lab.inet_netns, sys.executable, str(LOOP), mode, str(port)])
                   for mode, port in (("--serve", PORT), ("--echo", ECHO_PORT))]
        try:
            usb, wifi, lte = lab.uplinks
            tmp = Path(cg.tmp)
            obj = build_object(cg.tmp, [{"name": "mobile", "interface": "usb0"},
                                        {"name": "wifi", "interface": "wlp1s0", "mark": 11},
                                        {"name": "lte", "interface": "wwan0", "mark": 12}],
                               steering="fwmark", policy="round_robin")
            doc = {
                "version": 1, "steering": "fwmark", "policy": "round_robin", "rule_priority": 10000, "force": False,
                "object": obj, "attach_types": ["connect4"], "exclude": [], "state_dir": str(tmp),
                "attachments": [{"cgroup": cg.path, "pin_dir": cg.pin_dir}],
                "health_file": str(tmp / "health.json"), "metrics_textfile": str(tmp / "netlb_multiwan.prom"),
                "uplinks": [
                    {"slot": 0, "name": "mobile", "interface": "usb0", "gateway": usb.gateway, "vrf": None,
                     "table": None, "mark": None, "weight": 1, "drained": False, "track": {}},
                    {"slot": 1, "name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway, "vrf": None,
                     "table": 11, "mark": 11, "weight": 1, "drained": False, "track": {},
                     "routes": [{"dst": "default", "gateway": wifi.gateway}]},
                    {"slot": 2, "name": "lte", "interface": "wwan0", "gateway": lte.gateway, "vrf": None,
                     "table": 12, "mark": 12, "weight": 1, "drained": False, "track": {},
                     "routes": [{"dst": "default", "gateway": lte.gateway}]},
                ]}
            state = tmp / "balancer.json"
            state.write_text(json.dumps(doc, indent=2))
            # Routed by the boot command (the engine the modules run) in the client namespace.
            for up in ("wifi", "lte"):
                subprocess.run(["ip", "netns", "exec", lab.client_netns, sys.executable, *APPLY, "uplink", up],
                               env=dict(os.environ, NETLB_MULTIWAN_STATE=str(state), PYTHONPATH=COLLECTIONS),
                               check=True, capture_output=True, text=True)
            attacher = attach.Attacher(cli.Host({
                "cgroup": cg.path, "object": obj, "pin_dir": cg.pin_dir, "attach_types": ["connect4"],
                "shared_maps": list(datapath.Maps.NAMES), "create_cgroup": True, "state": "present"}))
            attacher.prepare()
            attacher.read_state()
            attacher.present()
            cli.converge_maps(doc, Bpftool(cli.Host(), "bpftool"), routing=False)  # the tracker routes, in its netns
            yield {"lab": lab, "cg": cg, "state": state, "doc": doc, "tmp": tmp}
        finally:
            for server in servers:
                server.kill()
                server.wait()


class Tracker:
    """netlb-multiwan-track in the client namespace (nsenter: the bpffs stays visible)."""

    def __init__(self, host: dict, wait_up: bool = True, clock_offset: float = 0.0):
        self.host = host
        self.log = open(host["tmp"] / "tracker.log", "a")
        self.proc = subprocess.Popen(
            ["nsenter", "--net=/run/netns/%s" % host["lab"].client_netns, sys.executable, "-m",
             "ansible_collections.netlb.multiwan.plugins.module_utils.tracker", "--state", str(host["state"])],
            env=dict(os.environ, PYTHONPATH=COLLECTIONS, NETLB_MULTIWAN_CLOCK_OFFSET=str(clock_offset)),
            stdout=self.log, stderr=subprocess.STDOUT)
        if wait_up:  # as this tracker says (an earlier one's file may say so already)
            self.wait_for(lambda h: h and all(u["state"] == "up" for u in h.values()), "all uplinks up", own=True)

    def health(self, own: bool = False, part: str = "uplinks") -> dict | None:
        """The uplinks (or *part*) of the health file; with *own*, None until this tracker
        wrote it (it converges the maps first)."""
        try:
            written = json.loads(Path(self.host["doc"]["health_file"]).read_text())
        except (OSError, ValueError):
            return None
        if own and written.get("pid") != self.proc.pid:
            return None
        return written.get(part)

    def wait_for(self, condition, what: str, timeout: float = 10.0, own: bool = False, part: str = "uplinks") -> None:
        end = time.time() + timeout
        while time.time() < end:
            if condition(self.health(own, part)):
                return
            time.sleep(0.05)
        raise AssertionError("tracker: not %s after %.0f s: %s\n%s" % (what, timeout, self.health(), self.output()))

    def output(self) -> str:
        self.log.flush()
        return (self.host["tmp"] / "tracker.log").read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


def connect_loop(host: dict, duration: float) -> subprocess.Popen:
    return subprocess.Popen(host["cg"].argv([sys.executable, str(LOOP), "--dst", SERVER4, "--port", str(PORT),
                                             "--rate", str(RATE), "--duration", str(duration)],
                                            netns=host["lab"].client_netns),
                            stdout=subprocess.PIPE, text=True)


def hold(host: dict, duration: float, mark: int) -> subprocess.Popen:
    """One connection held from the balanced cgroup, first through the uplink of *mark*."""
    return subprocess.Popen(host["cg"].argv([sys.executable, str(LOOP), "--dst", SERVER4, "--port", str(ECHO_PORT),
                                             "--hold", "--want-mark", str(mark), "--duration", str(duration)],
                                            netns=host["lab"].client_netns),
                            stdout=subprocess.PIPE, text=True)


def held(proc: subprocess.Popen) -> list:
    """The events of hold(): [unix time, connect | echo | error, local address, mark, error]."""
    out, _err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out)["events"]


TRANSFER = """import socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3]))
sock.connect((sys.argv[1], %d))
left, block = int(sys.argv[2]), b"x" * 65536
while left > 0:
    chunk = block[:left]
    sock.sendall(chunk)
    got = 0
    while got < len(chunk):
        got += len(sock.recv(65536))
    left -= len(chunk)
""" % ECHO_PORT


def transfer(host: dict, size: int, mark: int) -> None:
    """*size* bytes to the echo server and back, through the uplink of *mark*."""
    host["lab"].client_exec([sys.executable, "-c", TRANSFER, SERVER4, str(size), str(mark)])


def finish(proc: subprocess.Popen) -> list:
    out, _err = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return json.loads(out)["connects"]


def steered_to(connect: list) -> str:
    return MARK_TO_INTERFACE[connect[2]]


def _peer(host: dict, ifname: str) -> str:
    return next(u.peer for u in host["lab"].uplinks if u.interface == ifname)


def break_uplink(host: dict, ifname: str, how: str) -> float:
    """From the internet side: "carrier" (the peer end down) or "silent" (drop everything, link up)."""
    peer = _peer(host, ifname)
    if how == "carrier":
        host["lab"].inet_exec(["ip", "link", "set", peer, "down"])
    else:
        host["lab"].inet_exec(["nft", 'add table inet nlbtr_%s { chain drop_in { type filter hook input priority 0; '
                                      'iifname "%s" drop; }; chain drop_fwd { type filter hook forward priority 0; '
                                      'iifname "%s" drop; }; }' % (ifname, peer, peer)])
    return time.time()


def repair_uplink(host: dict, ifname: str, how: str) -> float:
    if how == "carrier":
        host["lab"].inet_exec(["ip", "link", "set", _peer(host, ifname), "up"])
    else:
        host["lab"].inet_exec(["nft", "delete table inet nlbtr_%s" % ifname])
    return time.time()


def fault_and_repair(host: dict, how: str, ifnames=("wlp1s0",), duration: float = 7.0, broken_for: float = 2.5):
    """(fault time, repair time, connects): connects for *duration* s, the fault from 1.5 s."""
    loop = connect_loop(host, duration)
    time.sleep(1.5)
    faults = [break_uplink(host, i, how) for i in ifnames]
    time.sleep(broken_for)
    repairs = [repair_uplink(host, i, how) for i in ifnames]
    return faults[-1], repairs[-1], finish(loop)


def failover_figures(connects: list, fault: float, repair: float, ifname: str = "wlp1s0") -> dict:
    """{detection: last connect steered to the broken uplink after the fault (0 when none), s;
    recovery: first connect steered to it after the repair, s (None when none);
    failed_after_detection: connects that failed between detection and repair}."""
    during = [c[0] for c in connects if fault <= c[0] < repair and steered_to(c) == ifname]
    detection = (max(during) - fault) if during else 0.0
    back = [c[0] for c in connects if c[0] >= repair and steered_to(c) == ifname]
    return {"detection": detection, "recovery": (min(back) - repair) if back else None,
            "failed_after_detection": [c for c in connects if c[3] and fault + detection < c[0] < repair],
            "connects": len(connects)}
