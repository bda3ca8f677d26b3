"""The maps-driven data plane on this machine's kernel: the control plane
(module_utils/datapath.py) converges the pinned maps, the loaded program
follows them with no reload - weights, drains, exclusions, and the slots
themselves (one object for every host: which mark each slot sets is in the
selection map too, and uplinks that swap or leave flip in one generation).

Three uplinks with fwmark steering in a throw-away network namespace (a veth
pair and one table per mark: UDP connect() needs a route, nothing is sent);
the program is attached to a test cgroup and connect_probe.py reads back each
socket's mark.
"""
import collections
import json
import os
import subprocess
import sys
import threading
import uuid

import pytest

from tests.integration.ansible_runner import run_cases
from tests.integration.bpf_lab import COLLECTIONS, TestCgroup, build_object
from ansible_collections.netlb.multiwan.plugins.module_utils import datapath
from ansible_collections.netlb.multiwan.plugins.module_utils.bpftool import Bpftool

pytestmark = pytest.mark.hostkernel

UPLINKS = [{"name": "mobile", "interface": "usb0"},
           {"name": "wifi", "interface": "wlp1s0", "mark": 11, "table": 11},
           {"name": "lte", "interface": "wwan0", "mark": 12, "table": 12}]
DECISION = {"none": 0, "mark:0xb": 1, "mark:0xc": 2}
SHARED_MAPS = list(datapath.Maps.NAMES)


class FwmarkMaps(datapath.Maps):
    """The test's maps, converged as a document with fwmark steering would be."""

    def converge(self, uplinks, policy, **kwargs):
        return super(FwmarkMaps, self).converge(uplinks, policy, steering="fwmark", **kwargs)


class Runner:
    """What Bpftool needs of an AnsibleModule."""

    def run_command(self, argv):
        proc = subprocess.run(argv, capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def netns():
    name = "nlbdp-%s" % uuid.uuid4().hex[:6]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in ("link add d0 type veth peer name d1", "link set d0 up", "link set d1 up", "link set lo up", "addr add 10.9.0.2/16 dev d0",
                    "route add default dev d0", "route add default dev d0 table 11",
                    "route add default dev d0 table 12", "rule add fwmark 11 lookup 11",
                    "rule add fwmark 12 lookup 12"):
            subprocess.run(["ip", "-n", name, *cmd.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def attach(cg, obj):
    args = {"cgroup": cg.path, "object": obj, "pin_dir": cg.pin_dir, "attach_types": ["connect4"],
            "shared_maps": SHARED_MAPS}
    run = run_cases([{"id": "a", "args": args}], playbook="attach_cases.yml")
    result = run["results"]["a"]
    assert not result.get("failed"), result
    return result


@pytest.fixture(scope="module")
def attached(netns):
    with TestCgroup("dp") as cg:
        obj = build_object(cg.tmp, UPLINKS, steering="fwmark", policy="weighted")
        attach(cg, obj)
        yield cg, FwmarkMaps(Bpftool(Runner(), "bpftool"), cg.pin_dir + "/maps")


def connects(cg, netns, count, dsts=("100.64.0.1",)):
    args = ["--count", str(count)]
    for dst in dsts:
        args += ["--dst", dst]
    return [DECISION[d] for d in cg.probe(args, netns=netns)["decisions"]]


def prog_id(cg):
    out = subprocess.run(["bpftool", "-j", "cgroup", "show", cg.path], capture_output=True, text=True, check=True)
    return [p["id"] for p in json.loads(out.stdout)]


def steered(cg):
    """Per slot, the per-CPU counters summed."""
    out = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", cg.pin_dir + "/maps/mw_counters"],
                         capture_output=True, text=True, check=True).stdout
    return [sum(v["value"]["steered"] for v in entry["formatted"]["values"]) for entry in json.loads(out)]


def state(*weights, drained=()):
    return [dict(UPLINKS[slot], weight=w, drained=slot in drained) for slot, w in enumerate(weights)]


def test_before_any_state_every_socket_is_left_alone(attached, netns):
    cg, _maps = attached
    assert set(connects(cg, netns, 20)) == {0}


def test_weights_are_followed_exactly_and_change_without_a_reload(attached, netns):
    cg, maps = attached
    assert maps.converge(state(2, 1, 1), "weighted")
    assert maps.converge(state(2, 1, 1), "weighted") == []   # converged: nothing to write
    program = prog_id(cg)
    assert collections.Counter(connects(cg, netns, 400)) == {0: 200, 1: 100, 2: 100}
    assert maps.converge(state(1, 1, 2), "weighted") == ["selection"]
    assert collections.Counter(connects(cg, netns, 400)) == {0: 100, 1: 100, 2: 200}
    assert prog_id(cg) == program


def test_a_drained_uplink_gets_nothing_until_undrained(attached, netns):
    cg, maps = attached
    maps.converge(state(1, 1, 1, drained=(1,)), "round_robin")
    assert 1 not in connects(cg, netns, 100)
    maps.converge(state(1, 1, 1), "round_robin")
    assert collections.Counter(connects(cg, netns, 99)) == {0: 33, 1: 33, 2: 33}


def test_hash_dst_draining_one_uplink_moves_only_its_destinations(attached, netns):
    cg, maps = attached
    maps.converge(state(1, 1, 1), "hash_dst")
    dsts = ["100.%d.%d.%d" % (64 + i // 65536, (i // 256) % 256, i % 256) for i in range(1000)]
    before = connects(cg, netns, 1, dsts)
    assert set(before) == {0, 1, 2}
    maps.converge(state(1, 1, 1, drained=(2,)), "hash_dst")
    after = connects(cg, netns, 1, dsts)
    moved = [i for i in range(1000) if before[i] != after[i]]
    assert moved and all(before[i] == 2 for i in moved) and 2 not in after


def test_excluded_prefixes_are_a_map_too(attached, netns):
    cg, maps = attached
    maps.converge(state(0, 1, 0), "weighted", exclude=["100.64.0.0/24"])
    assert set(connects(cg, netns, 10, ("100.64.0.9",))) == {0}
    assert set(connects(cg, netns, 10, ("100.64.1.9",))) == {1}
    maps.converge(state(0, 1, 0), "weighted")
    assert set(connects(cg, netns, 10, ("100.64.0.9",))) == {1}


def test_the_maps_read_through_bpf_syscalls_as_bpftool_shows_them(attached, netns):
    # The control plane reads the maps through bpf(2) (no process per read); bpftool is the reference.
    cg, maps = attached
    maps.converge(state(0, 1, 1), "weighted", exclude=["100.64.0.0/24", "100.65.0.0/16"],
                  exclude_ports=[{"proto": "tcp", "first": 22, "last": 22}])
    shown = Maps(maps.bpftool, maps.maps_dir)  # reads through bpftool only
    direct = datapath.Maps(NoBpftool(), maps.maps_dir)  # reads that would run bpftool fail
    for name, key in (("mw_control", datapath.u32_key(0)), ("mw_selection", datapath.u32_key(0)),
                      ("mw_selection", datapath.u32_key(1)), ("mw_exclude_ports", datapath.u32_key(0)),
                      ("mw_host", datapath.u32_key(0))):
        assert direct.lookup(name, key) == shown.lookup(name, key) is not None, name
    assert sorted(direct.keys("mw_exclude4")) == sorted(shown.keys("mw_exclude4"))
    assert len(direct.keys("mw_exclude4")) == 2
    assert direct.keys("mw_exclude6") == shown.keys("mw_exclude6") == []
    assert direct.lookup("mw_exclude4", b"\0" * 8) is None
    maps.converge(state(0, 1, 0), "weighted")


class NoBpftool:
    def json(self, *args):
        raise AssertionError("bpftool %s" % " ".join(args))

    run = json


class Maps(datapath.Maps):
    """Maps read through bpftool alone, as before bpf(2) reads."""

    def lookup(self, name, key):
        data = self.bpftool.json("map", "lookup", "pinned", self.path(name), "key", "hex", *datapath.hex_args(key))
        return datapath.from_hex(data["value"]) if isinstance(data, dict) and "value" in data else None

    def keys(self, name):
        return [datapath.from_hex(e["key"]) for e in (self.bpftool.json("map", "dump", "pinned", self.path(name)) or [])]


def test_a_new_program_keeps_counters_and_runtime_state(attached, netns):
    cg, maps = attached
    maps.converge(state(2, 1, 1), "weighted")
    connects(cg, netns, 40)
    before, program = steered(cg), prog_id(cg)
    # The same program built elsewhere: another object digest, so the module replaces it.
    other = build_object(cg.tmp, UPLINKS, steering="fwmark", policy="weighted", name="replacement",
                         extra_cflags=("-fdebug-prefix-map=/=/elsewhere/",))
    assert attach(cg, other)["changed"]
    assert prog_id(cg) != program and len(prog_id(cg)) == 1
    assert steered(cg) == before   # the same counters map
    assert collections.Counter(connects(cg, netns, 400)) == {0: 200, 1: 100, 2: 100}   # and the same selection
    assert [a - b for a, b in zip(steered(cg), before)][:3] == [200, 100, 100]


def test_a_new_program_gets_a_new_map_where_it_changed_the_map_s_shape(attached, netns):
    # A host upgraded from a release whose selection entry was smaller (0.1.0: the
    # tables alone): libbpf would reuse the pinned map whatever its shape.
    cg, maps = attached
    shared = cg.pin_dir + "/maps/mw_selection"
    subprocess.run(["rm", shared], check=True)
    subprocess.run(["bpftool", "map", "create", shared, "type", "array", "key", "4", "value", "5124", "entries", "2",
                    "name", "mw_selection"], check=True)
    other = build_object(cg.tmp, UPLINKS, steering="fwmark", policy="weighted", name="upgrade",
                         extra_cflags=("-fdebug-prefix-map=/=/upgrade/",))
    result = attach(cg, other)
    assert result["changed"] and len(prog_id(cg)) == 1, result
    info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "pinned", shared], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["bytes_value"] == len(datapath.selection_value(state(1, 1, 1), "weighted"))
    assert maps.converge(state(2, 1, 1), "weighted") == ["selection"]
    assert collections.Counter(connects(cg, netns, 400)) == {0: 200, 1: 100, 2: 100}


def test_uplinks_that_swap_or_leave_under_load_never_use_a_drained_one(attached, netns):
    # lte (mark 12) is drained throughout; wifi and lte swap slots, then the middle slot
    # leaves, back and forth, while connects run: each connect sees one generation, so
    # none gets lte's mark and every one gets a mark of the document in force.
    cg, maps = attached
    mobile, wifi, lte = UPLINKS
    orders = [[dict(mobile, weight=1), dict(wifi, weight=1), dict(lte, weight=1, drained=True)],
              [dict(mobile, weight=1), dict(lte, weight=1, drained=True), dict(wifi, weight=1)],
              [dict(mobile, weight=1), dict(wifi, weight=1)]]
    maps.converge(orders[0], "round_robin")
    stop, flips = threading.Event(), []

    def flip():
        while not stop.is_set():
            maps.converge(orders[len(flips) % 3], "round_robin")
            flips.append(1)

    flipper = threading.Thread(target=flip)
    flipper.start()
    counted = collections.Counter()
    try:
        # At least 12 flips and 2000 connects, however the two threads' speeds compare on a
        # loaded machine (a probe process may start slower than four flips).
        while len(flips) < 12 or sum(counted.values()) < 1000 * 2:
            counted.update(cg.probe(["--count", "1000", "--dst", "100.64.0.1"], netns=netns)["decisions"])
    finally:
        stop.set()
        flipper.join()
    assert len(flips) >= 12 and sum(counted.values()) >= 1000 * 2, (len(flips), counted)
    assert set(counted) == {"none", "mark:0xb"}, counted


def netlb_multiwan(netns, *args):
    """`netlb-multiwan ARGS` as the host runs it, in the test's namespace: the command also
    converges the source rules of the uplinks it steers, in the namespace it runs in."""
    code = ("import sys\nfrom ansible_collections.netlb.multiwan.plugins.module_utils import cli\n"
            "raise SystemExit(cli.main(sys.argv[1:]))\n")
    return subprocess.run(["nsenter", "--net=/run/netns/%s" % netns, sys.executable, "-c", code, *args],
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS), capture_output=True, text=True,
                          timeout=120).returncode


def test_the_command_drains_and_records_it(attached, netns, tmp_path):
    from ansible_collections.netlb.multiwan.plugins.module_utils import cli

    cg, _maps = attached
    doc = {"version": 1, "steering": "fwmark", "policy": "round_robin",
           "attachments": [{"cgroup": cg.path, "pin_dir": cg.pin_dir}],
           "uplinks": [dict(u, weight=1) for u in UPLINKS]}
    path = tmp_path / "balancer.json"
    path.write_text(json.dumps(doc))
    assert netlb_multiwan(netns, "--state", str(path), "drain", "wifi") == 0
    assert cli.load(str(path))["uplinks"][1]["drained"] is True
    assert 1 not in connects(cg, netns, 100)
    assert netlb_multiwan(netns, "--state", str(path), "undrain", "wifi") == 0
    assert collections.Counter(connects(cg, netns, 99)) == {0: 33, 1: 33, 2: 33}
    assert netlb_multiwan(netns, "--state", str(path), "weight", "lte", "2") == 0
    assert sorted(collections.Counter(connects(cg, netns, 99)).values()) == [33, 33, 33]   # round_robin: equal
    doc = cli.load(str(path))
    doc["policy"] = "weighted"
    cli.save(str(path), doc)
    assert netlb_multiwan(netns, "--state", str(path), "weight", "lte", "2") == 0   # recorded already: maps converge
    assert collections.Counter(connects(cg, netns, 100)) == {0: 25, 1: 25, 2: 50}
