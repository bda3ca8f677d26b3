"""What must come back after a reboot, as one JSON document.

Run on a lab guest (``python -m tests.integration.reboot CGROUP``) before and after
it reboots (tests/integration/test_role_vm.py): links with their VRF masters and
tables, routes of every table, rules, the programs on the balancer's cgroup, and
the pins - without what differs per boot by nature.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path


def boot_view(cgroup: str) -> dict:
    """What must come back after a reboot, without what differs per boot by
    nature (ifindexes, MAC-derived link-local addresses, program ids)."""
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True).stdout)
    view = {"links": sorted("%s master=%s kind=%s table=%s up=%s" % (
        ln["ifname"], ln.get("master"), ln.get("linkinfo", {}).get("info_kind"),
        ln.get("linkinfo", {}).get("info_data", {}).get("table"), "UP" in ln.get("flags", []))
        for ln in links)}
    for key, argv in {"route4": ["ip", "route", "show", "table", "all"],
                      "route6": ["ip", "-6", "route", "show", "table", "all"],
                      "rule4": ["ip", "rule"], "rule6": ["ip", "-6", "rule"]}.items():
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        view[key] = sorted(ln for ln in out.splitlines() if "fe80" not in ln)
    proc = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True, text=True)
    try:
        progs = json.loads(proc.stdout or "[]")
        view["cgroup"] = sorted("%s %s" % (p["attach_type"], p["name"]) for p in progs)
    except (ValueError, TypeError, KeyError):
        view["cgroup"] = "bpftool: %s %s" % (proc.stdout, proc.stderr)
    view["pins"] = sorted(re.sub(r"/[0-9a-f]{16}(/|$)", r"/<digest>\1", str(p))
                          for p in Path("/sys/fs/bpf").rglob("*"))
    return view


if __name__ == "__main__":
    print(json.dumps(boot_view(sys.argv[1])))
