"""Systemd containers on the host kernel, reachable over SSH: a fleet at native speed.

Everything that does not need VRF (or runs where the host kernel has it) runs here
rather than in the VM lab, where Python is 6-16x slower. ``ContainerFleet`` has the
interface of ``tests.lab.fleet.Fleet`` (same GuestSpec, ssh(), host_vars(),
controller_run(), ansible_env()); only the guests differ:

- the image is Debian 12 built locally with mmdebstrap from the apt mirror (no container
  registry is reachable here) and imported with ``podman import``; it is cached under the
  name ``localhost/netlb-lab:<digest of its recipe>`` and rebuilt when the recipe changes;
- each guest is ``podman --runtime runc run --privileged --cgroupns=private
  --systemd=always --network none`` with systemd as PID 1 (crun refuses hybrid cgroup
  layouts); its network namespace is named on the host (``ip netns attach``), the
  management NIC ``mgmt0`` is a veth from the fleet's bridge, and the uplink lab
  (tests.lab.netlab) puts the uplinks' client ends into it, with the "internet" in a
  netns of its own on the host. No traffic can reach anything but the lab's own veths;
- the managed hosts have python3 with python3-pyroute2, bpftool, iproute2, iperf3 and
  sshd, and no clang, llvm or libbpf-dev: the role builds its object on the controller.

``restart(guest)`` restarts a container (a host reboot, as far as a container can have
one): systemd boots again on the same files; the fleet puts its NICs back, as the
hardware of a rebooted host would come back.

Cleanup as for the VM fleet: containers, attached namespaces, the labs, the bridge and
the temp dir go in every case (exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from .fleet import MGMT_DEV, MGMT_SUBNET, Fleet, FleetError, FleetGuest, GuestSpec
from .netlab import Lab, Uplink, _run
from .vm import REPO_ROOT

IMAGE_REPO = "localhost/netlb-lab"
PACKAGES = ["systemd-sysv", "dbus", "openssh-server", "python3", "python3-pyroute2", "iproute2",
            "iperf3", "bpftool", "procps", "kmod", "iputils-ping"]  # fmt: skip
SUITE = "bookworm"
MIRRORS = [f"deb http://deb.debian.org/debian {SUITE} main",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main"]  # fmt: skip
# Run in the image once, at build time.
CUSTOMIZE = r"""
set -e
R="$1"
# Each ssh session under PAM waits ~20 s on a logind user session in a container.
printf 'UsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
    >"$R/etc/ssh/sshd_config.d/netlb-lab.conf"
# Host keys are the fleet's, handed to each container at start.
rm -f "$R"/etc/ssh/ssh_host_*
mkdir -p "$R/root/.ssh" && chmod 700 "$R/root/.ssh"
# Nothing here needs these, and they only slow a boot down.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$R/etc/systemd/system/$unit"
done
echo netlb-lab >"$R/etc/hostname"
"""


def podman() -> list[str]:
    # crun refuses this host's hybrid cgroup layout ("cgroups in hybrid mode not supported").
    return ["podman", "--runtime", "runc"]


def containers_available() -> str | None:
    """None when containers can run here, else the reason (one line)."""
    for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            return f"{tool} not found: apt-get install {pkg} (or run `make deps`)"
    return None


def image_name() -> str:
    recipe = json.dumps([SUITE, PACKAGES, MIRRORS, CUSTOMIZE]).encode()
    return f"{IMAGE_REPO}:{hashlib.sha256(recipe).hexdigest()[:12]}"


def ensure_image() -> str:
    """The lab image, built (about 45 s) when this recipe has none yet."""
    name = image_name()
    if subprocess.run([*podman(), "image", "exists", name], check=False).returncode == 0:
        return name
    build = Path(REPO_ROOT, ".build", "containers")
    build.mkdir(parents=True, exist_ok=True)
    tar = build / "rootfs.tar"
    hook = build / "customize.sh"
    hook.write_text(CUSTOMIZE)
    r = subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                        f"--customize-hook=sh {hook} \"$1\"", SUITE, str(tar), *MIRRORS],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    if r.returncode != 0:
        tar.unlink(missing_ok=True)
        raise FleetError(f"mmdebstrap failed (is the Debian mirror reachable?): {r.stderr.strip()[-600:]}")
    try:
        _run([*podman(), "import", "--change", 'CMD ["/sbin/init"]', str(tar), name])
    finally:
        tar.unlink(missing_ok=True)
    # Older recipes' images: not needed any more.
    old = _run([*podman(), "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO], check=False)
    for image in old.stdout.split():
        if image != name:
            _run([*podman(), "rmi", image], check=False)
    return name


def _ulimits() -> list[str]:
    """runc fails ("error setting rlimit") above the caller's own hard limits, and here
    also for nproc above a few thousand."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 20000)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


class ContainerFleet(Fleet):
    """``with ContainerFleet([GuestSpec(...), ...]) as fleet:`` as with Fleet."""

    python_interpreter = "/usr/bin/python3"  # the image's python3, with python3-pyroute2

    def __init__(self, specs: Sequence[GuestSpec], *, name: str = "nlbct", boot_timeout: float = 120) -> None:
        super().__init__(specs, name=name, boot_timeout=boot_timeout)
        self.image: str | None = None
        self._containers: list[str] = []
        self._labs: dict[str, Lab] = {}

    def container(self, guest: FleetGuest) -> str:
        return f"{self.name}-{guest.name}"

    def guest_netns(self, guest: FleetGuest) -> str:
        """The container's network namespace, by its name on the host."""
        return f"{self.name}-{guest.name}"

    def lab(self, guest: FleetGuest) -> Lab:
        """The uplink lab of *guest* (its internet side is a netns on this machine)."""
        return self._labs[guest.name]

    def exec(self, guest: FleetGuest, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run argv in the container (podman exec; no check)."""
        if "input" in kw:
            kw["stdin"] = None
        return _run([*podman(), "exec", "-i", self.container(guest), *argv], check=False, **kw)

    def _boot(self) -> None:
        problem = containers_available()
        if problem:
            raise FleetError(problem)
        self.image = ensure_image()
        for g in self.guests:
            stale = self.container(g)
            if _run([*podman(), "container", "exists", stale], check=False).returncode == 0:
                raise FleetError(f"container {stale} exists already (stale fleet? podman rm -f {stale})")
        for g in self.guests:
            name = self.container(g)
            self._containers.append(name)
            _run([*podman(), "run", "-d", "--name", name, "--hostname", g.name, "--privileged",
                  "--cgroupns=private", "--systemd=always", "--network", "none", *_ulimits(),
                  self.image, "/sbin/init"])  # fmt: skip
        for g in self.guests:
            self._wire(g)
        deadline = time.monotonic() + self.boot_timeout
        for g in self.guests:
            self._wait_for_sshd(g, deadline)

    def _wire(self, g: FleetGuest) -> None:
        """Name the container's netns, give it mgmt0 and its uplinks, hand it the keys."""
        pid = _run([*podman(), "inspect", "-f", "{{.State.Pid}}", self.container(g)]).stdout.strip()
        netns = self.guest_netns(g)
        if Path("/run/netns", netns).exists():
            _run(["ip", "netns", "del", netns], check=False)  # the previous boot's namespace
        _run(["ip", "netns", "attach", netns, pid])
        ip = ["ip", "-n", self.netns]
        _run([*ip, "link", "add", g.tap, "type", "veth", "peer", "name", MGMT_DEV, "netns", netns])
        _run([*ip, "link", "set", g.tap, "master", "br0", "up"])
        _run(["ip", "-n", netns, "addr", "add", f"{g.address}/{MGMT_SUBNET.prefixlen}", "dev", MGMT_DEV])
        _run(["ip", "-n", netns, "link", "set", MGMT_DEV, "up"])
        _run(["ip", "-n", netns, "link", "set", "lo", "up"])
        if g.spec.uplinks:
            lab_name = f"{self.name}{self.guests.index(g)}"
            old = self._labs.pop(g.name, None)
            if old is not None:
                old.down()
            lab = Lab([Uplink(u.interface, u.rate_mbit) for u in g.spec.uplinks], name=lab_name,
                      client_netns=netns, adopt_client_netns=True)  # fmt: skip
            self._labs[g.name] = lab
            lab.up()
            g.uplinks = lab.uplinks
        # systemd mounts bpffs on a host, not in a container: as a host would have it.
        self.exec(g, ["sh", "-c", "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf"])
        keys = {"/etc/ssh/ssh_host_ed25519_key": g.host_key.read_text(),
                "/root/.ssh/authorized_keys": self.client_key.with_name(self.client_key.name + ".pub").read_text()}
        for path, text in keys.items():
            r = self.exec(g, ["sh", "-c", f"umask 077; cat > {path}"], input=text)
            if r.returncode != 0:
                raise FleetError(f"{self.container(g)}: writing {path}: {r.stderr.strip()}")

    def _wait_for_sshd(self, g: FleetGuest, deadline: float) -> None:
        # sshd may have started before its host key arrived: restart it once the key is there.
        while True:
            state = self.exec(g, ["systemctl", "is-system-running"]).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise FleetError(f"{self.container(g)}: systemd not up ({state!r})")
            time.sleep(0.3)
        self.exec(g, ["systemctl", "reset-failed", "ssh.service"])  # its start limit, hit while keyless
        r = self.exec(g, ["systemctl", "restart", "ssh.service"])
        if r.returncode != 0:
            journal = self.exec(g, ["journalctl", "-u", "ssh", "--no-pager", "-n", "20"]).stdout
            raise FleetError(f"{self.container(g)}: sshd did not start: {r.stderr.strip()}\n{journal}")

    def restart(self, guest: FleetGuest, timeout: float = 120) -> None:
        """Restart the container (systemd boots again on the same files), then put its
        NICs back and wait for sshd."""
        _run([*podman(), "restart", "-t", "10", self.container(guest)])
        _run(["ip", "-n", self.netns, "link", "del", guest.tap], check=False)
        self._wire(guest)
        self._wait_for_sshd(guest, time.monotonic() + timeout)

    def _remove_leftovers(self) -> None:
        """Also the containers and their named namespaces (the labs remove their own)."""
        for g in self._specs:
            name = f"{self.name}-{g.name}"
            _run([*podman(), "rm", "-f", "-t", "0", "--ignore", name], check=False)
            if Path("/run/netns", name).exists():
                _run(["ip", "netns", "del", name], check=False)
        super()._remove_leftovers()

    def _stop_guests(self) -> list[str]:
        errors = []
        for name in self._containers:
            r = _run([*podman(), "rm", "-f", "-t", "0", name], check=False)
            if r.returncode != 0 and "no such container" not in r.stderr.lower():
                errors.append(f"podman rm {name}: {r.stderr.strip()}")
        self._containers.clear()
        for lab in self._labs.values():
            try:
                lab.down()
            except Exception as e:  # keep cleaning up the others
                errors.append(f"lab {lab.name}: {e}")
        self._labs.clear()
        for g in self.guests:
            if Path("/run/netns", self.guest_netns(g)).exists():
                _run(["ip", "netns", "del", self.guest_netns(g)], check=False)
        return errors


def main() -> int:
    """python -m tests.lab.containers: build the image if needed; print its name on
    stdout (what `make deps` and the molecule run use), the time on stderr."""
    problem = containers_available()
    if problem:
        print(f"[netlb-containers] {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        name = ensure_image()
    except (FleetError, subprocess.CalledProcessError) as e:
        print(f"[netlb-containers] {e}", file=sys.stderr)
        return 1
    print(name)
    print(f"[netlb-containers] image {name} ready ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
