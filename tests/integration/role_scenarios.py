"""playbooks/site.yml with the balancer role, in a VRF-capable kernel (the VM lab).

Run in the guest by test_role_vm.py: a blank host (the original laptop:
usb0 with the default route, wlp1s0 in a VRF), one real run, iperf3 -P10 from
the balancer's cgroup and the status command, then the root is saved for the
second boot. Facts go out as one JSON line.

Check + diff, the second run, an invalid inventory and balancer_state=absent
run under systemd in a container (test_role_containers.py): Ansible in an
emulated guest takes minutes per run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from tests.integration import reboot
from tests.integration.guest import report
from tests.integration.ansible_runner import ROOT, ansible_bin, ansible_env, snapshot
from tests.lab.netlab import SERVER4, Lab, Uplink, stream_local_hosts

RESULT_MARKER = "NETLB-ROLE-RESULT "
CGROUP = "multiwan"
PIN_DIR = "/sys/fs/bpf/netlb_multiwan"


def kernel_state() -> dict:
    state = snapshot()
    state["cgroup_tree"] = subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True).stdout
    state["pins"] = sorted(str(p) for p in Path("/sys/fs/bpf").rglob("*"))
    return state


def site(inventory: str, *extra: str) -> dict:
    argv = [ansible_bin("ansible-playbook"), "-i", inventory, str(ROOT / "playbooks" / "site.yml"), *extra]
    # Every process start is slow in an emulated guest: pipelining saves each module's
    # temp files and the shell commands around them.
    env = dict(ansible_env(), ANSIBLE_PIPELINING="True")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500)
    recap = re.search(r"^\S+\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout, re.M)
    return {"rc": proc.returncode, "output": proc.stdout + proc.stderr,
            "ok": int(recap.group(1)) if recap else None,
            "changed": int(recap.group(2)) if recap else None,
            "failed": int(recap.group(4)) if recap else None}


def make_lab() -> Lab:
    return Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)], name="rl", client_netns=None)


def iperf_from_cgroup() -> dict:
    cgroup_path = os.path.join("/sys/fs/cgroup", CGROUP)
    shell = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    iperf = subprocess.run(["sh", "-c", shell, cgroup_path, "iperf3", "-c", SERVER4, "-P10", "-t3", "-J"],
                           capture_output=True, text=True, timeout=120)
    try:
        return {"local_hosts": stream_local_hosts(json.loads(iperf.stdout))}
    except ValueError:
        return {"error": iperf.stdout[-1500:] + iperf.stderr[-1500:]}


def status(root: str = "/") -> dict:
    """netlb-multiwan-status as the role installed it (in *root*)."""
    argv = ["chroot", root, "/usr/local/sbin/netlb-multiwan-status"]
    text = subprocess.run(argv, capture_output=True, text=True)
    data = subprocess.run(argv + ["--json"], capture_output=True, text=True)
    try:
        parsed = json.loads(data.stdout)
    except ValueError:
        parsed = None
    return {"rc": text.returncode, "text": text.stdout + text.stderr, "json": parsed}


def main() -> dict:
    if os.environ.get("NETLB_REBOOT_FROM"):
        return boot_again(os.environ["NETLB_REBOOT_FROM"])
    facts: dict = {}
    with make_lab() as lab:
        usb, wifi = lab.uplinks
        facts["addresses"] = {"usb0": usb.address, "wlp1s0": wifi.address}
        host_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python"),
            "balancer_manage_packages": False,   # the guest runs on this machine's packages
            "balancer_build_cache": tempfile.mkdtemp(prefix="netlb-build-"),
            "balancer_cgroup": CGROUP,
            "balancer_pin_dir": PIN_DIR,
            "balancer_policy": "round_robin",
            "balancer_uplinks": [
                {"name": "mobile", "interface": "usb0", "gateway": usb.gateway},
                {"name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway, "gateway6": wifi.gateway6,
                 "vrf": "wifi-vrf", "table": 10},
            ],
        }
        inventory = Path(tempfile.mkdtemp(prefix="netlb-inv-")) / "hosts.json"
        inventory.write_text(json.dumps({"multiwan": {"hosts": {"laptop": host_vars}}}))

        facts["blank"] = kernel_state()
        facts["run1"] = site(str(inventory))
        facts["applied"] = kernel_state()
        facts["iperf"] = iperf_from_cgroup()
        facts["boot_view"] = reboot.boot_view(os.path.join("/sys/fs/cgroup", CGROUP))
        facts["state_file"] = Path("/etc/netlb-multiwan/balancer.json").read_text()
        facts["status"] = status()
        facts["units"] = sorted(p.name for p in Path("/etc/systemd/system").glob("*netlb*"))
        if os.environ.get("NETLB_SAVE_ROOT"):
            reboot.save_root(os.environ["NETLB_SAVE_ROOT"])
    return facts


def boot_again(saved: str) -> dict:
    """A fresh kernel on the provisioned root: the uplinks come up (the host's
    own network configuration would do that), then only the boot units run."""
    facts: dict = {}
    with make_lab() as lab_, reboot.booted_root(saved) as root:
        facts["addresses"] = {u.interface: u.address for u in lab_.uplinks}
        facts["boot"] = reboot.run_boot_units(root)
        facts["boot_view"] = reboot.boot_view(os.path.join("/sys/fs/cgroup", CGROUP))
        facts["iperf"] = iperf_from_cgroup()
        facts["status"] = status(root)
        # Booting twice (a unit restarted) changes nothing.
        facts["boot_again"] = reboot.run_boot_units(root)
        facts["boot_view_again"] = reboot.boot_view(os.path.join("/sys/fs/cgroup", CGROUP))
    return facts


if __name__ == "__main__":
    report(main, RESULT_MARKER)
