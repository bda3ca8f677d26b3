"""Metered uplinks (issue 31) on a provisioned host: a data budget spent, kept across
restarts, renewed by the next period; a spent budget as a backup tier.

One systemd container (tests/lab/containers.py) with three uplinks and fwmark steering,
provisioned by playbooks/site.yml: usb0 (mobile, main table), wlp1s0 (wifi, mark 0x100)
and enp2s0 (lte, mark 0x200), equal weights; wifi has `budget: {bytes: 2M, period: day}`.
Connects come from the balanced cgroup, one UDP connect() at a time; each socket's mark
says which uplink the program picked. In order:

1. 3 MB through wifi (iperf3 -n bound to wifi's device and address: the program leaves a
   device-bound socket alone, the source rule routes it): then 100 connects, none on wifi; status
   shows wifi spent with its used bytes >= 2 MB; the metrics say the same;
2. the tracker restarted, then the container rebooted (its interfaces are created again:
   their counters start from zero): the usage is kept (it only grows) and wifi stays out;
3. the tracker's clock a day later (NETLB_MULTIWAN_CLOCK_OFFSET, not the machine's): wifi
   is back, its usage started again from zero;
4. `when_spent: backup`: spent again, wifi gets no connect while mobile or lte is usable,
   every connect once both are drained, none again once one is back.
"""
from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest

from tests.integration.ansible_runner import site_over_ssh
from tests.integration.laptop import edge, fwmark_edge_vars
from tests.integration.test_role_runtime_containers import CGROUP, LTE, MAIN, MARK_PROBE, METRICS, WIFI
from tests.lab.fleet import in_cgroup
from tests.lab.netlab import SERVER4

pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

CLOCK_DROPIN = "/run/systemd/system/netlb-multiwan-track.service.d/clock.conf"


def uplinks(guest, when_spent):
    usb, wifi, lte = guest.uplinks
    return [{"name": "mobile", "interface": "usb0", "gateway": usb.gateway},
            {"name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway, "table": 100, "mark": WIFI,
             "budget": {"bytes": "2M", "period": "day", "when_spent": when_spent}},
            {"name": "lte", "interface": "enp2s0", "gateway": lte.gateway, "table": 101, "mark": LTE}]


@pytest.fixture(scope="module")
def facts():
    with edge("nlbbu") as (tmp, fleet, guest):
        common = fwmark_edge_vars(tmp, fleet, guest, balancer_policy="round_robin",
                                  balancer_metrics_textfile=METRICS, balancer_cgroup=CGROUP)

        def inventory(name, **host):
            path = Path(tmp, name + ".json")
            path.write_text(json.dumps({"multiwan": {"hosts": {"edge": {**common, **host}}}}))
            return path

        def ssh(command: str) -> str:
            proc = fleet.ssh(guest, command)
            return proc.stdout + proc.stderr

        def marks(count: int = 100) -> collections.Counter:
            out = fleet.ssh(guest, in_cgroup(CGROUP, "python3 /root/mark_probe.py %d %s" % (count, SERVER4)))
            assert out.returncode == 0, out.stdout + out.stderr
            return collections.Counter(json.loads(out.stdout))

        def status() -> dict:
            return json.loads(fleet.ssh(guest, "netlb-multiwan status --json").stdout)

        def wifi_budget() -> dict:
            return next(u for u in status()["uplinks"] if u["name"] == "wifi")["budget"]

        def spend() -> str:
            """3 MB through wifi, bound to its device and address, from the balanced cgroup."""
            return fleet.ssh(guest, in_cgroup(CGROUP, "iperf3 -c %s -B %s --bind-dev wlp1s0 -n 3M -J"
                                              % (SERVER4, guest.uplinks[1].address))).stdout

        def wait_for(condition, timeout: float = 10.0):
            end = time.time() + timeout
            while time.time() < end and not condition():
                time.sleep(0.5)

        f: dict = {}
        fleet.exec(guest, ["sh", "-c", "cat > /root/mark_probe.py"], input=MARK_PROBE)
        f["run_drain"] = site_over_ssh(fleet, inventory("drain", balancer_uplinks=uplinks(guest, "drain")))
        time.sleep(2.0)  # the tracker's first samples
        f["marks_before"] = marks(99)
        f["iperf"] = spend()
        wait_for(lambda: (wifi_budget() or {}).get("spent"))
        f["marks_spent"], f["status_spent"] = marks(), status()
        time.sleep(1.2)
        f["metrics_spent"] = ssh("cat %s" % METRICS)

        ssh("systemctl restart netlb-multiwan-track.service")
        time.sleep(2.5)
        f["budget_after_tracker_restart"] = wifi_budget()
        fleet.restart(guest)
        wait_for(lambda: (wifi_budget() or {}).get("used") is not None, 30)
        time.sleep(2.0)
        f["budget_after_reboot"], f["marks_after_reboot"] = wifi_budget(), marks()

        ssh("mkdir -p %s && printf '[Service]\\nEnvironment=NETLB_MULTIWAN_CLOCK_OFFSET=86400\\n' > %s && "
            "systemctl daemon-reload && systemctl restart netlb-multiwan-track.service"
            % (CLOCK_DROPIN.rsplit("/", 1)[0], CLOCK_DROPIN))
        wait_for(lambda: (wifi_budget() or {}).get("spent") is False)
        f["budget_next_day"], f["marks_next_day"] = wifi_budget(), marks(99)
        ssh("rm -f %s && systemctl daemon-reload && systemctl restart netlb-multiwan-track.service" % CLOCK_DROPIN)

        f["run_backup"] = site_over_ssh(fleet, inventory("backup", balancer_uplinks=uplinks(guest, "backup")))
        time.sleep(2.0)
        f["iperf_backup"] = spend()
        wait_for(lambda: (wifi_budget() or {}).get("spent"))
        f["status_backup"], f["marks_backup"] = status(), marks()
        f["debug_backup"] = ssh("ip rule; cat /var/lib/netlb-multiwan/usage.json; ip -s link show wlp1s0")
        ssh("netlb-multiwan drain mobile && netlb-multiwan drain lte")
        f["marks_backup_only"] = marks()
        ssh("netlb-multiwan undrain lte")
        f["marks_backup_lte_back"] = marks()
        f["journal"] = ssh("journalctl -b --no-pager -u netlb-multiwan-track | tail -30")
    return f


def test_a_spent_budget_takes_the_uplink_out_and_status_and_metrics_say_so(facts):
    assert facts["run_drain"]["rc"] == 0, facts["run_drain"]["output"][-3000:]
    assert facts["marks_before"] == {MAIN: 33, WIFI: 33, LTE: 33}
    sent = json.loads(facts["iperf"])["end"]["sum_sent"]["bytes"]
    assert sent >= 3000000, facts["iperf"][-2000:]
    assert facts["marks_spent"][WIFI] == 0 and sum(facts["marks_spent"].values()) == 100, facts["journal"]
    wifi = next(u for u in facts["status_spent"]["uplinks"] if u["name"] == "wifi")
    assert wifi["budget"]["spent"] and wifi["budget"]["used"] >= 2000000 and wifi["budget"]["bytes"] == 2000000
    assert any(p.startswith("wifi: data budget spent") for p in facts["status_spent"]["problems"])
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(facts["metrics_spent"])}
    used = families["netlb_multiwan_uplink_budget_used_bytes"].samples[0]
    assert used.labels == {"uplink": "wifi"} and used.value >= 2000000
    assert families["netlb_multiwan_uplink_budget_spent"].samples[0].value == 1
    assert families["netlb_multiwan_uplink_budget_bytes"].samples[0].value == 2000000


def test_usage_is_kept_across_a_tracker_restart_and_a_reboot(facts):
    spent = next(u for u in facts["status_spent"]["uplinks"] if u["name"] == "wifi")["budget"]["used"]
    assert facts["budget_after_tracker_restart"]["used"] >= spent, facts["budget_after_tracker_restart"]
    after = facts["budget_after_reboot"]
    assert after["spent"] and after["used"] >= spent, (after, facts["journal"])   # counters restarted at zero
    assert facts["marks_after_reboot"][WIFI] == 0


def test_the_next_period_brings_the_uplink_back_with_its_usage_at_zero(facts):
    nxt = facts["budget_next_day"]
    assert nxt["spent"] is False and nxt["used"] < 200000, nxt
    assert facts["marks_next_day"] == {MAIN: 33, WIFI: 33, LTE: 33}


def test_a_spent_budget_as_backup_takes_connects_only_while_the_others_are_out(facts):
    assert facts["run_backup"]["rc"] == 0, facts["run_backup"]["output"][-3000:]
    wifi = next(u for u in facts["status_backup"]["uplinks"] if u["name"] == "wifi")
    assert wifi["budget"]["spent"] and wifi["budget"]["when_spent"] == "backup", (
        json.dumps(wifi["budget"]) + "\n" + facts["debug_backup"])
    assert facts["marks_backup"][WIFI] == 0 and sum(facts["marks_backup"].values()) == 100
    assert facts["marks_backup_only"] == {WIFI: 100}, facts["journal"]
    assert facts["marks_backup_lte_back"] == {LTE: 100}
