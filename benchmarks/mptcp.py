"""One connection over every uplink: what MPTCP adds to a single transfer.

On this machine's kernel, a lab with links shaped to 40 + 20 Mbit/s (wifi's table
chosen by its source address, as fwmark steering's rules do), a sink that accepts MPTCP
and one that speaks plain TCP only (tests/integration/mptcp_transfer.py):

- rate: one connection for SECONDS, measured by the receiver - plain TCP (what any
  application gets, -P1), an MPTCP client without endpoints (`balancer_mptcp: off`), the
  same with `paths`, and with `paths` against the plain TCP server (the fallback);
- makespan: one transfer of the bytes the two links carry in IDEAL seconds together,
  from connect() until the receiver has all of it.

`upgrade` (an unmodified client made MPTCP by the BPF program) needs Linux >= 6.6 with
trampoline programs: the VM lab's Debian 6.12 guest runs tests/integration/
mptcp_upgrade_scenario.py (16 + 8 Mbit/s there, what an emulated guest keeps up with).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from statistics import median

from tests.integration import mptcp_transfer
from tests.lab.netlab import SERVER4, Lab, Uplink

RATES = (40.0, 20.0)
MPTCP_PORT, PLAIN_PORT = 5400, 5401
ENDPOINTS = """
import sys
sys.path.insert(0, %r)
from ansible_collections.netlb.multiwan.plugins.module_utils import mptcp, netlink
doc = {"mptcp": sys.argv[1], "steering": "fwmark", "ipv6": False, "state_dir": sys.argv[2]}
with netlink.Netlink() as link:
    mptcp.converge(doc, [{"name": "mobile", "interface": "usb0"}, {"name": "wifi", "interface": "wlp1s0"}], link)
"""
ROWS = (("tcp", "plain TCP (any application)", "off", MPTCP_PORT, []),
        ("mptcp_off", "MPTCP client, off (no endpoints)", "off", MPTCP_PORT, ["--mptcp"]),
        ("mptcp_paths", "MPTCP client, paths", "paths", MPTCP_PORT, ["--mptcp"]),
        ("paths_plain_server", "MPTCP client, paths, plain TCP server", "paths", PLAIN_PORT, ["--mptcp"]))


def measure_mptcp(reps: int, seconds: float, ideal_seconds: float, log: Callable[[str], None]) -> dict:
    from tests.integration.bpf_lab import ROOT

    endpoints = ENDPOINTS % str(ROOT / ".build" / "collections")
    nbytes = int(sum(RATES) * 1e6 / 8 * ideal_seconds)
    out: dict = {"rates": list(RATES), "seconds": seconds, "bytes": nbytes, "ceilings": {}, "rows": {}}
    with Lab([Uplink("usb0", RATES[0]), Uplink("wlp1s0", RATES[1])], name="nlbbmp") as lab, \
            tempfile.TemporaryDirectory(prefix="netlb-bench-mptcp-") as state_dir:
        usb, wifi = lab.uplinks
        lab.client_exec(["ip", "route", "add", "default", "via", wifi.gateway, "table", "100"])
        lab.client_exec(["ip", "rule", "add", "from", wifi.address, "lookup", "100"])
        lab.inet_exec(["ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8"])
        servers = [subprocess.Popen(lab._in(lab.inet_netns, [sys.executable, mptcp_transfer.__file__, "serve",
                                                             str(port)] + extra), stdout=subprocess.PIPE, text=True)
                   for port, extra in ((MPTCP_PORT, []), (PLAIN_PORT, ["--plain"]))]
        try:
            for server in servers:
                server.stdout.readline()

            def send(port: int, *options: str) -> dict:
                proc = lab.client_exec([sys.executable, mptcp_transfer.__file__, "send", "--dst", SERVER4,
                                        "--port", str(port), *options], timeout=600)
                return json.loads(proc.stdout)

            def mode(name: str) -> None:
                lab.client_exec([sys.executable, "-c", endpoints, name, state_dir])

            for name, up in (("usb0", usb), ("wlp1s0", wifi)):
                runs = [send(MPTCP_PORT, "--seconds", str(seconds), "--bind-dev", name, "--bind", up.address)
                        for _ in range(reps)]
                out["ceilings"][name] = median(r["mbit"] for r in runs)
            log("mptcp: ceilings %s Mbit/s" % ", ".join("%s %.1f" % kv for kv in out["ceilings"].items()))
            for key, title, endpoints_mode, port, options in ROWS:
                mode(endpoints_mode)
                rates = [send(port, "--seconds", str(seconds), *options) for _ in range(reps)]
                spans = [send(port, "--bytes", str(nbytes), *options) for _ in range(reps)]
                out["rows"][key] = {"title": title, "mbit": median(r["mbit"] for r in rates),
                                    "makespan": median(r["elapsed"] for r in spans),
                                    "subflows_max": max(r["subflows_max"] or 0 for r in rates),
                                    # Asked for MPTCP and got TCP: MPTCP_INFO is refused on a fallen-back socket.
                                    "fallback": "--mptcp" in options and any(r.get("fallback") or not r["mptcp"]
                                                                             for r in rates),
                                    "errors": [r["error"] for r in rates + spans if r["error"]]}
                log("mptcp: %s: %.1f Mbit/s, makespan %.2f s" % (title, out["rows"][key]["mbit"],
                                                                 out["rows"][key]["makespan"]))
            mode("off")
        finally:
            for server in servers:
                server.kill()
                server.wait()
    return out


def measure_upgrade_in_vm(log: Callable[[str], None]) -> dict | None:
    """The VM lab's upgrade scenario (Debian 6.12): the unmodified client's rate against
    its links' ceilings; None without the VM lab."""
    from tests.integration.guest import guest_facts
    from tests.integration.mptcp_upgrade_scenario import RESULT_MARKER
    from tests.integration.test_mptcp_upgrade_vm import build
    from tests.lab.vm import vm_available

    if vm_available():
        return None
    with tempfile.TemporaryDirectory(prefix="netlb-bench-upgrade-") as out:
        build(out)
        facts = guest_facts("tests.integration.mptcp_upgrade_scenario", RESULT_MARKER, timeout=600,
                            env={"NETLB_UPGRADE_OBJECT_DIR": out}, shares=(out,), kernel_series="6.12")
    result = {"kernel": facts["uname"], "ceilings": [facts["ceiling_usb"]["mbit"], facts["ceiling_wifi"]["mbit"]],
              "upgraded": facts["upgraded"]["mbit"], "outside": facts["outside"]["mbit"],
              "subflows_max": facts["upgraded"]["subflows_max"], "plain_server_ok": facts["plain_server"]["error"] is None}
    log("mptcp upgrade (VM %s): %.1f Mbit/s over %.1f + %.1f" % (result["kernel"], result["upgraded"],
                                                                 *result["ceilings"]))
    return result
