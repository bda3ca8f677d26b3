"""Build the balancer program for a test and give it a cgroup of its own.

``build_object`` compiles the program with clang, as the role does (one object
for every host and test), and records what the test's state document would
say of the uplinks: how each is steered reaches the program through its maps. ``TestCgroup`` makes a
cgroup under the cgroup2 mount (never the root) and a bpffs pin directory,
and removes both — programs detached, processes killed — also on failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.ansible_runner import ROOT

sys.path.insert(0, str(ROOT / ".build" / "collections"))
from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan  # noqa: E402
from ansible_collections.netlb.multiwan.plugins.module_utils.balancer_status import counter_slots  # noqa: E402
from ansible_collections.netlb.multiwan.plugins.module_utils.cgroup import cgroup2_mount  # noqa: E402
from ansible_collections.netlb.multiwan.plugins.module_utils.datapath import Maps  # noqa: E402

BPF_DIR = ROOT / "files" / "bpf"
PROBE = Path(__file__).with_name("connect_probe.py")


def build_object(out_dir: str, uplinks: list[dict], *, steering: str, policy: str,
                 exclude: tuple = (), name: str = "multiwan", extra_cflags: tuple = ()) -> str:
    checked = plan.check_uplinks(uplinks, steering=steering, policy=policy, exclude=list(exclude))
    obj = str(Path(out_dir) / (name + ".bpf.o"))
    arch = os.uname().machine
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                    "-I%s" % BPF_DIR, "-I/usr/include/%s-linux-gnu" % arch, *extra_cflags,
                    "-c", str(BPF_DIR / "multiwan.bpf.c"), "-o", obj], check=True, capture_output=True, text=True)
    # What the role's state file would say at runtime (steering, weights, policy, exclusions):
    # converge() reads it.
    Path(obj + ".runtime.json").write_text(json.dumps({
        "steering": steering, "policy": policy, "exclude": checked["exclude"],
        "uplinks": [{"weight": u.get("weight", 1), "interface": u["interface"],
                     "vrf": c["dev"] if steering == "vrf" and c["dev"] else None, "mark": c["mark"] or None}
                    for u, c in zip(uplinks, checked["uplinks"])]}))
    return obj


def converge(pin_dir: str, obj: str) -> list[str]:
    """The runtime maps of the attachment at *pin_dir* to *obj*'s runtime state,
    as the role's netlb.multiwan.balancer_maps does."""
    from ansible_collections.netlb.multiwan.plugins.module_utils import cli, datapath
    from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool

    runtime = json.loads(Path(obj + ".runtime.json").read_text())
    maps = datapath.Maps(Bpftool(cli.Host(), "bpftool"), pin_dir + "/maps")
    return maps.converge(runtime["uplinks"], runtime["policy"], runtime["exclude"], steering=runtime["steering"])


SHARED_MAPS = list(Maps.NAMES)
COLLECTIONS = str(ROOT / ".build" / "collections")


def converge_engine(netns: str, pin_dir: str, obj: str, uplinks: list[dict], *, steering: str,
                    exclude_ports: tuple = (), netns_guard: bool = False, rule_priority: int = 10000) -> list[str]:
    """What the role's balancer_maps (and the boot unit) do, run in *netns*: the
    engine's converge_maps from a state document - the source rules for
    unconnected UDP in that namespace, then the maps, with that namespace's
    cookie when *netns_guard*. nsenter, not `ip netns exec`: bpffs stays visible."""
    runtime = json.loads(Path(obj + ".runtime.json").read_text())
    doc = {"steering": steering, "policy": runtime["policy"], "exclude": runtime["exclude"],
           "rule_priority": rule_priority, "exclude_ports": list(exclude_ports), "netns_guard": netns_guard,
           "attachments": [{"cgroup": "test", "pin_dir": pin_dir}],
           "uplinks": [dict(u, weight=u.get("weight", 1)) for u in uplinks]}
    code = ("import json, sys\n"
            "from ansible_collections.netlb.multiwan.plugins.module_utils import cli\n"
            "from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool\n"
            "print(json.dumps(cli.converge_maps(json.loads(sys.argv[1]), Bpftool(cli.Host(), 'bpftool'))))\n")
    proc = subprocess.run(["nsenter", "--net=/run/netns/%s" % netns, sys.executable, "-c", code, json.dumps(doc)],
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS), capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("converge_maps failed: %s" % proc.stderr[-3000:])
    return json.loads(proc.stdout)


class TestCgroup:
    """A fresh cgroup (relative name for the module) and pin directory."""

    __test__ = False  # not a pytest class

    def __init__(self, tag: str = "t"):
        self.mount = cgroup2_mount()
        if self.mount is None:
            raise RuntimeError("no cgroup2 mount")
        self.name = "netlb-test-%s-%d" % (tag, os.getpid())
        self.path = os.path.join(self.mount, self.name)
        self.pin_dir = "/sys/fs/bpf/netlb_test_%s_%d" % (tag, os.getpid())
        self.tmp = tempfile.mkdtemp(prefix="netlb-bpf-")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        if os.path.isdir(self.path):
            for pid in open(os.path.join(self.path, "cgroup.procs")).read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out = subprocess.run(["bpftool", "-j", "cgroup", "show", self.path], capture_output=True, text=True).stdout
            for prog in json.loads(out.strip() or "[]"):
                try:
                    detach_program(self.path, prog["attach_type"], prog["id"])
                except subprocess.CalledProcessError:
                    pass  # detached meanwhile; the rmdir below says if not
            for _ in range(50):
                try:
                    os.rmdir(self.path)
                    break
                except OSError:
                    time.sleep(0.1)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        _forget_created_cgroup(self.path)

    def argv(self, argv: list[str], netns: str | None = None) -> list[str]:
        """argv run as a member of this cgroup (optionally inside a netns).

        The shell joins the cgroup first, then execs: everything it starts is
        in the cgroup. `ip netns exec` keeps the cgroup membership."""
        inner = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path, *inner]

    def probe(self, args: list[str], netns: str | None = None, inside: bool = True) -> dict:
        argv = [sys.executable, str(PROBE), *args]
        if inside:
            argv = self.argv(argv, netns)
        elif netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError("probe failed: %s" % proc.stderr)
        return json.loads(proc.stdout)

    def program_ids(self) -> list:
        """The ids of the programs attached to the cgroup: they change only on a reload."""
        out = subprocess.run(["bpftool", "-j", "cgroup", "show", self.path], capture_output=True, text=True,
                             check=True).stdout
        return sorted(p["id"] for p in json.loads(out or "[]"))

    def counters(self) -> dict:
        """{slot: {steered, errors}} from the pinned counters map, summed over CPUs."""
        maps = list(Path(self.pin_dir).glob("maps/mw_counters")) or list(Path(self.pin_dir).glob("*/maps/mw_counters"))
        assert len(maps) == 1, maps
        out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", str(maps[0])],
                             capture_output=True, text=True, check=True).stdout
        return dict(enumerate(counter_slots(json.loads(out))))


def detach_program(cgroup: str, hook: str, prog_id: int) -> None:
    """Detach a program however it is attached: through a bpf_link, or the legacy way."""
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    for link in links:
        if link.get("type") == "cgroup" and link.get("prog_id") == prog_id:
            subprocess.run(["bpftool", "link", "detach", "id", str(link["id"])], capture_output=True, check=True)
            return
    subprocess.run(["bpftool", "cgroup", "detach", cgroup, hook, "id", str(prog_id)], capture_output=True, check=True)


def _forget_created_cgroup(path: str) -> None:
    """The attach module remembers cgroups it created in /run; a test that
    removes its cgroup by hand drops that record too."""
    state_file = "/run/netlb-multiwan/cgroup_bpf_attach.json"
    try:
        with open(state_file) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return
    if state.pop(path, None) is None:
        return
    if state:
        with open(state_file, "w") as handle:
            json.dump(state, handle)
    else:  # the record was the module's only one: leave nothing behind in /run
        os.unlink(state_file)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(state_file))
