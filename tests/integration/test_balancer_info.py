"""netlb.multiwan.balancer_info and netlb-multiwan-status on this machine's kernel.

fwmark steering (no VRF here): usb0 stays in main, wlp1s0 has table 100 chosen
by `ip rule fwmark 0x100`. The program is attached to a test cgroup by
netlb.multiwan.cgroup_bpf_attach, a state file like the role's is written to a
temp dir, UDP connects from the cgroup make the counters move.

Where the collector runs: on a real host it sees one network namespace, its
sysfs and the cgroup2 and bpffs mounts. `ip netns exec` would hide those mounts
(it mounts a fresh /sys), so the collector runs through HOST_VIEW: the lab's
network namespace, a private mount namespace with that namespace's sysfs on
/sys, and the machine's /sys/fs (cgroup2, bpffs) moved back on top. Ansible
runs the module there through an interpreter wrapper; the command runs the same way.
"""
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from tests.integration.ansible_runner import ROOT, failed_cleanly, run_cases, run_playbook
from tests.integration.bpf_lab import SHARED_MAPS, TestCgroup, build_object, converge, detach_program
from tests.lab.netlab import SERVER4, SERVER6, Lab, Uplink
from ansible_collections.netlb.multiwan.plugins.module_utils.datapath import MAX_UPLINKS, SKIP_REASONS

pytestmark = pytest.mark.hostkernel

MARK = 0x100
TABLE = 100
RULE_PRIORITY = 10000
MOBILE = {"name": "mobile", "interface": "usb0", "weight": 1}
WIFI = {"name": "wifi", "interface": "wlp1s0", "mark": MARK, "weight": 1}

HOST_VIEW = """#!/bin/sh
# Run "$@" in netns %(netns)s with its own sysfs, keeping the machine's /sys/fs mounts.
exec nsenter --net=/run/netns/%(netns)s unshare --mount sh -c '
  keep=$(mktemp -d) &&
  mount --rbind /sys/fs "$keep" &&
  mount -t sysfs sysfs /sys &&
  mount --move "$keep" /sys/fs &&
  rmdir "$keep" &&
  exec "$@"' sh "$@"
"""


@pytest.fixture
def lab():
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="nlbst", server=False) as lab:
        wifi = lab.uplinks[1]
        for argv in (["ip", "rule", "add", "pref", str(RULE_PRIORITY), "fwmark", hex(MARK), "lookup", str(TABLE)],
                     ["ip", "route", "add", "default", "via", wifi.gateway, "dev", wifi.interface, "table", str(TABLE)],
                     ["ip", "-6", "rule", "add", "pref", str(RULE_PRIORITY), "fwmark", hex(MARK), "lookup", str(TABLE)],
                     ["ip", "-6", "route", "add", "default", "via", wifi.gateway6, "dev", wifi.interface,
                      "table", str(TABLE)]):
            lab.client_exec(argv)
        yield lab


class Balancer:
    """The program attached to a test cgroup, a state file describing it, and the HOST_VIEW wrappers."""

    def __init__(self, lab, cg):
        self.lab, self.cg = lab, cg
        self.object = build_object(cg.tmp, [MOBILE, WIFI], steering="fwmark", policy="round_robin")
        run = run_cases([{"id": "a", "args": {"cgroup": cg.name, "object": self.object, "pin_dir": cg.pin_dir,
                                              "shared_maps": SHARED_MAPS}}],
                        playbook="attach_cases.yml")
        assert run["rc"] == 0 and run["results"]["a"]["changed"], run["output"][-3000:]
        converge(cg.pin_dir, self.object)
        usb, wifi = lab.uplinks
        self.state_file = os.path.join(cg.tmp, "balancer.json")
        self.write_state({
            "version": 1,
            "steering": "fwmark",
            "policy": "round_robin",
            "ipv6": True,
            "object": self.object,
            "attach_types": ["connect4", "connect6"],
            "attachments": [{"cgroup": cg.name, "pin_dir": cg.pin_dir}],
            "rule_priority": RULE_PRIORITY,
            "uplinks": [
                {"slot": 0, "name": "mobile", "interface": "usb0", "gateway": usb.gateway, "gateway6": usb.gateway6,
                 "vrf": None, "table": None, "mark": None, "weight": 1},
                {"slot": 1, "name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway,
                 "gateway6": wifi.gateway6, "vrf": None, "table": TABLE, "mark": MARK, "weight": 1},
            ],
        })
        self.host_view = os.path.join(cg.tmp, "host-view")
        self.python = os.path.join(cg.tmp, "python-host-view")
        self.command = os.path.join(cg.tmp, "netlb-multiwan-status")
        with open(self.host_view, "w") as handle:
            handle.write(HOST_VIEW % {"netns": lab.client_netns})
        with open(self.python, "w") as handle:
            handle.write('#!/bin/sh\nexec %s %s "$@"\n' % (self.host_view, ROOT / ".venv" / "bin" / "python"))
        os.chmod(self.host_view, 0o755)
        os.chmod(self.python, 0o755)

    def write_state(self, state):
        with open(self.state_file, "w") as handle:
            json.dump(state, handle, indent=2)

    def connect(self, *dsts, count):
        args = sum((["--dst", d] for d in dsts), []) + ["--count", str(count)]
        return self.cg.probe(args, self.lab.client_netns)["decisions"]

    def playbook(self, cases, check=False, **extra):
        """status_cases.yml with the module running in HOST_VIEW; results keyed by case id."""
        fd, result_file = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        try:
            extra_vars = {"cases": cases, "result_file": result_file, "status_command": self.command,
                          "ansible_python_interpreter": self.python}
            extra_vars.update(extra)
            run = run_playbook("status_cases.yml", extra_vars, check=check)
            with open(result_file) as handle:
                results = json.loads(handle.read() or "[]")
        finally:
            os.unlink(result_file)
        assert run["rc"] == 0, run["output"][-3000:]
        return {r["item"]["id"]: r for r in results}

    def status_command(self, *args):
        return subprocess.run([self.host_view, self.command, "--state", self.state_file, *args],
                              capture_output=True, text=True, timeout=60)


@pytest.fixture
def balancer(lab):
    with TestCgroup("st") as cg:
        yield Balancer(lab, cg)


def uplink_line(text, name):
    lines = [ln.split() for ln in text.splitlines() if ln.split()[:1] == [name]]
    assert len(lines) == 1, text
    return lines[0]


def test_counters_and_uplinks_match_the_connections_made(balancer):
    decisions = collections.Counter(balancer.connect(SERVER4, SERVER6, count=25))
    decisions += collections.Counter(balancer.connect(SERVER4, count=11))
    assert set(decisions) == {"none", "mark:0x100"} and sum(decisions.values()) == 61, decisions
    assert set(balancer.connect("127.0.0.53", "::1", count=2)) == {"none"}  # never steered: 4 skipped

    results = balancer.playbook([{"id": "ok", "state_file": balancer.state_file, "fail_on_problems": True}])
    ok = results["ok"]
    assert ok["changed"] is False and not ok.get("failed"), ok
    status = ok["balancer"]
    assert status["problems"] == [], status["problems"]
    mobile, wifi = status["uplinks"]
    assert (mobile["name"], mobile["table"], mobile["mark"]) == ("mobile", "main", None)
    assert (wifi["name"], wifi["table"], wifi["mark"]) == ("wifi", TABLE, MARK)
    assert mobile["connections"] == decisions["none"] and wifi["connections"] == decisions["mark:0x100"]
    assert mobile["errors"] == wifi["errors"] == 0
    assert status["connections"] == 61 and status["skipped"] == 4
    assert mobile["share"] + wifi["share"] == pytest.approx(100.0, abs=0.2)
    usb, wlan = balancer.lab.uplinks
    assert "%s/24" % usb.address in mobile["addresses"] and "%s/64" % wlan.address6 in wifi["addresses"]
    assert all(u["exists"] and u["operstate"] == "up" and u["carrier"] is True for u in (mobile, wifi))
    assert all(u["default_route"] and u["default_route6"] and u["usable"] for u in (mobile, wifi)), (mobile, wifi)
    assert "default via %s dev wlp1s0" % wlan.gateway in wifi["routes"]
    assert [(r["family"], r["present"], r["priority"]) for r in status["rules"]] == [
        ("IPv4", True, RULE_PRIORITY), ("IPv6", True, RULE_PRIORITY)]
    (att,) = status["attachments"]
    assert att["exists"] and att["current"] and att["object"] == status["object_digest"] and att["pinned"] == [att["object"]]
    assert [(h["attach_type"], h["ok"], [p["name"] for p in h["programs"]]) for h in att["hooks"]] == [
        ("connect4", True, ["mw_connect4"]), ("connect6", True, ["mw_connect6"])]
    # The per-CPU counters map, summed: one slot per possible uplink, then one per reason to skip.
    assert att["counters"][:2] == [{"steered": decisions["none"], "errors": 0},
                                   {"steered": decisions["mark:0x100"], "errors": 0}]
    assert len(att["counters"]) == MAX_UPLINKS + len(SKIP_REASONS)
    assert att["counters"][MAX_UPLINKS + SKIP_REASONS.index("local")] == {"steered": 4, "errors": 0}
    assert status["skipped_by_reason"] == dict((r, 4 if r == "local" else 0) for r in SKIP_REASONS)

    # The command the role installed (status.yml), run by the host's own python3.
    with open(balancer.command) as handle:
        assert handle.readline() == "#!/usr/bin/python3\n"
    assert os.stat(balancer.command).st_mode & 0o777 == 0o755
    text = balancer.status_command()
    sys.stdout.write(text.stdout)  # shown with pytest -s: the example output
    assert text.returncode == 0, text.stdout + text.stderr
    assert uplink_line(text.stdout, "mobile")[:4] == ["mobile", "usb0", "up", "main"]
    wifi_line = uplink_line(text.stdout, "wifi")
    assert wifi_line[:7] == ["wifi", "wlp1s0", "up", "mark", "0x100", "->", "table"]
    assert wifi_line[8:12] == ["1", "1", str(decisions["mark:0x100"]), "%.1f%%" % wifi["share"]]  # tier, weight
    assert re.search(r"never steered .*: 4$", text.stdout, re.M)
    assert "problems: none" in text.stdout
    as_json = balancer.status_command("--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["uplinks"] == status["uplinks"]

    # Check mode: an info module runs the same.
    checked = balancer.playbook([{"id": "ok", "state_file": balancer.state_file}], check=True)["ok"]
    assert checked["balancer"]["uplinks"][1]["connections"] == wifi["connections"]

    # The role's teardown removes the command.
    balancer.playbook([], remove_status_command=True)
    assert not os.path.exists(balancer.command)


def test_problems_are_listed_and_fail_only_when_asked(balancer):
    lab, cg = balancer.lab, balancer.cg
    lab.client_exec(["ip", "link", "set", "wlp1s0", "down"])  # takes table 100's routes with it
    lab.client_exec(["ip", "rule", "del", "pref", str(RULE_PRIORITY), "fwmark", hex(MARK), "lookup", str(TABLE)])
    connect6 = [p for p in json.loads(subprocess.run(["bpftool", "-j", "cgroup", "show", cg.path], capture_output=True,
                                                     text=True, check=True).stdout)
                if p["name"] == "mw_connect6"]
    detach_program(cg.path, "connect6", connect6[0]["id"])
    missing = os.path.join(cg.tmp, "nowhere.json")

    results = balancer.playbook([
        {"id": "report", "state_file": balancer.state_file},
        {"id": "fail", "state_file": balancer.state_file, "fail_on_problems": True},
        {"id": "no_state", "state_file": missing},
    ])
    expected = [
        "wifi: not usable: wlp1s0 is down",
        "wifi: no IPv4 rule fwmark 0x100 lookup 100",
        "attachment %s: program not attached at connect6" % cg.name,
    ]
    report = results["report"]
    assert not report.get("failed") and report["balancer"]["problems"] == expected, report["balancer"]["problems"]
    wifi = report["balancer"]["uplinks"][1]
    assert wifi["operstate"] == "down" and wifi["usable"] is False, wifi
    assert wifi["default_route"] is False and wifi["default_route6"] is False, wifi  # the link took them
    fail = results["fail"]
    assert failed_cleanly(fail) and fail["msg"].startswith("balancer status: 3 problem(s): wifi: not usable: wlp1s0 is down")
    assert fail["balancer"]["problems"] == expected
    no_state = results["no_state"]
    assert not no_state.get("failed") and no_state["balancer"]["problems"] == [
        "state file %s missing: the balancer role has not been applied to this host" % missing]

    text = balancer.status_command()
    sys.stdout.write(text.stdout)
    assert text.returncode == 1 and text.stderr == "", text.stderr
    assert uplink_line(text.stdout, "wifi")[2] == "down"
    assert all("  - " + p in text.stdout for p in expected), text.stdout
    assert re.search(r"^ +connect6: +nothing attached$", text.stdout, re.M), text.stdout

    # A state file that is not JSON: a problem, not a traceback.
    with open(balancer.state_file, "w") as handle:
        handle.write("{not json")
    text = balancer.status_command()
    assert text.returncode == 1 and "is not JSON" in text.stdout and text.stderr == "", text.stderr
