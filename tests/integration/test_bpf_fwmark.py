"""The balancer program with fwmark steering on this machine's kernel.

Lab: usb0 (40 Mbit/s, default route in main) and wlp1s0 (20 Mbit/s) whose
table 100 is chosen by `ip rule fwmark 0x100`. The program is attached by
netlb.multiwan.cgroup_bpf_attach (real ansible-playbook runs) to a test
cgroup; traffic and connects come from processes in that cgroup.
"""
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.ansible_runner import failed_cleanly, run_cases
from tests.integration import udp_probe
from tests.integration.bpf_lab import PROBE, SHARED_MAPS, TestCgroup, build_object, converge, converge_engine
from tests.lab.netlab import SERVER4, SERVER6, Lab, Uplink, received_mbps, stream_local_hosts
from ansible_collections.netlb.multiwan.plugins.module_utils.datapath import MAX_UPLINKS, SKIP_REASONS

pytestmark = pytest.mark.hostkernel

MARK = 0x100
# The counters of sockets left alone, by reason (mw_counters[MAX_UPLINKS + reason]).
EXCLUDED = MAX_UPLINKS + SKIP_REASONS.index("excluded")
FOREIGN = MAX_UPLINKS + SKIP_REASONS.index("foreign_netns")
BOUND = MAX_UPLINKS + SKIP_REASONS.index("bound")
MOBILE = {"name": "mobile", "interface": "usb0", "weight": 1}
WIFI = {"name": "wifi", "interface": "wlp1s0", "mark": MARK, "weight": 1}


@pytest.fixture(scope="module")
def lab():
    with Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)], name="nlbfw") as lab:
        wifi = lab.uplinks[1]
        for argv in (["ip", "rule", "add", "fwmark", hex(MARK), "lookup", "100"],
                     ["ip", "route", "add", "default", "via", wifi.gateway, "table", "100"],
                     ["ip", "-6", "rule", "add", "fwmark", hex(MARK), "lookup", "100"],
                     ["ip", "-6", "route", "add", "default", "via", wifi.gateway6, "table", "100"]):
            lab.client_exec(argv)
        yield lab


@pytest.fixture
def cgroup():
    with TestCgroup("fw") as cg:
        yield cg


def attach(cg, obj, *, check=False, diff=False, **extra):
    args = {"cgroup": cg.name, "object": obj, "pin_dir": cg.pin_dir, "shared_maps": SHARED_MAPS}
    args.update(extra)
    run = run_cases([{"id": "a", "args": args}], check=check, diff=diff, playbook="attach_cases.yml")
    assert run["rc"] == 0, run["output"][-3000:]
    result = run["results"]["a"]
    if not check and not result.get("failed") and args.get("state", "present") == "present":
        converge(cg.pin_dir, obj)
    return result


def build(cg, policy, uplinks=(MOBILE, WIFI), name=None, **kw):
    return build_object(cg.tmp, list(uplinks), steering="fwmark", policy=policy, name=name or policy, **kw)


def test_iperf3_uses_both_uplinks_from_the_cgroup_only(lab, cgroup):
    result = attach(cgroup, build(cgroup, "round_robin"))
    assert result["changed"] is True
    assert {p["attach_type"] for p in result["programs"]} == {"connect4", "connect6", "sendmsg4", "sendmsg6"}
    usb, wifi = lab.uplinks

    argv = ["iperf3", "-c", SERVER4, "-P10", "-t5", "-J"]
    import json
    import subprocess
    inside = json.loads(subprocess.run(cgroup.argv(argv, lab.client_netns), capture_output=True, text=True,
                                       timeout=60).stdout)
    hosts = collections.Counter(stream_local_hosts(inside))
    assert set(hosts) == {usb.address, wifi.address}, hosts
    total = received_mbps(inside)
    # Aggregation, not speed: one link alone tops out at 40 of 60 Mbit/s, and tbf lets
    # TCP reach ~95.5% of a link's rate, so a 95% bar failed on a loaded machine (56.9).
    # Throughput figures live in benchmarks/.
    assert total >= 0.90 * 60, "received %.1f Mbit/s, want >= 54 (one link alone: <= 40)" % total

    outside = lab.iperf3(parallel=4, seconds=1)
    assert set(stream_local_hosts(outside)) == {usb.address}


def test_iperf3_over_ipv6_uses_both_uplinks(lab, cgroup):
    """connect6 with fwmark steering: the lab is dual-stack, and table 100 has wifi's IPv6 default."""
    attach(cgroup, build(cgroup, "round_robin"))
    usb, wifi = lab.uplinks
    proc = subprocess.run(cgroup.argv(["iperf3", "-c", SERVER6, "-P10", "-t3", "-J"], lab.client_netns),
                          capture_output=True, text=True, timeout=60)
    result = json.loads(proc.stdout)
    hosts = collections.Counter(stream_local_hosts(result))
    assert set(hosts) == {usb.address6, wifi.address6}, hosts
    assert received_mbps(result) >= 0.85 * 60, "received %.1f Mbit/s over IPv6 (one link: <= 40)" % received_mbps(result)


def test_policies_over_1000_connects(lab, cgroup):
    # weighted 3:1 -> 75% +- 5 points on the main uplink
    attach(cgroup, build(cgroup, "weighted", (dict(MOBILE, weight=3), WIFI)))
    got = collections.Counter(cgroup.probe(["--dst", SERVER4, "--count", "1000"], lab.client_netns)["decisions"])
    assert set(got) == {"none", "mark:0x100"} and sum(got.values()) == 1000
    assert 700 <= got["none"] <= 800, got

    # round_robin alternates exactly
    attach(cgroup, build(cgroup, "round_robin"))
    seq = cgroup.probe(["--dst", SERVER4, "--count", "1000"], lab.client_netns)["decisions"]
    assert all(a != b for a, b in zip(seq, seq[1:])), seq[:20]
    assert collections.Counter(seq) == {"none": 500, "mark:0x100": 500}

    # hash_dst: a destination always gets the same uplink; destinations spread
    attach(cgroup, build(cgroup, "hash_dst"))
    dsts = ["100.64.%d.%d" % (i // 200, i % 200 + 1) for i in range(100)]
    args = sum((["--dst", d] for d in dsts), []) + ["--count", "10"]
    seq = cgroup.probe(args, lab.client_netns)["decisions"]
    per_dst = collections.defaultdict(set)
    for i, decision in enumerate(seq):
        per_dst[dsts[i % len(dsts)]].add(decision)
    assert all(len(v) == 1 for v in per_dst.values()), per_dst
    assert {d for v in per_dst.values() for d in v} == {"none", "mark:0x100"}

    # IPv6 (connect6) spreads too
    attach(cgroup, build(cgroup, "random"))
    got6 = collections.Counter(cgroup.probe(["--dst", SERVER6, "--count", "400"], lab.client_netns)["decisions"])
    assert set(got6) == {"none", "mark:0x100"} and min(got6.values()) > 100, got6

    # Counters: per uplink and per CPU, readable with bpftool, and kept (pinned at
    # <pin_dir>/maps) while four objects replaced each other: 3 x 1000 + 400 connects.
    counters = cgroup.counters()
    assert counters[0]["steered"] + counters[1]["steered"] == 3400 and counters[1]["errors"] == 0, counters


def test_never_steered_destinations(lab, cgroup):
    attach(cgroup, build(cgroup, "round_robin", (dict(MOBILE, mark=0x200), WIFI), exclude=("100.64.7.0/24",)))
    dsts = ["127.0.0.53", "127.0.0.1", "169.254.1.1", "224.0.0.251", "::1", "fe80::1%lo",
            "::ffff:127.0.0.53", "ff0e::1", "100.64.7.9"]
    seq = cgroup.probe(sum((["--dst", d] for d in dsts if "%" not in d), []) + ["--count", "4"], lab.client_netns)
    assert set(seq["decisions"]) == {"none"}, seq
    # Everything else is steered (both uplinks carry a mark here, so 'none' would be a miss).
    steered = cgroup.probe(["--dst", SERVER4, "--dst", SERVER6, "--count", "50"], lab.client_netns)["decisions"]
    assert "none" not in steered


def test_sockets_bound_to_a_local_address_are_left_alone(lab, cgroup):
    """bind() to an uplink's address chose that uplink (and the kernel's extra MPTCP
    subflows come bound to their endpoint's address): the program leaves them alone.
    A bind() to the wildcard address chooses nothing: steered."""
    attach(cgroup, build(cgroup, "round_robin", (dict(MOBILE, mark=0x200), WIFI)))
    usb, wifi = lab.uplinks
    before = cgroup.counters()[BOUND]["steered"]
    for dst, local in ((SERVER4, usb.address), (SERVER4, wifi.address), (SERVER6, wifi.address6)):
        for proto in ("tcp", "udp"):
            seq = cgroup.probe(["--dst", dst, "--count", "25", "--proto", proto, "--bind", local], lab.client_netns)
            assert set(seq["decisions"]) == {"none"}, (local, proto, seq)
    assert cgroup.counters()[BOUND]["steered"] - before == 150, "counted as skipped, bound"
    for dst, wildcard in ((SERVER4, "0.0.0.0"), (SERVER6, "::")):
        spread = collections.Counter(cgroup.probe(["--dst", dst, "--count", "50", "--proto", "tcp", "--bind", wildcard],
                                                  lab.client_netns)["decisions"])
        assert spread == {"mark:0x200": 25, "mark:0x100": 25}, spread


def replace_under_a_connect_loop(lab, cgroup, method):
    """Replace the object while a process in the cgroup connects 1,000 times a second.

    Every uplink carries a mark, so an unsteered socket shows as "none". The program is
    the same for every host: the second object is the same source built elsewhere (other
    bytes, so the module replaces it); the maps converged after it give mobile another
    mark, so the decisions show the replacement's run went on. Returns the replacing run,
    the decisions, how many program runs the shared counters saw (steered, failed and
    skipped, every slot) and the seconds."""
    first = build(cgroup, "round_robin", (dict(MOBILE, mark=0x200), WIFI), name="first")
    second = build(cgroup, "weighted", (dict(MOBILE, mark=0x300, weight=2), WIFI), name="second",
                   extra_cflags=("-fdebug-prefix-map=/=/second/",))
    attach(cgroup, first, attach_method=method)
    seen_before = program_runs(cgroup)
    started = time.monotonic()
    loop = subprocess.Popen(cgroup.argv([sys.executable, str(PROBE), "--dst", SERVER4, "--rate", "1000",
                                         "--duration", "120"], lab.client_netns), stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        result = attach(cgroup, second, attach_method=method)
        time.sleep(max(2.0, 5.5 - (time.monotonic() - started)))
    finally:
        loop.terminate()
        out, _ = loop.communicate(timeout=60)
    seconds = time.monotonic() - started
    return result, json.loads(out)["decisions"], program_runs(cgroup) - seen_before, seconds


def program_runs(cgroup):
    return sum(c["steered"] + c["errors"] for c in cgroup.counters().values())


def test_replace_through_bpf_links_is_atomic(lab, cgroup):
    result, decisions, runs, seconds = replace_under_a_connect_loop(lab, cgroup, "auto")
    swaps = [a for a in result["actions"] if a.startswith("replace the program of bpf_link")]
    assert len(swaps) == 4 and not [a for a in result["actions"] if a.startswith(("attach", "detach"))], result["actions"]
    assert all(p["link_id"] for p in result["programs"]) and len(result["programs"]) == 4, result["programs"]
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    ids = {p["id"] for p in result["programs"]}
    assert len([ln for ln in links if ln.get("prog_id") in ids and ln.get("type") == "cgroup"]) == 4
    print("bpf_link replace: %d connects in %.1f s (%.0f/s), %d program runs, decisions %s"
          % (len(decisions), seconds, len(decisions) / seconds, runs, dict(collections.Counter(decisions))))
    assert seconds >= 5 and len(decisions) >= 4000
    counts = collections.Counter(decisions)
    assert "none" not in counts and counts["mark:0x200"] and counts["mark:0x300"], counts
    assert runs == len(decisions), "%d connects, %d program runs: some socket met both programs" % (len(decisions), runs)
    assert sorted(os.listdir(cgroup.pin_dir)) == sorted([result["pin_path"].rsplit("/", 1)[1], "links", "maps"])
    assert len(os.listdir(os.path.join(cgroup.pin_dir, "links"))) == 4


def test_legacy_replace_is_gapless(lab, cgroup):
    result, decisions, runs, seconds = replace_under_a_connect_loop(lab, cgroup, "legacy")
    acts = result["actions"]
    assert "attach mw_connect4 at connect4" in acts, acts
    assert acts.index("attach mw_connect4 at connect4") < next(i for i, a in enumerate(acts) if a.startswith("detach mw_connect4"))
    counts = collections.Counter(decisions)
    assert "none" not in counts and counts["mark:0x200"] and counts["mark:0x300"], counts
    # The overlap: both programs attached for a moment, a socket then runs through both.
    print("legacy replace: %d connects in %.1f s, %d program runs (%d sockets met both programs)"
          % (len(decisions), seconds, runs, runs - len(decisions)))
    assert runs >= len(decisions)
    assert all(p["link_id"] is None for p in result["programs"])
    hooks = collections.Counter(p["attach_type"] for p in result["programs"])
    assert hooks == {"connect4": 1, "connect6": 1, "sendmsg4": 1, "sendmsg6": 1}
    pinned = os.listdir(cgroup.pin_dir)
    assert len(pinned) == 2 and "maps" in pinned, "the old object stays pinned: %s" % pinned


def test_idempotence_check_mode_and_absent(lab, cgroup):
    obj = build(cgroup, "random")
    check = attach(cgroup, obj, check=True, diff=True)
    assert check["changed"] is True and "(absent)" in check["diff"]["before"]
    assert not os.path.exists(cgroup.path) and not os.path.exists(cgroup.pin_dir)

    assert attach(cgroup, obj)["changed"] is True
    again = attach(cgroup, obj, diff=True)
    assert again["changed"] is False and again["diff"]["before"] == again["diff"]["after"]
    ids = {p["id"] for p in again["programs"]}
    assert ids == {p["id"] for p in attach(cgroup, obj)["programs"]}, "reloaded although unchanged"

    assert attach(cgroup, obj, check=True, state="absent")["changed"] is True
    assert os.path.isdir(cgroup.path) and os.path.isdir(cgroup.pin_dir)
    gone = attach(cgroup, obj, state="absent")
    assert gone["changed"] is True and gone["programs"] == []
    assert not os.path.exists(cgroup.path), "the module created the cgroup, so absent removes it"
    assert not os.path.exists(cgroup.pin_dir)
    assert attach(cgroup, obj, state="absent")["changed"] is False


def test_bad_inputs_fail_cleanly_and_change_nothing(lab, cgroup):
    obj = build(cgroup, "random")
    bad_c = os.path.join(cgroup.tmp, "bad.bpf.c")
    with open(bad_c, "w") as handle:
        handle.write('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                     'SEC("cgroup/connect4") int bad(struct bpf_sock_addr *ctx)\n'
                     '{ int x[4]; return x[ctx->user_port & 7]; }\nchar LICENSE[] SEC("license") = "GPL";\n')
    bad_o = os.path.join(cgroup.tmp, "bad.bpf.o")
    import subprocess
    subprocess.run(["clang", "-O2", "-target", "bpf", "-I/usr/include/%s-linux-gnu" % os.uname().machine,
                    "-c", bad_c, "-o", bad_o], check=True, capture_output=True)
    cases = {
        "outside_cgroup2": ({"cgroup": "/etc/netlb", "object": obj}, "cgroup"),
        "escape": ({"cgroup": "../../etc", "object": obj}, "cgroup"),
        "missing_object": ({"object": "/nonexistent/x.o"}, "object"),
        "not_bpf": ({"object": "/bin/ls"}, "object"),
        "verifier": ({"object": bad_o}, "object"),
        "unknown_hook": ({"object": obj, "attach_types": ["connect9"]}, "attach_types[0]"),
        "hook_not_in_object": ({"object": obj, "attach_types": ["recvmsg4"]}, "attach_types[0]"),
        "pin_not_bpffs": ({"object": obj, "pin_dir": "/tmp/netlb-not-bpffs"}, "pin_dir"),
        "shared_map_not_in_object": ({"object": obj, "shared_maps": ["mw_nonexistent"]}, "shared_maps"),
    }
    for cid, (args, field) in cases.items():
        full = {"cgroup": cgroup.name, "pin_dir": cgroup.pin_dir}
        full.update(args)
        run = run_cases([{"id": cid, "args": full}], playbook="attach_cases.yml")
        result = run["results"][cid]
        assert failed_cleanly(result) and result["msg"].startswith(field + ":"), (cid, result["msg"])
        if cid == "verifier":
            assert "PROG LOAD LOG" in result["msg"] and "read_ok" in result["msg"], result["msg"]
        assert not os.path.exists(cgroup.path) and not os.path.exists(cgroup.pin_dir), cid


UDP_PROBE = Path(__file__).with_name("udp_probe.py")
# The document's uplinks for the engine: wifi has its own table (100, the fixture's).
DOC_UPLINKS = [dict(MOBILE), dict(WIFI, table=100)]
# Both marked (mobile's mark has no rule: main routes it), so a socket left alone shows as "none".
BOTH_MARKED = [dict(MOBILE, mark=0x200, table=200), dict(WIFI, table=100)]


def unconnected_udp(lab, cgroup, dst, sockets, datagrams=3, port=9999, between=None, churn=0):
    """{sender port: [source of datagram 0, 1, ...]} as the lab's server received them.
    *between*: called once every socket has sent its first datagram, before the others;
    *churn*: that many other sockets send one datagram each and close at that point."""
    server = lab._in(lab.inet_netns, udp_probe.serve_argv(sys.executable, str(UDP_PROBE), port=port,
                                                          expect=sockets * datagrams, bind="::" if ":" in dst else "0.0.0.0"))
    with tempfile.TemporaryDirectory(prefix="netlb-udp-hold-") as tmp:
        hold = os.path.join(tmp, "go") if between else None
        send = udp_probe.send_command(sys.executable, str(UDP_PROBE), dst=dst, port=port, sockets=sockets,
                                      datagrams=datagrams, hold=hold, churn=churn)

        def run_sender():
            if not between:
                return subprocess.run(cgroup.argv(send.split(), lab.client_netns), capture_output=True, text=True,
                                      timeout=60)
            with subprocess.Popen(cgroup.argv(send.split(), lab.client_netns), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as sender:
                deadline = time.monotonic() + 30
                while not os.path.exists(hold + ".held") and time.monotonic() < deadline and sender.poll() is None:
                    time.sleep(0.05)
                between()
                open(hold, "w").close()
                out, err = sender.communicate(timeout=60)
            return subprocess.CompletedProcess(sender.args, sender.returncode, out, err)

        return udp_probe.collect(server, run_sender)


def test_unconnected_udp_a_socket_keeps_one_uplink_from_its_first_datagram(lab, cgroup):
    obj = build(cgroup, "weighted")
    attach(cgroup, obj)
    usb, wifi = lab.uplinks
    changes = converge_engine(lab.client_netns, cgroup.pin_dir, obj, DOC_UPLINKS, steering="fwmark")
    assert "add rule from %s/32 lookup 100 pref 10000" % wifi.address in changes, changes
    assert "add rule from %s/128 lookup 100 pref 10000" % wifi.address6 in changes, changes
    assert converge_engine(lab.client_netns, cgroup.pin_dir, obj, DOC_UPLINKS, steering="fwmark") == []
    assert "from %s lookup 100" % wifi.address in lab.client_exec(["ip", "rule", "show"]).stdout

    for dst, sockets, addresses in ((SERVER4, 200, (usb.address, wifi.address)),
                                    (SERVER6, 100, (usb.address6, wifi.address6))):
        by_socket = unconnected_udp(lab, cgroup, dst, sockets)
        assert len(by_socket) == sockets, "every socket's datagrams arrived: %d of %d" % (len(by_socket), sockets)
        # Every datagram of a socket - the first one included - from one uplink's address.
        spread = udp_probe.spread(by_socket, 3)
        assert set(spread) == set(addresses), spread
        assert all(abs(n - sockets / 2) <= 0.075 * sockets for n in spread.values()), spread


def test_unconnected_udp_sockets_follow_their_uplink_to_its_new_slot(lab, cgroup):
    """The inventory swaps the uplinks between a socket's first datagram and the next:
    each socket keeps the uplink (and source address) it started with."""
    obj = build(cgroup, "weighted")
    attach(cgroup, obj)
    usb, wifi = lab.uplinks
    converge_engine(lab.client_netns, cgroup.pin_dir, obj, DOC_UPLINKS, steering="fwmark")
    swapped = []
    by_socket = unconnected_udp(lab, cgroup, SERVER4, 200, between=lambda: swapped.append(converge_engine(
        lab.client_netns, cgroup.pin_dir, obj, DOC_UPLINKS[::-1], steering="fwmark")))
    assert swapped and "selection" in " ".join(swapped[0]), swapped
    assert len(by_socket) == 200, "every socket's datagrams arrived: %d of 200" % len(by_socket)
    spread = udp_probe.spread(by_socket, 3)  # every datagram of a socket from one address
    assert set(spread) == {usb.address, wifi.address} and all(abs(n - 100) <= 15 for n in spread.values()), spread


def test_unconnected_udp_sockets_keep_their_uplink_however_many_others_come_and_go(lab, cgroup):
    """200 sockets send their first datagram, then 20,001 others each send one and close,
    then the 200 send again: each keeps its uplink and picked once. The uplink lives on the
    socket (socket local storage, freed with it), so closed sockets leave nothing behind and
    nothing pushes out a live socket's entry - the 16,384-entry LRU it replaces forgot all
    200 (an odd churn: the 1:1 rotation then gives a forgotten socket the other uplink)."""
    obj = build(cgroup, "weighted")
    attach(cgroup, obj)
    usb, wifi = lab.uplinks
    converge_engine(lab.client_netns, cgroup.pin_dir, obj, DOC_UPLINKS, steering="fwmark")
    shape = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "pinned", cgroup.pin_dir + "/maps/mw_udp_sockets"],
                                      capture_output=True, text=True, check=True).stdout)
    assert shape["type"] == "sk_storage", shape
    before = sum(c["steered"] for c in cgroup.counters().values())
    by_socket = unconnected_udp(lab, cgroup, SERVER4, 200, churn=20001)
    assert len(by_socket) == 200, "every socket's datagrams arrived: %d of 200" % len(by_socket)
    spread = udp_probe.spread(by_socket, 3)  # every datagram of a socket from one address
    assert set(spread) == {usb.address, wifi.address} and all(abs(n - 100) <= 15 for n in spread.values()), spread
    # Each socket picked once: the 200, and the 20,000 others.
    picks = sum(c["steered"] for c in cgroup.counters().values()) - before
    assert picks == 20201, picks


def test_port_exclusions(lab, cgroup):
    # Both uplinks carry a mark: a socket left alone shows as "none".
    obj = build(cgroup, "round_robin", (dict(MOBILE, mark=0x200), WIFI))
    attach(cgroup, obj)
    ports = [{"proto": "tcp", "port": "22"}, {"proto": "udp", "port": "6881-6889"}]
    assert "test: excluded ports" in converge_engine(lab.client_netns, cgroup.pin_dir, obj, BOTH_MARKED,
                                                    steering="fwmark", exclude_ports=ports)
    before = cgroup.counters()[EXCLUDED]["steered"]

    def decisions(port, proto, count=100):
        return collections.Counter(cgroup.probe(["--dst", SERVER4, "--count", str(count), "--port", str(port),
                                                 "--proto", proto], lab.client_netns)["decisions"])

    assert decisions(22, "tcp") == {"none": 100}
    spread = decisions(80, "tcp")
    assert "none" not in spread and len(spread) == 2, spread
    assert decisions(6885, "udp", 50) == {"none": 50}
    assert "none" not in decisions(6890, "udp", 50)
    assert "none" not in decisions(6885, "tcp", 50), "a udp exclusion leaves tcp to that port steered"
    assert "none" not in decisions(22, "udp", 50)
    assert cgroup.counters()[EXCLUDED]["steered"] - before == 150, "excluded connects count as skipped, excluded"


def test_other_network_namespaces_in_the_cgroup_are_left_alone(lab, cgroup):
    obj = build(cgroup, "round_robin", (dict(MOBILE, mark=0x200), WIFI))
    attach(cgroup, obj)
    other = "nlbfw-other%d" % (os.getpid() % 10000)
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        for argv in (["link", "set", "lo", "up"], ["link", "add", "ctr0", "type", "veth", "peer", "name", "ctr1"],
                     ["addr", "add", "10.99.0.2/24", "dev", "ctr0"], ["link", "set", "ctr0", "up"],
                     ["link", "set", "ctr1", "up"],
                     ["route", "add", "default", "dev", "ctr0"]):
            subprocess.run(["ip", "-n", other] + argv, check=True)
        assert "test: host namespace and exclusions" in converge_engine(lab.client_netns, cgroup.pin_dir, obj,
                                                                        BOTH_MARKED, steering="fwmark", netns_guard=True)
        skipped = cgroup.counters()[FOREIGN]["steered"]
        foreign = collections.Counter(cgroup.probe(["--dst", SERVER4, "--count", "100"], other)["decisions"])
        assert foreign == {"none": 100}, foreign
        assert cgroup.counters()[FOREIGN]["steered"] - skipped == 100, "counted as skipped, another namespace's"
        host = collections.Counter(cgroup.probe(["--dst", SERVER4, "--count", "100"], lab.client_netns)["decisions"])
        assert host == {"mark:0x200": 50, "mark:0x100": 50}, host
        # Without the guard the same sockets are steered: the guard is what left them alone.
        converge_engine(lab.client_netns, cgroup.pin_dir, obj, BOTH_MARKED, steering="fwmark")
        foreign = collections.Counter(cgroup.probe(["--dst", SERVER4, "--count", "100"], other)["decisions"])
        assert "none" not in foreign, foreign
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)
