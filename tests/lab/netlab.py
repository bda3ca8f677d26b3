"""Emulated uplinks in network namespaces.

Topology (``name`` defaults to "nlb")::

    client (<name>-client netns, or the current netns inside a VM lab guest)
      usb0    192.0.2.2/24     2001:db8:1::2/64  ==veth==  <name>-up0  .1 / ::1  \\
      wlp1s0  198.51.100.2/24  2001:db8:2::2/64  ==veth==  <name>-up1  .1 / ::1   > <name>-inet
      ...                                                                        /  100.64.0.1/32
                                                                                    2001:db8:ffff::1/128
                                                                                    iperf3 -s

The client's main table has default routes (v4 and v6) via uplink 0 only; other
uplinks just have their address and link route.  Optional tbf shaping on both
ends of a veth.  All configuration is done with ip/tc inside namespaces the lab
creates: the host's own interfaces, routes and rules are never touched.

A state file /run/netlb-lab/<name>.json lets ``python -m tests.lab down --name N``
clean up a lab left behind by another process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._common import claim, cleanup_on_signals, release, stop_group

SERVER4 = "100.64.0.1"
SERVER6 = "2001:db8:ffff::1"
STATE_DIR = Path("/run/netlb-lab")
IPERF_PORT = 5201

_FIRST_V4 = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
IFNAMSIZ = 15


class LabError(RuntimeError):
    pass


class CommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes stderr (what ip/tc complain about)."""

    def __str__(self) -> str:
        err = self.stderr if isinstance(self.stderr, str) else (self.stderr or b"").decode(errors="replace")
        cmd = " ".join(self.cmd) if isinstance(self.cmd, list) else str(self.cmd)
        return f"command failed ({self.returncode}): {cmd}" + (f"\n{err.strip()}" if err.strip() else "")


@dataclass
class Uplink:
    interface: str  # client-side ifname, e.g. "usb0", "wlp1s0"
    rate_mbit: float | None = None  # tbf rate for both directions; None = unshaped
    # Filled in by Lab.up():
    address: str = ""  # client IPv4
    prefixlen: int = 24
    gateway: str = ""  # gateway IPv4 (internet side)
    address6: str = ""  # client IPv6 (/64)
    gateway6: str = ""
    peer: str = ""  # internet-side ifname


def kernel_has_vrf() -> bool:
    """Can this kernel make VRF devices (driver loaded, or installed as a module
    and not refused by module_blacklist=)?"""
    if os.path.isdir("/sys/module/vrf"):
        return True
    try:
        with open("/proc/cmdline") as handle:
            for arg in handle.read().split():
                if arg.startswith("module_blacklist=") and "vrf" in arg.split("=", 1)[1].split(","):
                    return False
    except OSError:
        pass
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.dep") as handle:
            return "/vrf.ko" in handle.read()
    except OSError:
        return False


THROWAWAY_NETNS = "NETLB_THROWAWAY_NETNS"


def in_throwaway_netns() -> bool:
    """Is this process in the namespace that run_in_netns made for it (named in
    $NETLB_THROWAWAY_NETNS), not the machine's own?"""
    name = os.environ.get(THROWAWAY_NETNS, "")
    if not name or "/" in name:
        return False
    try:
        made, mine = os.stat(Path("/run/netns", name)), os.stat("/proc/self/ns/net")
    except OSError:
        return False
    try:
        machine = os.stat("/proc/1/ns/net")  # not readable in some sandboxes
        if (machine.st_dev, machine.st_ino) == (mine.st_dev, mine.st_ino):
            return False
    except OSError:
        pass
    return (made.st_dev, made.st_ino) == (mine.st_dev, mine.st_ino)


# `ip netns exec` gives its command a mount namespace of its own with a fresh /sys (so
# /sys/class/net shows the namespace's links), which hides cgroup2 and bpffs: mounted
# again there, private to it (pins made there go with it).
_NETNS_MOUNTS = ("mountpoint -q /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 125; "
                 "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 125; exec \"$@\"")


def run_in_netns(argv: Sequence[str], prefix: str = "nlbt", timeout: float | None = None,
                 cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run *argv* in a network namespace made for it and deleted afterwards, with only
    lo: what it does to links, routes and rules stays there. It also has a mount
    namespace of its own (`ip netns exec`), with cgroup2 on /sys/fs/cgroup and a bpffs
    of its own on /sys/fs/bpf. Output captured (text), no check.

    On timeout, Ctrl-C or SIGTERM the command gets SIGTERM and 30 s to clean up
    (the labs it made inside are invisible from here), then its process group is killed."""
    name = f"{prefix}-{os.getpid()}"
    _check_name("netns name", name)
    _run(["ip", "netns", "add", name])
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        env = {**os.environ, THROWAWAY_NETNS: name}
        proc = subprocess.Popen(["ip", "netns", "exec", name, "sh", "-c", _NETNS_MOUNTS, "sh", *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=cwd, start_new_session=True)  # fmt: skip
        try:
            with cleanup_on_signals():
                out, err = proc.communicate(timeout=timeout)
        except BaseException:
            stop_group(proc)
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        _kill_netns_processes(name)
        _run(["ip", "netns", "del", name], check=False)


def uplink_subnets(i: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
    """Address plan of uplink *i*: documentation prefixes first, then 100.65.<i>.0/24."""
    v4 = _FIRST_V4[i] if i < len(_FIRST_V4) else f"100.65.{i}.0/24"
    if i > 255:
        raise LabError("at most 256 uplinks")
    return ipaddress.IPv4Network(v4), ipaddress.IPv6Network(f"2001:db8:{i + 1}::/64")


def tbf_params(rate_mbit: float) -> list[str]:
    """tbf arguments for *rate_mbit* (counted on L2 frames, like a real link).

    iperf3 then reports ~95.6% of the rate: the TCP/IP/Ethernet headers of a
    1514-byte frame carrying 1448 payload bytes.  That ceiling was reached with
    any bucket of 3+ frames and latency 50-100 ms (measured: 38.2-38.4 of 40,
    19.1-19.2 of 20 Mbit/s, -P1 and -P4).  The bucket holds a few full frames
    (tbf splits veth GSO packets to MTU size) and >= 4 ms of traffic so timer
    slack wastes no tokens; the 50 ms queue absorbs TCP bursts."""
    burst_bytes = max(16 * 1514, int(rate_mbit * 1e6 / 8 * 0.004))  # >= 4 ms of traffic
    return ["rate", f"{rate_mbit:g}mbit", "burst", str(burst_bytes), "latency", "50ms"]


def _check_name(kind: str, value: str, maxlen: int | None = None) -> None:
    if not _NAME.match(value) or "/" in value:
        raise LabError(f"invalid {kind} {value!r}")
    if maxlen is not None and len(value) > maxlen:
        raise LabError(f"{kind} {value!r} longer than {maxlen} characters")


def _run(argv: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[Any]:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    r = subprocess.run(list(argv), check=False, **kw)
    if check and r.returncode != 0:
        raise CommandError(r.returncode, list(argv), r.stdout, r.stderr)
    return r


class Lab:
    """Context manager: ``with Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)]) as lab: ...``"""

    def __init__(
        self,
        uplinks: Iterable[Uplink],
        *,
        name: str = "nlb",
        client_netns: str | None = "auto",
        ipv6: bool = True,
        server: bool = True,
        adopt_client_netns: bool = False,
    ) -> None:
        self.uplinks = list(uplinks)
        if not self.uplinks:
            raise LabError("at least one uplink is needed")
        _check_name("lab name", name)
        self.name = name
        self.inet_netns = f"{name}-inet"
        if client_netns == "auto":
            client_netns = f"{name}-client"
        elif client_netns is None and os.environ.get("NETLB_IN_VM") != "1" and not in_throwaway_netns():
            # Using the current netns would rewire the machine's own network.
            raise LabError(
                "client_netns=None puts the uplinks into the current network namespace; "
                "only allowed inside a VM lab guest (NETLB_IN_VM=1) or a throw-away namespace (run_in_netns)"
            )
        if client_netns is not None:
            _check_name("netns name", client_netns)
        self.client_netns: str | None = client_netns
        # An existing client netns (a container's): neither made nor deleted here, only
        # the uplinks this lab adds to it.
        self.adopt_client_netns = adopt_client_netns
        if adopt_client_netns and (client_netns is None or not Path("/run/netns", client_netns).exists()):
            raise LabError(f"adopt_client_netns: no netns {client_netns!r} to adopt")
        self.ipv6 = ipv6
        self.server = server
        seen: set[str] = set()
        for i, u in enumerate(self.uplinks):
            _check_name("interface name", u.interface, IFNAMSIZ)
            if u.interface in seen:
                raise LabError(f"duplicate interface {u.interface}")
            seen.add(u.interface)
            if u.rate_mbit is not None and u.rate_mbit <= 0:
                raise LabError(f"bad rate for {u.interface}: {u.rate_mbit}")
            u.peer = f"{name}-up{i}"
            _check_name("internet-side interface name", u.peer, IFNAMSIZ)
        # Client-side links created in the *current* netns (client_netns=None):
        # the only things down() may delete there.
        self._own_links: list[str] = []
        self._made_netns: list[str] = []
        self._claimed = False  # up() recorded this process as the owner of the name
        self._signals: contextlib.ExitStack | None = None
        self._server_proc: subprocess.Popen[bytes] | None = None
        self.is_up = False

    # -- context manager -------------------------------------------------
    def __enter__(self) -> Lab:
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(cleanup_on_signals())  # SIGTERM -> __exit__ runs
        try:
            self.up()
        except BaseException:
            self._signals.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.down()
        finally:
            if self._signals is not None:
                self._signals.close()
                self._signals = None

    # -- commands --------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"{self.name}.json"

    def _ip(self, ns: str | None, *args: str) -> list[str]:
        return ["ip", *(["-n", ns] if ns else []), *args]

    def _tc(self, ns: str | None, *args: str) -> list[str]:
        return ["tc", *(["-n", ns] if ns else []), *args]

    def _in(self, ns: str | None, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)

    def client_exec(self, argv: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run argv in the client netns.  Defaults: capture_output, text, stdin=/dev/null;
        a failure (check=True) raises CommandError, whose message includes stderr."""
        return _run(self._in(self.client_netns, argv), check=check, **kw)

    def inet_exec(self, argv: Sequence[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run argv in the internet netns (same defaults as client_exec)."""
        return _run(self._in(self.inet_netns, argv), check=check, **kw)

    # -- lifecycle -------------------------------------------------------
    def up(self) -> Lab:
        if self.is_up:
            return self
        if claim(f"lab-{self.name}"):
            self._remove_leftovers()
        self._claimed = True
        if self.state_file.exists():
            raise LabError(
                f"lab {self.name!r} seems up already ({self.state_file}); "
                f"run: python -m tests.lab down --name {self.name}"
            )
        try:
            self._write_state()  # first, so that a crash half-way can be cleaned up by name
            self._up()
            self.is_up = True
            self._write_state()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in (self.inet_netns, None if self.adopt_client_netns else self.client_netns):
            if ns is None:
                continue
            if Path("/run/netns", ns).exists():
                raise LabError(f"netns {ns} exists already (stale lab? python -m tests.lab down --name {self.name})")
            _run(["ip", "netns", "add", ns])
            self._made_netns.append(ns)
            self._write_state()
        inet, client = self.inet_netns, self.client_netns

        # rp_filter off before the veths exist: new interfaces inherit "default".
        # A multi-homed client answers on one uplink what came in on another.
        for ns in (inet, client):
            cmd = ["sysctl", "-qw"]
            cmd += [f"net.ipv4.conf.{c}.rp_filter=0" for c in ("all", "default")]
            _run(self._in(ns, cmd))
            _run(self._ip(ns, "link", "set", "lo", "up"))

        _run(self._ip(inet, "addr", "add", f"{SERVER4}/32", "dev", "lo"))
        if self.ipv6:
            _run(self._ip(inet, "-6", "addr", "add", f"{SERVER6}/128", "dev", "lo"))

        for i, u in enumerate(self.uplinks):
            net4, net6 = uplink_subnets(i)
            u.gateway, u.address, u.prefixlen = str(net4[1]), str(net4[2]), net4.prefixlen
            if self.ipv6:
                u.gateway6, u.address6 = str(net6[1]), str(net6[2])
            # Both ends are created directly in their namespaces: nothing ever
            # shows up in the host's namespace.
            client_side = ["netns", client] if client else []
            if client is None or self.adopt_client_netns:
                # Current or adopted netns: never take over (or later delete) an existing link.
                if _run(self._ip(client, "link", "show", "dev", u.interface), check=False).returncode == 0:
                    raise LabError(f"interface {u.interface} exists already in {client or 'the current netns'}")
                self._own_links.append(u.interface)  # before creating: no window to leak it
                self._write_state()
            _run(["ip", "link", "add", u.interface, *client_side, "type", "veth",
                  "peer", "name", u.peer, "netns", inet])  # fmt: skip
            _run(self._ip(client, "addr", "add", f"{u.address}/{u.prefixlen}", "dev", u.interface))
            _run(self._ip(inet, "addr", "add", f"{u.gateway}/{u.prefixlen}", "dev", u.peer))
            if self.ipv6:
                # nodad: usable at once, no 1-2 s of "tentative".
                _run(self._ip(client, "-6", "addr", "add", f"{u.address6}/64", "dev", u.interface, "nodad"))
                _run(self._ip(inet, "-6", "addr", "add", f"{u.gateway6}/64", "dev", u.peer, "nodad"))
            if u.rate_mbit is not None:
                for ns, dev in ((client, u.interface), (inet, u.peer)):
                    _run(self._tc(ns, "qdisc", "add", "dev", dev, "root", "tbf", *tbf_params(u.rate_mbit)))
            _run(self._ip(client, "link", "set", u.interface, "up"))
            _run(self._ip(inet, "link", "set", u.peer, "up"))

        primary = self.uplinks[0]
        _run(self._ip(client, "route", "add", "default", "via", primary.gateway, "dev", primary.interface))
        if self.ipv6:
            _run(self._ip(client, "-6", "route", "add", "default", "via", primary.gateway6,
                          "dev", primary.interface))  # fmt: skip

        if self.server:
            self._start_server()
        self._wait_for_settled_addresses()

    def _wait_for_settled_addresses(self, timeout: float = 10.0) -> None:
        """Wait until no address is tentative (link-local DAD takes ~1-2 s).

        Tests compare `ip addr` / `ip route` before and after a change; a
        snapshot taken while DAD still runs would differ for no real reason."""
        deadline = time.monotonic() + timeout
        for ns in (self.client_netns, self.inet_netns):
            while _run(self._ip(ns, "-6", "addr", "show", "tentative"), check=False).stdout.strip():
                if time.monotonic() > deadline:
                    raise LabError(f"IPv6 addresses in {ns or 'the current netns'} stay tentative")
                time.sleep(0.1)

    def _start_server(self) -> None:
        # Our child (own session), so that down() can reap it: no zombie left for
        # PID 1.  A lab brought up by the CLI outlives that process; then the
        # server is orphaned, and down() finds it through `ip netns pids`.
        self._server_proc = subprocess.Popen(
            self._in(self.inet_netns, ["iperf3", "-s", "-p", str(IPERF_PORT)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._server_proc.poll() is not None:
                raise LabError(f"iperf3 -s exited with status {self._server_proc.returncode}")
            r = self.inet_exec(["ss", "-Hltn", f"sport = :{IPERF_PORT}"], check=False)
            if r.stdout.strip():
                return
            time.sleep(0.05)
        raise LabError("iperf3 server did not start listening")

    def down(self) -> None:
        """Idempotent: kill processes in the lab namespaces, delete them (and, in
        client_netns=None mode, the client-side veths), remove the state file."""
        # Only namespaces this lab made: never a same-named one someone else owns.
        for ns in self._made_netns:
            if Path("/run/netns", ns).exists():
                _kill_netns_processes(ns)
        if self._server_proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._server_proc.kill()
            self._server_proc.wait()
            self._server_proc = None
        for link in self._own_links:
            # Deleting one end of a veth deletes the pair.
            links_ns = self.client_netns if self.adopt_client_netns else None
            if links_ns is None or Path("/run/netns", links_ns).exists():
                _run(self._ip(links_ns, "link", "del", link), check=False)
        self._own_links.clear()
        errors = []
        for ns in reversed(self._made_netns):
            if Path("/run/netns", ns).exists():
                r = _run(["ip", "netns", "del", ns], check=False)
                if r.returncode != 0:
                    errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        if errors:
            raise LabError("; ".join(errors))  # keep the state file for another try
        self._made_netns.clear()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        with contextlib.suppress(OSError):
            STATE_DIR.rmdir()  # only if no other lab is up
        self.is_up = False
        if self._claimed:
            release(f"lab-{self.name}")
            self._claimed = False

    def _remove_leftovers(self) -> None:
        """What a run that died owning this lab's name left: by its state file, else
        by the namespace names."""
        print(f"lab {self.name}: removing what a dead run left", file=sys.stderr)
        try:
            stale = Lab.from_state(self.name) if self.state_file.exists() else Lab.adopt(self.name)
        except (LabError, ValueError, KeyError):
            stale = Lab.adopt(self.name)
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        stale.down()

    # -- state -----------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inet_netns": self.inet_netns,
            "client_netns": self.client_netns,
            "ipv6": self.ipv6,
            "server": self.server,
            "server4": SERVER4,
            "server6": SERVER6 if self.ipv6 else None,
            "iperf_port": IPERF_PORT if self.server else None,
            "uplinks": [asdict(u) for u in self.uplinks],
            "netns": list(self._made_netns),
            "own_links": list(self._own_links),
            "up": self.is_up,
        }

    def _write_state(self) -> None:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        tmp.replace(self.state_file)

    @classmethod
    def adopt(cls, name: str = "nlb") -> Lab:
        """A Lab that owns <name>-inet and <name>-client if they exist: to clean
        up after a crash that lost the state file."""
        lab = cls([Uplink("lo")], name=name, server=False)
        lab._made_netns = [ns for ns in (lab.inet_netns, lab.client_netns) if ns and Path("/run/netns", ns).exists()]
        return lab

    @classmethod
    def from_state(cls, name: str) -> Lab:
        """Rebuild a Lab object from /run/netlb-lab/<name>.json (e.g. to call down())."""
        _check_name("lab name", name)
        data = json.loads((STATE_DIR / f"{name}.json").read_text())
        fields = Uplink.__dataclass_fields__
        uplinks = [Uplink(**{k: v for k, v in u.items() if k in fields}) for u in data["uplinks"]]
        client = data["client_netns"]
        if client is None and os.environ.get("NETLB_IN_VM") != "1":
            raise LabError("this lab used the current netns as client: only usable inside its VM lab guest")
        lab = cls(uplinks, name=name, client_netns=client, ipv6=data["ipv6"], server=data["server"])
        for u, d in zip(lab.uplinks, data["uplinks"]):  # addresses as assigned by up()
            for k in ("address", "prefixlen", "gateway", "address6", "gateway6"):
                setattr(u, k, d[k])
        lab._own_links = list(data.get("own_links", []))
        lab._made_netns = list(data.get("netns", []))
        lab.is_up = bool(data.get("up"))
        return lab

    # -- measurements ----------------------------------------------------
    def iperf3(
        self,
        parallel: int = 10,
        seconds: float = 5,
        server: str = SERVER4,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Run ``iperf3 -c server -P parallel -t seconds -J`` in the client netns;
        return the parsed JSON.  Raises LabError if iperf3 reports an error."""
        argv = ["iperf3", "-c", server, "-p", str(IPERF_PORT), "-P", str(parallel),
                "-t", f"{seconds:g}", "-J", *extra]  # fmt: skip
        for attempt in range(50):
            r = self.client_exec(argv, check=False, timeout=seconds + 60)
            try:
                result: dict[str, Any] = json.loads(r.stdout)
            except json.JSONDecodeError as e:
                raise LabError(f"iperf3 gave no JSON (rc {r.returncode}): {r.stderr.strip() or r.stdout[:500]}") from e
            # The single-test server needs a moment after the previous test ends.
            if "server is busy" in str(result.get("error", "")) and attempt < 49:
                time.sleep(0.2)
                continue
            if r.returncode != 0 or "error" in result:
                raise LabError(f"iperf3 failed (rc {r.returncode}): {result.get('error', r.stderr.strip())}")
            return result
        raise AssertionError("not reached")


def _kill_netns_processes(ns: str) -> None:
    """SIGKILL everything living in netns *ns* and wait until it is gone."""
    deadline = time.monotonic() + 5
    while True:
        r = _run(["ip", "netns", "pids", ns], check=False)
        pids = [int(p) for p in r.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in netns {ns} do not die")
        time.sleep(0.05)


# -- iperf3 JSON helpers ---------------------------------------------------
def stream_local_hosts(result: dict[str, Any]) -> list[str]:
    """Local (client) address of each iperf3 stream, in stream order."""
    return [c["local_host"] for c in result["start"]["connected"]]


def iperf_local_hosts(proc: subprocess.CompletedProcess[str]) -> list[str] | str:
    """Stream local addresses of an `iperf3 -J` run (e.g. over ssh), or what went wrong
    (a string, for the assertion message)."""
    try:
        return stream_local_hosts(json.loads(proc.stdout))
    except (ValueError, KeyError):
        return "iperf3 failed (rc %d): %s %s" % (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])


def received_mbps(result: dict[str, Any]) -> float:
    """Total throughput seen by the receiver, in Mbit/s."""
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6


def received_mbps_by_local_host(result: dict[str, Any]) -> dict[str, float]:
    """Receiver throughput per client source address, in Mbit/s."""
    host_of = {c["socket"]: c["local_host"] for c in result["start"]["connected"]}
    out: dict[str, float] = {}
    for s in result["end"]["streams"]:
        rcv = s["receiver"]
        host = host_of[rcv["socket"]]
        out[host] = out.get(host, 0.0) + float(rcv["bits_per_second"]) / 1e6
    return out
