"""A fleet of VM lab guests reachable over SSH, for real Ansible runs.

Topology (``name`` defaults to "nlbfleet")::

    <name>-mgmt netns (the controller side: ansible-playbook, ssh)
      br0  100.127.0.1/24
        <name>-t0 (tap) ==== mgmt0 100.127.0.10/24 of guest 0: sshd, uplink lab
        <name>-t1 (tap) ==== mgmt0 100.127.0.11/24 of guest 1
        ...

Each guest (tests/lab/vm.py, VRF-capable kernel) first builds its own uplink
lab in its root netns (netlab.Lab with client_netns=None: veth uplinks usb0,
wlp1s0, ... to a "fl-inet" netns running iperf3 at 100.64.0.1, default route via
uplink 0), then brings up the management NIC mgmt0 with its address and link
route only (no default route: the lab's stays the only one), then starts sshd
on that address.  sshd has a host key made for this run and accepts root by the
run's client key; the controller checks host keys against a known_hosts file of
those keys.  Guests run until the fleet exits.

``Fleet(..., systemd=True)``: each guest runs systemd as PID 1 on a disk of its own
(the writable layer; it survives a reboot), with its lab and sshd as a service
ordered before network.target (where a real host's NICs are at boot), and
``fleet.restart(g)`` really reboots it (`systemctl reboot`, same disk) and waits
until the lab and sshd are back.  Without it, the guest's lab is PID 1's script
(faster to boot, no reboot).

``with Fleet([...]) as fleet`` removes everything in every case (exception,
Ctrl-C, SIGTERM): the guests' process trees, the processes left in the mgmt
netns (ssh control masters), the taps, the netns, the temp dirs.

    with Fleet([GuestSpec("a", [Uplink("usb0", 40), Uplink("wlp1s0", 20)])]) as fleet:
        g = fleet.guests[0]            # g.address, g.uplinks (addresses filled in)
        fleet.ssh(g, "ip rule")        # CompletedProcess, text
        fleet.host_vars(g)             # ansible_host/user/key/ssh args for an inventory
        fleet.controller_run(["ansible-playbook", ...], env={**os.environ, **fleet.ansible_env()})

CLI: ``python -m tests.lab.fleet up [--guests N | --guest NAME ...]`` boots
the guests (two uplinks each; ``--uplinks ''``: bare guests without a lab),
prints how to reach them and runs until Ctrl-C or SIGTERM.  With ``--state F
--detach`` it runs in the background and returns once the guests answer ssh,
leaving in F (JSON) the pid, netns, key, known_hosts and an ssh ProxyCommand
that reaches the guests from the host's netns; ``down --state F`` stops it and
waits for its cleanup.  molecule's create/destroy (extensions/molecule) use
that.  The guest side runs as ``python -m tests.lab.fleet guest`` (started by
the fleet, not by hand).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._common import Terminated, claim, cleanup_on_signals, release
from .netlab import Lab, LabError, Uplink, _check_name, _kill_netns_processes, _run
from .vm import REPO_ROOT, Nic, VmGuest, make_disk
from .vmkernel import DEFAULT_SERIES

MGMT_SUBNET = ipaddress.IPv4Network("100.127.0.0/24")  # lab space, apart from the guests' uplink plan
MGMT_DEV = "mgmt0"  # the guest's name of its virtio NIC on the tap
READY = "NETLB-FLEET-READY "
FAILED = "NETLB-FLEET-FAILED "
_GUEST_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


# A guest's cgroup2 mount, for its shell: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts.
GUEST_CGROUP2 = '$(grep -m1 " cgroup2 " /proc/mounts | cut -d" " -f2)'


def in_cgroup(cgroup: str, command: str) -> str:
    """A guest shell command running *command* in the cgroup2 group *cgroup*."""
    return "sh -c 'echo $$ > %s/%s/cgroup.procs && exec %s'" % (GUEST_CGROUP2, cgroup, command)


class FleetError(RuntimeError):
    pass


@dataclass
class GuestSpec:
    name: str  # inventory hostname and the guest's hostname
    uplinks: list[Uplink]  # the guest's uplink lab (rate_mbit as in netlab); [] = none
    kernel_series: str = DEFAULT_SERIES  # the VM guest's kernel (tests/lab/vm.py); containers run this one's


@dataclass
class FleetGuest:
    spec: GuestSpec
    address: str  # management address (mgmt0), what ansible_host points at
    tap: str  # its tap in the mgmt netns
    mac: str
    host_key: Path  # private host key, handed to the guest
    host_key_pub: str
    uplinks: list[Uplink] = field(default_factory=list)  # as the guest's lab set them up
    vm: VmGuest | None = None

    @property
    def name(self) -> str:
        return self.spec.name


class Fleet:
    """Context manager booting one VM guest per GuestSpec, concurrently."""

    # The guests see this machine's root: the controller's venv, with pyroute2.
    python_interpreter = str(Path(REPO_ROOT, ".venv", "bin", "python"))

    def __init__(
        self,
        specs: Sequence[GuestSpec],
        *,
        name: str = "nlbfleet",
        mem: str = "768M",
        boot_timeout: float = 300,
        systemd: bool = False,
        disk_size: str = "2G",
    ) -> None:
        _check_name("fleet name", name)
        if not specs:
            raise FleetError("a fleet needs at least one guest")
        if len(specs) > MGMT_SUBNET.num_addresses - 12:
            raise FleetError(f"at most {MGMT_SUBNET.num_addresses - 12} guests")
        names = [s.name for s in specs]
        for n in names:
            if not _GUEST_NAME.match(n):
                raise FleetError(f"guest name {n!r}: lower-case letters, digits and '-', at most 32")
        if len(set(names)) != len(names):
            raise FleetError(f"duplicate guest names in {names}")
        self.name = name
        self.netns = f"{name}-mgmt"
        self.mem = mem
        self.boot_timeout = boot_timeout
        self.systemd, self.disk_size = systemd, disk_size
        self.gateway = str(MGMT_SUBNET[1])  # br0: the controller's address
        self.tmp: Path | None = None
        self.guests: list[FleetGuest] = []
        self._specs = list(specs)
        self._made_netns = False
        self._claimed = False  # up() recorded this process as the owner of the name
        self._signals: contextlib.ExitStack | None = None
        for i in range(len(specs)):
            _check_name("tap name", f"{name}-t{i}", 15)

    # -- context manager -------------------------------------------------
    def __enter__(self) -> Fleet:
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(cleanup_on_signals())  # SIGTERM -> __exit__ runs
        try:
            self.up()
        except BaseException:
            try:
                self.close()
            finally:
                self._signals.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self._signals is not None:
                self._signals.close()
                self._signals = None

    # -- paths and options for the controller ------------------------------
    @property
    def client_key(self) -> Path:
        assert self.tmp is not None, "fleet not up"
        return self.tmp / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        assert self.tmp is not None, "fleet not up"
        return self.tmp / "known_hosts"

    def ssh_options(self) -> list[str]:
        """ssh options that authenticate both ways with this run's keys only."""
        return [
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=30",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=8",  # a busy machine can stall a guest for a while
        ]  # fmt: skip

    def host_vars(self, guest: FleetGuest) -> dict[str, Any]:
        """Connection variables of *guest* for an Ansible inventory."""
        return {
            "ansible_host": guest.address,
            "ansible_user": "root",
            "ansible_python_interpreter": self.python_interpreter,
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": shlex.join(self.ssh_options()),
        }

    def ansible_env(self) -> dict[str, str]:
        """Environment for ansible-playbook against the fleet: host keys checked;
        ssh control sockets in the fleet's temp dir (their masters die with the
        mgmt netns at exit)."""
        assert self.tmp is not None, "fleet not up"
        return {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.tmp / "cp"),
            # Ansible's default minus -C: compression only costs CPU on a local bridge.
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
            "ANSIBLE_TIMEOUT": "60",  # its 10 s connect timeout is short for a loaded TCG guest
        }

    def controller_run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run argv in the mgmt netns (no check; defaults: capture_output, text,
        stdin=/dev/null)."""
        return _run(["ip", "netns", "exec", self.netns, *argv], check=False, **kw)

    def ssh_command(self, guest: FleetGuest) -> list[str]:
        """ssh to *guest* as root, to run in the mgmt netns (add the command)."""
        return ["ssh", *self.ssh_options(), "-o", "ControlMaster=no", "-i", str(self.client_key),
                f"root@{guest.address}"]  # fmt: skip

    def ssh(self, guest: FleetGuest, command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a shell command on *guest* as root over SSH (no check)."""
        return self.controller_run([*self.ssh_command(guest), command], timeout=timeout)

    # -- lifecycle -------------------------------------------------------
    def up(self) -> Fleet:
        if claim(f"fleet-{self.name}"):
            print(f"fleet {self.name}: removing what a dead run left", file=sys.stderr)
            self._remove_leftovers()
        self._claimed = True
        if Path("/run/netns", self.netns).exists():
            raise FleetError(f"netns {self.netns} exists already (stale fleet? ip netns del {self.netns})")
        self.tmp = Path(tempfile.mkdtemp(prefix="netlb-fleet-"))
        (self.tmp / "cp").mkdir()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "netlb-fleet-controller",
              "-f", str(self.client_key)])  # fmt: skip
        known_hosts = []
        for i, spec in enumerate(self._specs):
            key = self.tmp / f"host_key_{spec.name}"
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"netlb-fleet-{spec.name}", "-f", str(key)])
            pub = " ".join(key.with_name(key.name + ".pub").read_text().split()[:2])
            address = str(MGMT_SUBNET[10 + i])
            known_hosts.append(f"{address} {pub}\n")
            self.guests.append(FleetGuest(spec, address, f"{self.name}-t{i}", f"02:6e:6c:62:00:{i + 1:02x}", key, pub))
        self.known_hosts.write_text("".join(known_hosts))

        _run(["ip", "netns", "add", self.netns])
        self._made_netns = True
        ip = ["ip", "-n", self.netns]
        _run([*ip, "link", "set", "lo", "up"])
        _run([*ip, "link", "add", "br0", "type", "bridge"])
        _run([*ip, "addr", "add", f"{self.gateway}/{MGMT_SUBNET.prefixlen}", "dev", "br0"])
        _run([*ip, "link", "set", "br0", "up"])
        self._boot()
        for g in self.guests:  # the whole path the controller will take
            r = self.ssh(g, "true", timeout=120)
            if r.returncode != 0:
                raise FleetError(f"ssh to guest {g.name} ({g.address}) failed: {r.stderr.strip()}")
        return self

    def _boot(self) -> None:
        """Start every guest with its NIC on br0; return once each reported READY."""
        ip = ["ip", "-n", self.netns]
        for g in self.guests:
            _run([*ip, "tuntap", "add", g.tap, "mode", "tap"])
            _run([*ip, "link", "set", g.tap, "master", "br0", "up"])

        for g in self.guests:  # all boot at the same time
            disk = None
            if self.systemd:
                assert self.tmp is not None
                disk = str(self.tmp / f"disk-{g.name}.img")
                make_disk(disk, self.disk_size)
            g.vm = VmGuest(
                f"exec {shlex.quote(sys.executable)} -m tests.lab.fleet guest",
                mem=self.mem,
                env={"NETLB_FLEET_GUEST": json.dumps(self._guest_config(g))},
                cwd=REPO_ROOT,
                netns=self.netns,
                nics=[Nic(g.tap, g.mac, MGMT_DEV)],
                disk=disk,
                allow_reboot=self.systemd,
                init="systemd-service" if self.systemd else "script",
                kernel_series=g.spec.kernel_series,
            )
            g.vm.start()
        self._wait_until_ready(self.guests)

    def restart(self, guest: FleetGuest, timeout: float | None = None) -> None:
        """Reboot *guest* for real (`systemctl reboot`; systemd boots again on the same
        disk), then wait until its lab and sshd are back. Needs Fleet(systemd=True)."""
        if not self.systemd:
            raise FleetError("restart needs a fleet with systemd=True (a disk that survives the reboot)")
        seen = {guest.name: self._ready_reports(guest)}
        r = self.ssh(guest, "systemctl --no-block reboot", timeout=60)
        if r.returncode != 0:
            raise FleetError(f"systemctl reboot on {guest.name}: {r.stderr.strip()}")
        self._wait_until_ready([guest], seen, timeout)
        r = self.ssh(guest, "true", timeout=120)
        if r.returncode != 0:
            raise FleetError(f"ssh to guest {guest.name} after its reboot failed: {r.stderr.strip()}")

    @staticmethod
    def _ready_reports(g: FleetGuest) -> int:
        assert g.vm is not None
        return sum(ln.startswith(READY) for ln in g.vm.output().splitlines())

    def _guest_config(self, g: FleetGuest) -> dict[str, Any]:
        return {
            "name": g.name,
            "address": f"{g.address}/{MGMT_SUBNET.prefixlen}",
            "uplinks": [{"interface": u.interface, "rate_mbit": u.rate_mbit} for u in g.spec.uplinks],
            "host_key": g.host_key.read_text(),
            "authorized_key": self.client_key.with_name(self.client_key.name + ".pub").read_text(),
        }

    def _wait_until_ready(self, guests: list[FleetGuest], seen: dict[str, int] | None = None,
                          timeout: float | None = None) -> None:
        """Until each guest's lab reported READY (one report more than *seen*: after a reboot)."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        waiting = list(guests)
        seen = seen or {}
        while waiting:
            for g in list(waiting):
                assert g.vm is not None
                out = g.vm.output()
                ready = [ln for ln in out.splitlines() if ln.startswith(READY)][seen.get(g.name, 0):]
                if ready:
                    report = json.loads(ready[0][len(READY):])
                    fields = Uplink.__dataclass_fields__
                    g.uplinks = [Uplink(**{k: v for k, v in u.items() if k in fields}) for u in report["uplinks"]]
                    waiting.remove(g)
                elif FAILED in out or g.vm.has_exited():
                    raise FleetError(f"guest {g.name} did not come up:\n{out[-4000:]}"
                                     + g.vm.failure_notes("guest stopped before it was ready"))
            if waiting and time.monotonic() > deadline:
                g = waiting[0]
                assert g.vm is not None
                raise FleetError(f"guest {g.name} not ready after {self.boot_timeout:g} s:\n{g.vm.output()[-4000:]}"
                                 + g.vm.failure_notes("boot timeout"))
            time.sleep(0.2)

    def close(self) -> None:
        """Idempotent: kill the guests, then everything left in the mgmt netns,
        delete the taps and the netns, remove the temp dir."""
        errors = self._stop_guests()
        if self._made_netns and Path("/run/netns", self.netns).exists():
            try:
                _kill_netns_processes(self.netns)
            except LabError as e:
                errors.append(str(e))
            for g in self.guests:
                _run(["ip", "-n", self.netns, "link", "del", g.tap], check=False)
            r = _run(["ip", "netns", "del", self.netns], check=False)
            if r.returncode != 0:
                errors.append(f"ip netns del {self.netns}: {r.stderr.strip()}")
            else:
                self._made_netns = False
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if errors:
            raise FleetError("; ".join(errors))
        if self._claimed:
            release(f"fleet-{self.name}")
            self._claimed = False

    def _remove_leftovers(self) -> None:
        """The mgmt netns of a run that died owning this fleet's name, with what
        lived in it (its guests' QEMUs, ssh masters)."""
        if Path("/run/netns", self.netns).exists():
            _kill_netns_processes(self.netns)
            _run(["ip", "netns", "del", self.netns])

    def _stop_guests(self) -> list[str]:
        errors = []
        for g in self.guests:
            if g.vm is not None:
                try:
                    g.vm.close()
                except Exception as e:  # keep cleaning up the others
                    errors.append(f"guest {g.name}: {e}")
        return errors


# -- guest side --------------------------------------------------------------
SSHD_DIR = Path("/run/netlb-fleet")


def _start_sshd(config: dict[str, Any]) -> None:
    """sshd on the management address only, root by key only, run's host key."""
    SSHD_DIR.mkdir(mode=0o700, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    for fname, text in (("host_key", config["host_key"]), ("authorized_keys", config["authorized_key"])):
        path = SSHD_DIR / fname
        path.write_text(text)
        path.chmod(0o600)
    address = config["address"].split("/")[0]
    (SSHD_DIR / "sshd_config").write_text(
        f"ListenAddress {address}\n"
        f"HostKey {SSHD_DIR}/host_key\n"
        f"AuthorizedKeysFile {SSHD_DIR}/authorized_keys\n"
        f"PidFile {SSHD_DIR}/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "MaxSessions 50\n"  # Ansible multiplexes its tasks over one connection
        "MaxStartups 50\n"
        "Subsystem sftp internal-sftp\n"
    )
    # Daemonizes once it listens: when this returns, the controller can connect.
    r = subprocess.run(["/usr/sbin/sshd", "-f", str(SSHD_DIR / "sshd_config"), "-E", str(SSHD_DIR / "sshd.log")],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        log = (SSHD_DIR / "sshd.log").read_text() if (SSHD_DIR / "sshd.log").exists() else ""
        raise FleetError(f"sshd failed ({r.returncode}): {r.stderr.strip()} {log.strip()}")


def _notify_systemd_ready() -> None:
    """sd_notify READY=1 when systemd runs the guest's lab as a Type=notify service."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect("\0" + path[1:] if path.startswith("@") else path)
        sock.sendall(b"READY=1")


def guest_main() -> int:
    """Inside a guest: uplink lab, management NIC, sshd; report; stay up."""
    try:
        config = json.loads(os.environ["NETLB_FLEET_GUEST"])
        socket.sethostname(config["name"])
        uplinks = [Uplink(u["interface"], u["rate_mbit"]) for u in config["uplinks"]]
        if uplinks:  # none: a bare host whose test (molecule's prepare) builds its own
            Lab(uplinks, name="fl", client_netns=None).up()  # never taken down: dies with the guest
        # Address and link route only: the lab's default route stays the only one.
        _run(["ip", "addr", "add", config["address"], "dev", MGMT_DEV])
        _run(["ip", "link", "set", MGMT_DEV, "up"])
        # sshd runs commands with the login shell; the host's /root/.bashrc (seen
        # through the overlay) is sourced by bash even for `ssh host cmd`, which in
        # an emulated guest costs seconds per session (measured in UML: 4.4 s -> 0.7 s for `echo hi`).
        # /bin/sh reads no start-up file; the change lives in the overlay only.
        _run(["usermod", "--shell", "/bin/sh", "root"])
        _start_sshd(config)
    except Exception:
        print(FAILED + traceback.format_exc(), flush=True)
        return 1
    print(READY + json.dumps({"uplinks": [asdict(u) for u in uplinks]}), flush=True)
    _notify_systemd_ready()
    while True:
        signal.pause()


def _parse_uplinks(text: str) -> list[Uplink]:
    """"usb0:40,wlp1s0:20" -> uplinks; "" -> none (a bare guest)."""
    uplinks = []
    for item in filter(None, text.split(",")):
        interface, _, rate = item.partition(":")
        uplinks.append(Uplink(interface, float(rate) if rate else None))
    return uplinks


def fleet_state(fleet: Fleet) -> dict[str, Any]:
    """What a controller outside the fleet (molecule's create) needs to reach it."""
    assert fleet.tmp is not None
    return {
        "pid": os.getpid(),
        "netns": fleet.netns,
        "client_key": str(fleet.client_key),
        "known_hosts": str(fleet.known_hosts),
        "ssh_options": fleet.ssh_options(),
        # ssh from the host's own netns: the management bridge lives in the fleet's netns only.
        "proxy_command": f"ip netns exec {fleet.netns} nc %h %p",
        "guests": [{"name": g.name, "address": g.address, "uplinks": [asdict(u) for u in g.uplinks]}
                   for g in fleet.guests],
    }  # fmt: skip


def _serve(fleet: Fleet, state_file: Path | None) -> None:
    for g in fleet.guests:
        print(f"{g.name}: {shlex.join(['ip', 'netns', 'exec', fleet.netns, *fleet.ssh_command(g)])}", flush=True)
    if state_file is not None:
        tmp = state_file.with_name(state_file.name + ".tmp")
        tmp.write_text(json.dumps(fleet_state(fleet), indent=2))
        tmp.rename(state_file)  # whole or absent: a waiting --detach never reads half a file
    print("up; Ctrl-C or SIGTERM tears the fleet down", flush=True)
    while True:
        time.sleep(3600)


def _detach(argv: list[str], state_file: Path, log: Path, timeout: float) -> int:
    """Run `up` again in its own session; return once it is ready (0) or gone (1)."""
    state_file.unlink(missing_ok=True)
    with log.open("wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "tests.lab.fleet", *argv], cwd=REPO_ROOT,
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not state_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            if child.poll() is None:
                child.terminate()  # its own cleanup removes what it made
                child.wait(60)
            print(f"fleet did not come up (see {log}):\n{log.read_text()[-4000:]}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(state_file.read_text())
    return 0


def _down(state_file: Path, timeout: float = 120) -> int:
    """Stop a fleet started with --state: SIGTERM, then wait until it cleaned up."""
    if not state_file.exists():
        print(f"no fleet state at {state_file}: nothing to do")
        return 0
    state = json.loads(state_file.read_text())
    pid, netns = state["pid"], state["netns"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        print(f"fleet process {pid} still running after {timeout:g} s", file=sys.stderr)
        return 1
    if Path("/run/netns", netns).exists():
        print(f"netns {netns} left behind by process {pid}", file=sys.stderr)
        return 1
    state_file.unlink()
    print(f"fleet {netns} removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab.fleet", description="fleet of VM lab guests over SSH")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="boot guests, print how to reach them, run until Ctrl-C or SIGTERM")
    up.add_argument("--guests", type=int, default=2, help="g0, g1, ... (when no --guest is given)")
    up.add_argument("--guest", action="append", default=[], metavar="NAME", help="a guest by name (repeatable)")
    up.add_argument("--name", default="nlbfleet")
    up.add_argument("--uplinks", default="usb0:40,wlp1s0:20",
                    help="each guest's uplink lab, IFACE:MBIT,...; '' = none (bare guests)")
    up.add_argument("--systemd", action="store_true",
                    help="systemd as PID 1 on a disk per guest (a reboot inside keeps its files)")
    up.add_argument("--state", type=Path, help="write how to reach the fleet here (JSON) once it is up")
    up.add_argument("--detach", action="store_true", help="run in the background; return once up (needs --state)")
    up.add_argument("--log", type=Path, help="--detach: the fleet's output (default: STATE.log)")
    up.add_argument("--timeout", type=float, default=600, help="--detach: give up after this many seconds")
    down = sub.add_parser("down", help="stop a fleet started with --state and wait for its cleanup")
    down.add_argument("--state", type=Path, required=True)
    sub.add_parser("guest", help="(inside a guest started by the fleet)")
    a = p.parse_args(argv)
    if a.cmd == "guest":
        return guest_main()
    if a.cmd == "down":
        return _down(a.state.resolve())
    if a.detach:
        if a.state is None:
            p.error("--detach needs --state")
        state = a.state.resolve()
        rest = ["up", "--name", a.name, "--uplinks", a.uplinks, "--state", str(state), "--guests", str(a.guests)]
        rest += ["--systemd"] if a.systemd else []
        for n in a.guest:
            rest += ["--guest", n]
        return _detach(rest, state, (a.log or state.with_name(state.name + ".log")).resolve(), a.timeout)
    names = a.guest or [f"g{i}" for i in range(a.guests)]
    specs = [GuestSpec(n, _parse_uplinks(a.uplinks)) for n in names]
    try:
        with Fleet(specs, name=a.name, systemd=a.systemd) as fleet:
            _serve(fleet, a.state.resolve() if a.state else None)
    except KeyboardInterrupt:
        print("\nfleet removed", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"fleet removed ({e})", file=sys.stderr)
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
