"""`make demo`, then playbooks/site.yml's guest carried on: VRF steering, the tracker, a real reboot.

The demo (tests/lab/demo.py, what a newcomer runs) boots one VM lab guest (Debian's
kernel under QEMU, VRF-capable) with systemd as PID 1 on a disk of its own
(tests/lab/fleet.py); its uplink lab stands for the NICs a real laptop has at boot.
The controller runs on this machine over SSH, as users run it: iperf3 without the
balancer, one site.yml run on the blank host, iperf3 from the balancer's cgroup, the
status command. The same guest then goes on here (one boot and one site.yml under
emulation for both): iperf3 from the cgroup and from the systemd slice, unconnected UDP,
a drain, `systemctl reboot`, and balancing must be back with no Ansible run.

Check + diff, idempotence, invalid input and absent: test_role_containers.py (the
same role under systemd at native speed; Ansible in an emulated guest takes minutes).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tempfile

import pytest
import yaml

from tests.integration import udp_probe
from tests.integration.ansible_runner import ROOT, site_over_ssh
from tests.lab import demo
from tests.lab.fleet import GUEST_CGROUP2, MGMT_DEV, in_cgroup
from tests.lab.netlab import SERVER4, iperf_local_hosts
from tests.lab.vm import vm_available

# The first test pays the module fixture: the demo (a guest boot, site.yml under TCG),
# then a reboot (~8-12 min).
pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]

CGROUP = demo.CGROUP
UNITS = ["netlb-multiwan-uplink-wifi.service", "netlb-multiwan-bpf.service", "netlb-multiwan-track.service"]
IPERF = "iperf3 -c %s -P10 -t3 -J" % SERVER4
IPERF_CGROUP = in_cgroup(CGROUP, IPERF)
IPERF_SLICE = "systemd-run --slice=multiwan --wait --pipe --quiet " + IPERF
# in_cgroup execs its command: no shell builtins (cd) in it.
PROBE = in_cgroup(CGROUP, "%s %s --dst %s --count 100" % (
    shlex.quote(str(ROOT / ".venv" / "bin" / "python")), shlex.quote(str(ROOT / "tests" / "integration" / "connect_probe.py")),
    SERVER4))
# The guest's uplink lab (tests/lab/fleet.py): its internet side, and wifi's end there.
LAB_INET, WIFI_PEER = "fl-inet", "fl-up1"
# Until the tracker's health file says wifi is STATE (it writes it once the maps hold it).
WAIT_WIFI = ("python3 -c 'import json, sys, time\n"
             "for _ in range(300):\n"
             "    try:\n"
             "        if json.load(open(\"/run/netlb-multiwan/health.json\"))[\"uplinks\"][\"wifi\"][\"state\"] == sys.argv[1]: break\n"
             "    except (OSError, ValueError, KeyError): pass\n"
             "    time.sleep(0.2)\n"
             "else: sys.exit(\"wifi not \" + sys.argv[1])'")
BOOT_VIEW = "cd %s && .venv/bin/python -m tests.integration.reboot %s/%s" % (shlex.quote(str(ROOT)), GUEST_CGROUP2, CGROUP)
KERNEL = {
    "link": "ip -d link show",
    "route4": "ip route show table all",
    "rule4": "ip rule show",
    "cgroup": "bpftool -j cgroup show %s/%s" % (GUEST_CGROUP2, CGROUP),
}


UDP_SOCKETS, UDP_DATAGRAMS, UDP_PORT = 100, 3, 9999
GUEST_PYTHON = shlex.quote(str(ROOT / ".venv" / "bin" / "python"))


def unconnected_udp(fleet, guest) -> dict:
    """Unconnected UDP sockets from the balanced cgroup to the guest's lab server."""
    script = shlex.quote(udp_probe.__file__)
    serve = " ".join(udp_probe.serve_argv(GUEST_PYTHON, script, port=UDP_PORT, expect=UDP_SOCKETS * UDP_DATAGRAMS))
    server = ["ip", "netns", "exec", fleet.netns, *fleet.ssh_command(guest), "ip netns exec %s %s" % (LAB_INET, serve)]
    send = in_cgroup(CGROUP, udp_probe.send_command(GUEST_PYTHON, script, dst=SERVER4, port=UDP_PORT,
                                                    sockets=UDP_SOCKETS, datagrams=UDP_DATAGRAMS))
    try:
        return udp_probe.collect(server, lambda: fleet.ssh(guest, send), timeout=300)
    except RuntimeError as exc:
        return {"error": str(exc)}


def decisions(proc) -> dict:
    """{decision: count} of the connect probe's sockets ("dev:wifi-vrf" or "none")."""
    if proc.returncode != 0:
        return {"error": proc.stdout + proc.stderr}
    found: dict = {}
    for decision in json.loads(proc.stdout)["decisions"]:
        found[decision] = found.get(decision, 0) + 1
    return found


class RoleChecks(demo.Extension):
    """The demo's guest, carried on: facts for the tests below."""

    name = "nlbrolevm"

    def __init__(self) -> None:
        self.facts: dict = {}
        self.error: BaseException | None = None

    def before_site(self, fleet, guest) -> None:
        self.facts["blank"] = {key: fleet.ssh(guest, command).stdout for key, command in KERNEL.items()}

    def after_demo(self, fleet, guest) -> None:
        try:
            self.carry_on(fleet, guest)
        except Exception as exc:  # raised by the fixture once the demo has cleaned up
            self.error = exc

    def carry_on(self, fleet, guest) -> None:
        f = self.facts
        usb, wifi = guest.uplinks

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def observe() -> dict:
            seen = {key: ssh(command) for key, command in KERNEL.items()}
            seen["boot_view"] = ssh(BOOT_VIEW)
            seen["iperf_cgroup"] = iperf_local_hosts(fleet.ssh(guest, IPERF_CGROUP))
            seen["iperf_slice"] = iperf_local_hosts(fleet.ssh(guest, IPERF_SLICE))
            status = fleet.ssh(guest, "netlb-multiwan-status --json")
            seen["status"] = {"rc": status.returncode, "text": ssh("netlb-multiwan-status"),
                              "json": json.loads(status.stdout) if status.returncode == 0 else status.stderr}
            seen["units"] = ssh("systemctl is-enabled %s; systemctl is-active %s" % (" ".join(UNITS), " ".join(UNITS)))
            seen["system"] = ssh("systemctl is-system-running; systemctl --failed --no-legend")
            return seen

        f["addresses"] = {"usb0": usb.address, "wlp1s0": wifi.address}
        f["applied"] = observe()
        f["udp"] = unconnected_udp(fleet, guest)
        f["state_file"] = ssh("cat /etc/netlb-multiwan/balancer.json")
        f["unit_files"] = ssh("ls /etc/systemd/system | grep -e netlb -e '[.]slice$'")
        f["boot_id"] = ssh("cat /proc/sys/kernel/random/boot_id")
        # An operator's drain, made without Ansible, must survive the reboot.
        f["drain"] = ssh("netlb-multiwan drain wifi; echo rc=$?")
        fleet.restart(guest)
        f["boot_id_after"] = ssh("cat /proc/sys/kernel/random/boot_id")
        # The lab is ready before the balancer's units finish under TCG.
        f["system_after_boot"] = ssh("systemctl is-system-running --wait")
        f["disk_upper_kept"] = ssh("test -e /etc/netlb-multiwan/balancer.json && echo kept")
        f["drained_after_reboot"] = decisions(fleet.ssh(guest, PROBE))
        f["undrain"] = ssh("netlb-multiwan undrain wifi; echo rc=$?")
        f["rebooted"] = observe()
        f["udp_rebooted"] = unconnected_udp(fleet, guest)
        # VRF steering and the health tracker: wifi's far end loses its carrier.
        f["wifi_cut"] = ssh("ip -n %s link set %s down && %s down; echo rc=$?" % (LAB_INET, WIFI_PEER, WAIT_WIFI))
        f["decisions_wifi_dead"] = decisions(fleet.ssh(guest, PROBE))
        f["health_wifi_dead"] = ssh("cat /run/netlb-multiwan/health.json")
        f["wifi_back"] = ssh("ip -n %s link set %s up && %s up; echo rc=$?" % (LAB_INET, WIFI_PEER, WAIT_WIFI))
        f["decisions_wifi_back"] = decisions(fleet.ssh(guest, PROBE))
        self.ssh_guard(fleet, guest, ssh)
        f["journal"] = ssh("journalctl -b --no-pager -u 'netlb-multiwan-*'")
        f["verify"] = ssh("systemd-analyze verify --man=no /etc/systemd/system/netlb-multiwan-*.service"
                          " && echo verify-ok")


    def ssh_guard(self, fleet, guest, ssh) -> None:
        """The session guard, live: an inventory that puts the interface carrying this very
        Ansible connection (the guest's management NIC) into wifi's VRF."""
        with tempfile.TemporaryDirectory(prefix="netlb-guard-") as workdir:
            inventory = demo.write_inventory(fleet, guest, demo.POLICY, workdir)
            doc = yaml.safe_load(inventory.read_text())
            wifi = doc["multiwan"]["hosts"]["laptop"]["balancer_uplinks"][1]
            wifi.update(interface=MGMT_DEV, gateway=fleet.gateway)
            wifi.pop("gateway6", None)
            inventory.write_text(yaml.safe_dump(doc))
            self.facts["guard_before"] = {key: ssh(command) for key, command in KERNEL.items()}
            self.facts["guard_run"] = site_over_ssh(fleet, inventory, timeout=900)
            self.facts["guard_after"] = {key: ssh(command) for key, command in KERNEL.items()}
            self.facts["guard_session"] = ssh("echo still-here")


@pytest.fixture(scope="module")
def facts():
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    checks = RoleChecks()
    out = io.StringIO()
    # The demo as `make demo` runs it (its own cleanup on SIGTERM removes guest and lab).
    with contextlib.redirect_stdout(out):
        rc = demo.main([], extension=checks)
    print(out.getvalue())  # the demo's screen, for the log
    if checks.error is not None:
        raise checks.error
    return {**checks.facts, "demo": {"rc": rc, "stdout": out.getvalue()}}


def test_demo_passes(facts):
    demo_run = facts["demo"]
    assert demo_run["rc"] == 0 and "Demo passed" in demo_run["stdout"], demo_run["stdout"]


def test_demo_says_where_it_runs(facts):
    assert re.match(r"This kernel \(\S+\) (has no VRF|has VRF, .*): running the demo inside a QEMU guest booting Debian "
                    r"linux-image-6\.\S+ \(accelerator (KVM|TCG)", facts["demo"]["stdout"]), facts["demo"]["stdout"][:500]


def test_demo_after_balancing_uses_both_uplinks_at_90_percent(facts):
    stdout = facts["demo"]["stdout"]
    result = re.search(r"^Result: after balancing the streams used both uplinks \((\S+), (\S+)\), "
                       r"\[SUM\] ([\d.]+) Mbit/s = (\d+)% of the links' 60 Mbit/s", stdout, re.M)
    assert result, stdout
    assert set(result.group(1, 2)) == set(facts["addresses"].values())
    assert float(result.group(3)) >= 0.9 * 60, stdout


def test_demo_summarises_ansible_and_keeps_its_log(facts):
    stdout = facts["demo"]["stdout"]
    recaps = re.findall(r"^    laptop : ok=\d+ changed=\d+ unreachable=0 failed=0", stdout, re.M)
    assert len(recaps) == 1, stdout
    log = re.search(r"full ansible-playbook output: (\S+)", stdout).group(1)
    with open(log) as handle:
        assert "PLAY RECAP" in handle.read()


def test_site_reproduces_the_original_experiment(facts):
    assert "master wifi-vrf" not in facts["blank"]["link"]
    applied = facts["applied"]
    assert "master wifi-vrf" in applied["link"] and "vrf table 10" in applied["link"]
    wifi_gateway = facts["addresses"]["wlp1s0"].rsplit(".", 1)[0] + ".1"
    assert "default via %s dev wlp1s0 table 10" % wifi_gateway in applied["route4"], applied["route4"]
    attach = {p["attach_type"] for p in json.loads(applied["cgroup"])}
    assert {"connect4", "connect6"} <= attach or {"cgroup_inet4_connect", "cgroup_inet6_connect"} <= attach, attach


@pytest.mark.parametrize("started_from", ["iperf_cgroup", "iperf_slice"])
def test_iperf_uses_both_uplinks(facts, started_from):
    # round_robin: the ten streams alternate over both uplinks.
    assert set(facts["applied"][started_from]) == set(facts["addresses"].values()), facts["applied"][started_from]


def test_role_installs_boot_units_and_state_file(facts):
    assert facts["unit_files"].split() == ["multiwan.slice", "netlb-multiwan-bpf.service",
                                           "netlb-multiwan-track.service", "netlb-multiwan-uplink-wifi.service"], \
        facts["unit_files"]
    state = json.loads(facts["state_file"])
    assert state["steering"] == "vrf" and state["policy"] == "round_robin"
    assert [u["name"] for u in state["uplinks"]] == ["mobile", "wifi"]
    assert state["uplinks"][1]["vrf"] == "wifi-vrf" and state["uplinks"][1]["table"] == 10
    # Under systemd the program is attached to the cgroup and to the slice.
    assert {a["cgroup"] for a in state["attachments"]} == {"multiwan", "multiwan.slice"}, state["attachments"]


def status_uplinks(status):
    return {u["name"]: u for u in status["json"]["uplinks"]}


def test_status_shows_both_uplinks_and_their_connections(facts):
    status = facts["applied"]["status"]
    assert status["rc"] == 0 and "problems: none" in status["text"], status["text"]
    uplinks = status_uplinks(status)
    # iperf3 -P10 round_robin, twice: each uplink has carried at least 5 streams.
    assert uplinks["mobile"]["connections"] >= 5 and uplinks["wifi"]["connections"] >= 5, status["text"]


def test_the_guest_really_rebooted_under_systemd(facts):
    # A new kernel (boot id), on the same disk (what the role wrote is still there).
    assert facts["boot_id"].strip() != facts["boot_id_after"].strip()
    assert facts["disk_upper_kept"].strip() == "kept"
    assert facts["rebooted"]["system"].split()[0] == "running", facts["rebooted"]["system"] + facts["journal"]


def test_boot_units_bring_everything_back_without_ansible(facts):
    assert facts["rebooted"]["units"].split() == ["enabled"] * 3 + ["active"] * 3, \
        facts["rebooted"]["units"] + facts["journal"]
    before, after = json.loads(facts["applied"]["boot_view"]), json.loads(facts["rebooted"]["boot_view"])
    for key in before:
        assert after[key] == before[key], "%s after reboot: missing %s, extra %s\n%s" % (
            key, sorted(set(before[key]) - set(after[key])), sorted(set(after[key]) - set(before[key])),
            facts["journal"])


def test_a_drain_survives_the_reboot_and_undrain_brings_the_uplink_back(facts):
    assert facts["drain"].strip().endswith("rc=0"), facts["drain"]
    # round_robin over mobile (main table) and wifi (wifi-vrf): drained, every socket stays in the main table.
    assert facts["drained_after_reboot"] == {"none": 100}, str(facts["drained_after_reboot"]) + facts["journal"]
    assert facts["undrain"].strip().endswith("rc=0"), facts["undrain"]


def test_the_tracker_takes_a_dead_vrf_uplink_out_and_puts_it_back(facts):
    assert facts["wifi_cut"].strip().endswith("rc=0"), facts["wifi_cut"] + facts["journal"]
    assert facts["decisions_wifi_dead"] == {"none": 100}, facts["decisions_wifi_dead"]
    wifi = json.loads(facts["health_wifi_dead"])["uplinks"]["wifi"]
    assert wifi["state"] == "down" and "no carrier" in wifi["reason"], wifi
    assert facts["wifi_back"].strip().endswith("rc=0"), facts["wifi_back"]
    assert facts["decisions_wifi_back"] == {"none": 50, "dev:wifi-vrf": 50}, facts["decisions_wifi_back"]


@pytest.mark.parametrize("started_from", ["iperf_cgroup", "iperf_slice"])
def test_balancing_is_back_after_the_reboot(facts, started_from):
    hosts = facts["rebooted"][started_from]
    assert set(hosts) == set(facts["addresses"].values()), hosts


def test_status_after_reboot_has_no_problems(facts):
    status = facts["rebooted"]["status"]
    assert status["rc"] == 0 and "problems: none" in status["text"], status["text"]
    assert status_uplinks(status)["wifi"]["connections"] >= 5, status["text"]


def test_unit_files_pass_systemd_analyze_verify(facts):
    assert facts["verify"].strip().endswith("verify-ok"), facts["verify"]


@pytest.mark.parametrize("when", ["udp", "udp_rebooted"])
def test_unconnected_udp_keeps_one_uplink_per_socket_with_vrf_steering(facts, when):
    """sendto() without connect(): the source rule into wifi-vrf's table carries every
    datagram of a wifi socket, the first one included; round_robin alternates sockets."""
    by_socket = facts[when]
    assert "error" not in by_socket and len(by_socket) == UDP_SOCKETS, by_socket
    assert udp_probe.spread(by_socket, UDP_DATAGRAMS) == {facts["addresses"]["usb0"]: 50,
                                                          facts["addresses"]["wlp1s0"]: 50}
    if when == "udp":
        assert "from %s lookup 10" % facts["addresses"]["wlp1s0"] in facts["applied"]["rule4"]


def test_a_run_that_would_enslave_the_ansible_connection_fails_before_any_change(facts):
    """The VRF module's guard: the interface the SSH session runs over is named, nothing
    changes, and the session (the controller's next command) still works."""
    run = facts["guard_run"]
    assert run["rc"] != 0 and run["failed"] == 1, run["output"][-3000:]
    assert "%s carries the current connection" % MGMT_DEV in run["output"], run["output"][-3000:]
    assert "force=true" in run["output"], run["output"][-3000:]
    assert facts["guard_after"] == facts["guard_before"]
    assert facts["guard_session"].strip() == "still-here"
