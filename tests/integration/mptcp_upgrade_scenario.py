"""`balancer_mptcp: upgrade` on a kernel that runs it (the VM lab's Debian 6.12 guest).

Runs inside the guest (tests/integration/test_mptcp_upgrade_vm.py boots it), as root in
the guest's own namespace, the uplink lab's client side: usb0 and wlp1s0 shaped to
RATES, wifi's table 100 chosen by its source address (what fwmark steering's rules do
for a subflow from wifi's address). The engine does what the role's apply does:
mptcp.check (the preflight's probe), mptcp.converge (the endpoints of `paths`) and
mptcp_upgrade.converge (the program, attached for a test cgroup). The client is
tests/integration/mptcp_transfer.py *without* --mptcp: a plain socket() + connect().

Prints one JSON line after RESULT_MARKER (tests/integration/guest.report).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from tests.integration import mptcp_transfer
from tests.integration.bpf_lab import TestCgroup
from tests.integration.guest import report
from tests.lab.netlab import SERVER4, Lab, Uplink
from ansible_collections.netlb.multiwan.plugins.module_utils import cli, mptcp, mptcp_upgrade, netlink
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool

RESULT_MARKER = "NETLB-MPTCP-UPGRADE-RESULT "
RATES = (16, 8)  # Mbit/s: what an emulated guest's Python moves with room to spare
MPTCP_PORT = 5400
SECONDS = 3  # enough to see the protocol; the rates are the role test's (test_role_mptcp_upgrade_vm)


def main() -> dict:
    obj_dir = os.environ["NETLB_UPGRADE_OBJECT_DIR"]  # built on the host: multiwan's and mptcpify's
    facts: dict = {"uname": os.uname().release}
    with Lab([Uplink("usb0", RATES[0]), Uplink("wlp1s0", RATES[1])], name="nlbup", client_netns=None) as lab, \
            TestCgroup("up") as cg, tempfile.TemporaryDirectory(prefix="netlb-up-") as state_dir:
        wifi = lab.uplinks[1]
        for argv in (["ip", "route", "add", "default", "via", wifi.gateway, "table", "100"],
                     ["ip", "rule", "add", "from", wifi.address, "lookup", "100"]):
            subprocess.run(argv, check=True)
        lab.inet_exec(["ip", "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8"])
        servers = [subprocess.Popen(lab._in(lab.inet_netns, [sys.executable, mptcp_transfer.__file__, "serve",
                                                             str(MPTCP_PORT)]),
                                    stdout=subprocess.PIPE, text=True)]
        try:
            for server in servers:
                assert server.stdout.readline().strip() == "listening"
            doc = {"mptcp": "upgrade", "steering": "fwmark", "ipv6": False, "state_dir": state_dir,
                   "object": os.path.join(obj_dir, "multiwan.bpf.o"),
                   "attachments": [{"cgroup": cg.name, "pin_dir": cg.pin_dir}]}
            uplinks = [{"name": "mobile", "interface": "usb0"}, {"name": "wifi", "interface": "wlp1s0"}]
            bpftool = Bpftool(cli.Host(), "bpftool")
            os.makedirs(cg.path)  # the attach phase's Attacher makes it before
            facts["check"] = mptcp.check(doc)
            with netlink.Netlink() as link:
                facts["paths"] = mptcp.converge(doc, uplinks, link)
            facts["attach"] = mptcp_upgrade.converge(doc, bpftool)
            facts["attach_again"] = mptcp_upgrade.converge(doc, bpftool)
            facts["links"] = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True,
                                                       text=True, check=True).stdout)

            def send(port, *options, in_cgroup=True):
                argv = [sys.executable, mptcp_transfer.__file__, "send", "--dst", SERVER4, "--port", str(port),
                        "--seconds", str(SECONDS), *options]
                proc = subprocess.run(cg.argv(argv) if in_cgroup else argv, capture_output=True, text=True,
                                      timeout=SECONDS + 120)
                assert proc.stdout.strip(), proc.stderr
                return json.loads(proc.stdout)

            facts["upgraded"] = send(MPTCP_PORT)
            facts["outside"] = send(MPTCP_PORT, in_cgroup=False)
            facts["counts"] = mptcp_upgrade.observe(doc, lambda path: bpftool.json("map", "dump", "pinned", path))
            facts["detach"] = mptcp_upgrade.converge(dict(doc, mptcp="off"), bpftool)
            facts["pins_after_detach"] = os.path.exists(mptcp_upgrade.pin_base(doc))
            time.sleep(0.5)
            facts["after_detach"] = send(MPTCP_PORT)
            with netlink.Netlink() as link:
                facts["paths_off"] = mptcp.converge(dict(doc, mptcp="off"), uplinks, link)
        finally:
            for server in servers:
                server.kill()
                server.wait()
    return facts


if __name__ == "__main__":
    report(main, RESULT_MARKER)
