"""The status collector (balancer_info, netlb-multiwan-status) on a fake host.

/proc/mounts, cgroups and pin directories are files under tmp_path; the kernel's
links, addresses, routes and rules a FakeKernel with module_utils/netlink's reading
methods; `bpftool` a table of canned JSON answers keyed by its arguments.
"""
import json
import os

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import balancer_status as bs
from ansible_collections.netlb.multiwan.plugins.module_utils import netlink as nl
from ansible_collections.netlb.multiwan.plugins.module_utils.vrf_model import AF_INET, AF_INET6, Route

DIGEST = "0123456789abcdef"
OLD_DIGEST = "fedcba9876543210"


def counters_dump(values, per_cpu=False, formatted=True):
    """bpftool -j map dump of mw_counters: [(steered, errors)] per slot (per CPU: a list of them)."""
    dump = []
    for key, value in enumerate(values):
        raw_key = ["0x%02x" % b for b in key.to_bytes(4, "little")]
        if per_cpu:
            entry = {"key": raw_key, "values": [{"cpu": i, "value": raw(v)} for i, v in enumerate(value)]}
            fmt = {"key": key, "values": [{"cpu": i, "value": {"steered": v[0], "errors": v[1]}}
                                          for i, v in enumerate(value)]}
        else:
            entry = {"key": raw_key, "value": raw(value)}
            fmt = {"key": key, "value": {"steered": value[0], "errors": value[1]}}
        if formatted:
            entry["formatted"] = fmt
        dump.append(entry)
    return dump


def program_counters(*uplinks, local=0, per_cpu=None):
    """The counters map of the program: *uplinks* in their slots, the 16th slot on the
    skip reasons (sockets left alone for a local destination: *local*)."""
    zero = per_cpu and [(0, 0)] * per_cpu or (0, 0)
    skips = [zero] * len(bs.datapath.SKIP_REASONS)
    skips[bs.datapath.SKIP_REASONS.index("local")] = local if per_cpu else (local, 0)
    return list(uplinks) + [zero] * (bs.datapath.MAX_UPLINKS - len(uplinks)) + skips


def raw(value):
    return ["0x%02x" % b for b in value[0].to_bytes(8, "little") + value[1].to_bytes(8, "little")]


class FakeKernel(object):
    """What module_utils/netlink.Netlink reads, from dicts."""

    def __init__(self):
        self.links = {}  # name: nl.Link
        self.master_of = {}  # name: the master's name
        self.addrs = {}  # name: ["addr/len"] (global)
        self.tables = {}  # table: [Route]
        self.l3mdev = set()
        self.fwmarks = []
        self.closed = 0

    def link(self, name=None, index=None):
        for found in self.links.values():
            if found.name == name or (index is not None and found.index == index):
                return found
        return None

    def master_name(self, link):
        return self.master_of.get(link.name)

    def global_addresses(self, index, family):
        name = self.link(index=index).name
        return [a for a in self.addrs.get(name, []) if (":" in a) == (family == 6)]

    def routes(self, table, names=None):
        return list(self.tables.get(table, []))

    def default_route(self, table, family, index):
        name = self.link(index=index).name
        af = AF_INET6 if family == 6 else AF_INET
        return any(r.family == af and r.dst == "default" and r.dev == name for r in self.tables.get(table, []))

    def l3mdev_rules(self):
        return set(self.l3mdev)

    def fwmark_rules(self):
        return list(self.fwmarks)

    def close(self):
        self.closed += 1


def route(dst, dev, gateway=None, family=AF_INET):
    return Route(family, dst, gateway=gateway, dev=dev)


class FakeHost(bs.Host):
    """A host with two uplinks, fwmark steering, the program attached at one cgroup: no problem."""

    def __init__(self, root):
        self.root = root
        super(FakeHost, self).__init__(proc_mounts=str(root / "mounts"), ipv4_conf=str(root / "conf"))
        self.tools = {"bpftool": "/usr/sbin/bpftool"}
        self.fake_kernel = FakeKernel()
        self.answers = {}
        self.calls = []
        self.mount = root / "cgroup2"
        (root / "mounts").write_text("proc /proc proc rw 0 0\ncgroup2 %s cgroup2 rw 0 0\n" % self.mount)
        self.object = root / "multiwan.bpf.o"
        self.object.write_bytes(b"object")
        self.digest = bs.file_digest(str(self.object))[:16]
        self.link("usb0", "up", "1")
        self.link("wlp1s0", "up", "1")
        self.state = {
            "version": 1, "steering": "fwmark", "policy": "random", "ipv6": False, "object": str(self.object),
            "attach_types": ["connect4", "connect6"], "rule_priority": 10000, "attachments": [],
            "uplinks": [
                {"slot": 0, "name": "mobile", "interface": "usb0", "gateway": "192.0.2.1", "gateway6": None,
                 "vrf": None, "table": None, "mark": None, "weight": 1},
                {"slot": 1, "name": "wifi", "interface": "wlp1s0", "gateway": "198.51.100.1", "gateway6": None,
                 "vrf": None, "table": 100, "mark": 256, "weight": 3},
            ],
        }
        self.fake_kernel.addrs = {"usb0": ["192.0.2.2/24"], "wlp1s0": ["198.51.100.2/24"]}
        self.fake_kernel.tables = {
            254: [route("default", "usb0", "192.0.2.1"), route("192.0.2.0/24", "usb0"), route("10.9.0.0/16", "eth9")],
            100: [route("default", "wlp1s0", "198.51.100.1")]}
        self.fake_kernel.fwmarks = [{"family": AF_INET, "priority": 10000, "fwmark": 0x100, "fwmask": 0xFFFFFFFF,
                                     "table": 100}]
        self.attachment("multiwan", program_counters((10, 0), (20, 1), local=5))

    def link(self, name, operstate, carrier, master=None, vrf_table=None):
        index = self.fake_kernel.links[name].index if name in self.fake_kernel.links else len(self.fake_kernel.links) + 2
        self.fake_kernel.links[name] = nl.Link(index, name, up=operstate != "down", vrf_table=vrf_table,
                                               carrier=None if carrier is None else carrier == "1",
                                               operstate=operstate.upper())
        if master:
            self.fake_kernel.master_of[name] = master
        else:
            self.fake_kernel.master_of.pop(name, None)

    def kernel(self):
        if self.fake_kernel is None:
            raise ImportError("pyroute2 is not installed (python3-pyroute2)")
        return self.fake_kernel

    def attachment(self, cgroup, counters, digest=None, hooks=("connect4", "connect6"), prog_base=100):
        """A cgroup with the pinned object's programs attached at ``hooks`` and its counters map."""
        digest = digest or self.digest
        pin_dir = self.root / ("pins_" + cgroup)
        path = self.mount / cgroup
        path.mkdir(parents=True)
        (path / "cgroup.procs").write_text("11\n12\n")
        (pin_dir / digest / "maps").mkdir(parents=True)
        attached = []
        for i, hook in enumerate(("connect4", "connect6")):
            prog = pin_dir / digest / ("mw_" + hook)
            prog.write_text("")
            self.answers[("bpftool", "prog", "show", "pinned", str(prog))] = (0, json.dumps(
                {"id": prog_base + i, "name": "mw_" + hook}), "")
            if hook in hooks:
                attached.append({"id": prog_base + i, "attach_type": "cgroup_inet%s_connect" % hook[-1],
                                 "attach_flags": "multi", "name": "mw_" + hook})
        self.answers[("bpftool", "cgroup", "show", str(path))] = (0, json.dumps(attached), "")
        self.answers[("bpftool", "map", "dump", "pinned", str(pin_dir / digest / "maps" / "mw_counters"))] = (
            0, json.dumps(counters_dump(counters)), "")
        self.state["attachments"].append({"cgroup": cgroup, "pin_dir": str(pin_dir)})
        return path, pin_dir

    def which(self, name):
        return self.tools.get(name)

    def run(self, argv):
        assert argv[1] == "-j", argv
        key = (os.path.basename(argv[0]),) + tuple(argv[2:])
        self.calls.append(key)
        return self.answers.get(key, (1, "", "no canned answer for %s" % " ".join(key)))

    def collect(self):
        state_file = self.root / "balancer.json"
        state_file.write_text(json.dumps(self.state))
        return bs.collect(str(state_file), host=self)


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path)


def test_healthy_host(host):
    status = host.collect()
    assert status["problems"] == []
    mobile, wifi = status["uplinks"]
    assert mobile == dict(mobile, name="mobile", interface="usb0", exists=True, operstate="up", carrier=True,
                          master=None, addresses=["192.0.2.2/24"], table="main", mark=None, weight=1,
                          routes=["default via 192.0.2.1 dev usb0", "192.0.2.0/24 dev usb0"],
                          default_route=True, default_route6=None, connections=10, errors=0, share=33.3)
    assert wifi == dict(wifi, table=100, mark=256, weight=3, routes=["default via 198.51.100.1 dev wlp1s0"],
                        connections=20, errors=1, share=66.7)
    assert status["skipped"] == 5 and status["connections"] == 30
    assert status["rules"] == [{"family": "IPv4", "rule": "fwmark 0x100 lookup 100", "uplink": "wifi",
                                "present": True, "priority": 10000}]
    (att,) = status["attachments"]
    assert att["exists"] and att["processes"] == 2 and att["current"] and att["object"] == host.digest
    assert [(h["attach_type"], h["ok"], h["programs"]) for h in att["hooks"]] == [
        ("connect4", True, [{"id": 100, "name": "mw_connect4", "attach_flags": "multi", "pinned": True}]),
        ("connect6", True, [{"id": 101, "name": "mw_connect6", "attach_flags": "multi", "pinned": True}])]


def rp_filter(host, **values):
    for interface, value in values.items():
        (host.root / "conf" / interface).mkdir(parents=True, exist_ok=True)
        (host.root / "conf" / interface / "rp_filter").write_text("%d\n" % value)


def test_strict_rp_filter_on_a_device_steered_uplink_is_a_problem(host):
    rp_filter(host, all=1, usb0=0, wlp1s0=0)
    status = host.collect()
    assert [u["rp_filter"] for u in status["uplinks"]] == [1, 1]
    assert status["problems"] == [], "fwmark: the source rules route the check into the uplink's table"
    # device: wifi's replies come back on wlp1s0, the main table prefers usb0's default route.
    host.state["steering"] = "device"
    host.fake_kernel.tables[254] = [route("default", "usb0", "192.0.2.1"), route("default", "wlp1s0", "198.51.100.1")]
    rp_filter(host, usb0=2)
    status = host.collect()
    assert [u["rp_filter"] for u in status["uplinks"]] == [2, 1]
    assert status["problems"] == [
        "wifi: strict reverse-path filtering (rp_filter=1) on wlp1s0 drops the replies of the sockets steered to it: "
        "balancer_rp_filter: loose, or sysctl net.ipv4.conf.wlp1s0.rp_filter=2"]
    rp_filter(host, wlp1s0=2)
    status = host.collect()
    assert [u["rp_filter"] for u in status["uplinks"]] == [2, 2] and status["problems"] == []


def test_missing_state_file_is_a_problem_and_runs_nothing(host, tmp_path):
    status = bs.collect(str(tmp_path / "nope.json"), host=host)
    assert status["problems"] == ["state file %s missing: the balancer role has not been applied to this host"
                                  % (tmp_path / "nope.json")]
    assert status["state_found"] is False and status["uplinks"] == [] and host.calls == []
    assert "no balancer state" in bs.render(status)


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not JSON"),
    ('{"version": 2}', "version is 2; this engine reads version 1"),
    ("[]", "is not a JSON object"),
    ('{"version": 1, "uplinks": ["usb0"]}', "uplinks must be a list of objects"),
])
def test_unusable_state_file(host, tmp_path, text, message):
    (tmp_path / "s.json").write_text(text)
    (problem,) = bs.collect(str(tmp_path / "s.json"), host=host)["problems"]
    assert message in problem


def test_missing_bpftool_leaves_counters_unknown(host):
    host.tools["bpftool"] = None
    status = host.collect()
    assert status["problems"] == ["bpftool not found: attachments and counters not checked"]
    assert [u["connections"] for u in status["uplinks"]] == [None, None] and status["skipped"] is None
    assert status["uplinks"][1]["default_route"] is True  # ip still works
    assert status["attachments"][0]["hooks"] == [] and not any(c[0] == "bpftool" for c in host.calls)
    text = bs.render(status)
    assert "  mobile  usb0       up     main" in text and "never steered: ?" in text


def test_no_netlink_is_one_problem(host):
    host.fake_kernel = None
    status = host.collect()
    assert status["problems"] == ["links, addresses, routes and rules not read (netlink: pyroute2 is not installed "
                                  "(python3-pyroute2))"]
    assert status["uplinks"][1]["connections"] == 20 and status["uplinks"][1]["default_route"] is None
    assert "  wifi    wlp1s0     ?      mark 0x100 -> table 100" in bs.render(status)


def test_counters_are_summed_over_attachments_and_cpus(host):
    _path, pin_dir = host.attachment("multiwan.slice", program_counters((1, 0), (2, 0), local=3), prog_base=200)
    per_cpu = program_counters([(1, 0), (100, 0)], [(2, 1), (200, 0)], local=[(3, 0), (300, 0)], per_cpu=2)
    dump = str(pin_dir / host.digest / "maps" / "mw_counters")
    host.answers[("bpftool", "map", "dump", "pinned", dump)] = (0, json.dumps(counters_dump(per_cpu, per_cpu=True)), "")
    status = host.collect()
    assert status["problems"] == []
    assert status["attachments"][1]["counters"][:2] == [{"steered": 101, "errors": 0}, {"steered": 202, "errors": 1}]
    assert status["skipped_by_reason"] == dict((r, 308 if r == "local" else 0) for r in bs.datapath.SKIP_REASONS)
    assert [u["connections"] for u in status["uplinks"]] == [111, 222]
    assert [u["errors"] for u in status["uplinks"]] == [0, 2]
    assert status["skipped"] == 308 and status["connections"] == 333


def test_counter_values_without_btf_are_decoded_from_bytes():
    dump = counters_dump([(7, 1), (2 ** 40, 0)], formatted=False)
    assert bs.counter_slots(dump) == [{"steered": 7, "errors": 1}, {"steered": 2 ** 40, "errors": 0}]
    per_cpu = counters_dump([[(1, 0), (2, 0)]], per_cpu=True, formatted=False)
    assert bs.counter_slots(per_cpu) == [{"steered": 3, "errors": 0}]
    assert bs.counter_slots([]) == []


def test_problems_are_listed(host, tmp_path):
    host.link("wlp1s0", "down", None)
    host.fake_kernel.tables[100] = []
    host.fake_kernel.fwmarks = [{"family": AF_INET, "priority": 10000, "fwmark": 0x100, "fwmask": 0xff00,
                                 "table": 100}]
    host.state["uplinks"].append({"slot": 2, "name": "lte", "interface": "wwan0", "table": 101, "mark": 0x65})
    host.attachment("half", program_counters((1, 0), (1, 0)), hooks=("connect4",), prog_base=300)
    # A program of another release, built for two uplinks and one skipped slot.
    old_counters = str(host.root / "pins_multiwan" / host.digest / "maps" / "mw_counters")
    host.answers[("bpftool", "map", "dump", "pinned", old_counters)] = (
        0, json.dumps(counters_dump([(10, 0), (20, 1), (5, 0)])), "")
    path, pins = host.attachment("stale", [], digest=OLD_DIGEST, prog_base=400)
    del host.answers[("bpftool", "map", "dump", "pinned", str(pins / OLD_DIGEST / "maps" / "mw_counters"))]
    host.answers[("bpftool", "cgroup", "show", str(path))] = (0, json.dumps(
        [{"id": 9, "attach_type": "cgroup_inet4_connect", "name": "mw_connect4"}]), "")
    host.state["attachments"].append({"cgroup": "gone", "pin_dir": str(tmp_path / "nopins")})
    status = host.collect()
    assert status["problems"] == [
        "wifi: not usable: wlp1s0 is down",
        "lte: not usable: wwan0 is gone",
        "wifi: no IPv4 rule fwmark 0x100 lookup 100",
        "lte: no IPv4 rule fwmark 0x65 lookup 101",
        "attachment half: program not attached at connect6",
        "attachment stale: pinned object %s is not the installed object %s" % (OLD_DIGEST, host.digest),
        "attachment stale: mw_connect4 id 9 at connect4 is not the pinned program (mw_connect4 id 400, "
        "mw_connect6 id 401)",
        "attachment stale: program not attached at connect6",
        "attachment stale: counters unreadable: no canned answer for bpftool map dump pinned %s"
        % (tmp_path / "pins_stale" / OLD_DIGEST / "maps" / "mw_counters"),
        "attachment gone: cgroup %s does not exist" % (host.mount / "gone"),
        "attachment gone: no program pinned in %s (not loaded; bpffs does not survive a reboot)" % (tmp_path / "nopins"),
        "attachment multiwan: counters map has 3 slots, the state file has 3 uplinks (+1 skipped): "
        "the object was built for other uplinks",
    ]
    assert status["uplinks"][1]["operstate"] == "down" and status["uplinks"][1]["carrier"] is None
    assert status["uplinks"][1]["default_route"] is False and status["uplinks"][1]["usable"] is False
    assert status["attachments"][2]["current"] is False


def test_no_carrier_missing_object_and_no_attachment(host):
    host.link("usb0", "lowerlayerdown", "0")
    host.object.unlink()
    host.state["attachments"] = []
    status = host.collect()
    assert status["problems"] == ["installed object %s missing" % host.object, "mobile: not usable: usb0 has no carrier",
                                  "the state file lists no attachment: the program balances nothing"]
    assert status["uplinks"][0]["carrier"] is False


def test_ipv6_routes_and_rules_are_checked_when_balanced(host):
    host.state["ipv6"] = True
    host.state["uplinks"][1]["gateway6"] = "2001:db8:2::1"
    host.fake_kernel.tables[100].append(route("default", "wlp1s0", "2001:db8:2::1", family=AF_INET6))
    status = host.collect()
    assert status["problems"] == ["wifi: not usable: wlp1s0 has no global IPv6 address",
                                  "wifi: no IPv6 rule fwmark 0x100 lookup 100"]
    host.fake_kernel.addrs["wlp1s0"].append("2001:db8:2::2/64")
    status = host.collect()
    assert status["problems"] == ["wifi: no IPv6 rule fwmark 0x100 lookup 100"]
    assert status["uplinks"][1]["default_route6"] is True and status["uplinks"][0]["default_route6"] is None
    assert status["uplinks"][1]["addresses"] == ["198.51.100.2/24", "2001:db8:2::2/64"]
    host.fake_kernel.tables[100].pop()
    status = host.collect()
    assert "wifi: not usable: no IPv6 default route via wlp1s0 in table 100" in status["problems"]


def test_vrf_steering(host):
    host.state["steering"] = "vrf"
    host.state["uplinks"][1].update(vrf="wifi-vrf", table=10, mark=None)
    host.link("wlp1s0", "up", "1", master="other-vrf")
    host.link("wifi-vrf", "up", None, vrf_table=11)
    host.fake_kernel.tables[10] = [route("default", "wlp1s0")]
    status = host.collect()
    assert status["problems"] == [
        "wifi: VRF wifi-vrf uses table 11, the state file says 10",
        "wifi: not usable: wlp1s0 is not enslaved to wifi-vrf (master: other-vrf)",
        "no IPv4 l3mdev rule (ip rule add l3mdev): VRF tables are never consulted",
    ]
    wifi = status["uplinks"][1]
    assert (wifi["vrf"], wifi["table"], wifi["mark"], wifi["master"]) == ("wifi-vrf", 10, None, "other-vrf")
    assert "vrf wifi-vrf (table 10)" in bs.render(status)

    host.fake_kernel.l3mdev = {AF_INET}
    host.link("wlp1s0", "up", "1")
    del host.fake_kernel.links["wifi-vrf"]
    status = host.collect()
    assert status["problems"] == ["wifi: VRF wifi-vrf does not exist",
                                  "wifi: not usable: wlp1s0 is not enslaved to wifi-vrf (master: none)"]
    assert status["rules"] == [{"family": "IPv4", "rule": "l3mdev", "uplink": None, "present": True,
                                "priority": 1000}]
    host.link("wlp1s0", "up", "1", master="wifi-vrf")
    host.link("wifi-vrf", "up", None, vrf_table=10)
    assert host.collect()["problems"] == []


def test_a_backup_tier_is_on_standby_until_the_first_tier_has_no_usable_uplink(host):
    host.state["uplinks"][1]["tier"] = 2
    status = host.collect()
    assert status["active_tier"] == 1 and status["problems"] == []
    assert [(u["tier"], u["standby"]) for u in status["uplinks"]] == [(1, False), (2, True)]
    assert [line.split()[2] for line in bs.render(status).splitlines()[3:5]] == ["up", "standby"]
    host.state["uplinks"][0]["drained"] = True
    status = host.collect()
    assert status["active_tier"] == 2
    assert [(u["tier"], u["standby"]) for u in status["uplinks"]] == [(1, False), (2, False)]


def test_table_rendering(host):
    text = bs.render(host.collect())
    lines = text.splitlines()
    assert lines[0].startswith("netlb-multiwan: fwmark steering, random policy (")
    assert lines[2:5] == [
        "  uplink  interface  state  route                    tier  weight  connections  share  errors",
        "  mobile  usb0       up     main                        1       1           10  33.3%       0",
        "  wifi    wlp1s0     up     mark 0x100 -> table 100     1       3           20  66.7%       1",
    ]
    assert "  never steered (local destination 5): 5" in lines
    assert "  mobile: 192.0.2.2/24; default route IPv4 yes" in lines
    assert "  %s (2 processes)  object %s (installed)" % (host.mount / "multiwan", host.digest) in lines
    assert "    connect4: mw_connect4 id 100" in lines
    assert "  IPv4 fwmark 0x100 lookup 100: priority 10000" in lines
    assert lines[-1] == "problems: none"


def test_main_exit_status_and_json(host, monkeypatch, capsys):
    state_file = host.root / "balancer.json"
    state_file.write_text(json.dumps(host.state))
    monkeypatch.setattr(bs, "Host", lambda: host)
    assert bs.main(["--state", str(state_file)]) == 0
    assert "problems: none" in capsys.readouterr().out
    assert bs.main(["--json", "--state", str(state_file)]) == 0
    assert json.loads(capsys.readouterr().out)["uplinks"][1]["connections"] == 20
    host.link("usb0", "down", None)
    assert bs.main(["--state", str(state_file)]) == 1
    assert "problems:\n  - mobile: not usable: usb0 is down\n" in capsys.readouterr().out
    assert bs.main(["--state", str(host.root / "missing.json")]) == 1


@pytest.mark.parametrize("name, short", [("cgroup_inet4_connect", "connect4"), ("cgroup_inet6_post_bind", "post_bind6"),
                                         ("cgroup_udp4_sendmsg", "sendmsg4"), ("connect6", "connect6"),
                                         ("cgroup_inet_ingress", "cgroup_inet_ingress")])
def test_short_attach_type(name, short):
    assert bs.short_attach_type(name) == short


def test_the_real_host_runner_reports_a_missing_command():
    rc, _out, err = bs.Host().run(["/nonexistent/bpftool", "-j", "version"])
    assert rc == 127 and "nonexistent" in err


def test_a_metered_uplink_shows_its_usage_and_a_spent_budget_is_a_problem(host, tmp_path):
    import json

    health_file = tmp_path / "health.json"
    host.state["health_file"] = str(health_file)
    host.state["uplinks"][1]["budget"] = {"bytes": 2000000, "period": "day", "reset": None, "when_spent": "drain"}
    status = host.collect()
    assert status["uplinks"][1]["budget"] == {"used": None, "spent": None, "period_end": None, "bytes": 2000000,
                                              "period": "day", "when_spent": "drain"}   # no tracker yet
    end = 1796425200.0
    health_file.write_text(json.dumps({"uplinks": {}, "budgets": {"wifi": {
        "bytes": 2000000, "used": 3100000, "spent": True, "period": "day", "period_start": end - 86400,
        "period_end": end, "when_spent": "drain"}}}))
    status = host.collect()
    wifi = status["uplinks"][1]
    assert wifi["budget"]["spent"] and wifi["budget"]["used"] == 3100000
    assert status["active_tier"] == 1 and status["problems"] == [
        "wifi: data budget spent (3.1 MB of 2.0 MB this day), drained until %s"
        % bs.time.strftime("%Y-%m-%d %H:%M", bs.time.localtime(end))]
    text = bs.render(status)
    assert text.splitlines()[4].split()[2] == "spent"
    assert "    budget: 3.1 MB of 2.0 MB this day (spent: drained), until " in text
