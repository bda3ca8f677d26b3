"""netlb.multiwan.fwmark_table on this machine's kernel, in a lab namespace."""
import pytest

from tests.integration.ansible_runner import failed_cleanly, run_cases, snapshot
from tests.lab.netlab import Lab, Uplink

pytestmark = pytest.mark.hostkernel


@pytest.fixture(scope="module")
def lab():
    with Lab([Uplink("usb0"), Uplink("wlp1s0")], name="nlbft", server=False) as lab:
        yield lab


def apply(args, **kw):
    run = run_cases([{"id": "c", "args": args}], playbook="fwmark_cases.yml", **kw)
    assert run["rc"] == 0, run["output"][-3000:]
    return run["results"]["c"]


def wifi_args(lab, **over):
    wifi = lab.uplinks[1]
    args = {"table": 100, "mark": 0x100, "interface": "wlp1s0", "netns": lab.client_netns,
            "routes": [{"gateway": wifi.gateway}, {"gateway": wifi.gateway6}]}
    args.update(over)
    return args


def test_lifecycle(lab):
    ns = lab.client_netns
    blank = snapshot(ns)
    check = apply(wifi_args(lab), check=True, diff=True)
    assert check["changed"] is True and "fwmark 0x100 lookup 100" in check["diff"]["after"]
    assert snapshot(ns) == blank

    made = apply(wifi_args(lab), diff=True)
    assert made["changed"] is True
    state = snapshot(ns)
    assert "10000:\tfrom all fwmark 0x100 lookup 100" in state["rule4"]
    assert "10000:\tfrom all fwmark 0x100 lookup 100" in state["rule6"]
    assert "default via 198.51.100.1 dev wlp1s0 table 100" in state["route4"]
    assert "198.51.100.0/24 dev wlp1s0 table 100" in state["route4"]
    assert "default via 2001:db8:2::1 dev wlp1s0 table 100" in state["route6"]
    # The main table is untouched.
    assert [ln for ln in state["route4"].splitlines() if "table" not in ln] == \
        [ln for ln in blank["route4"].splitlines() if "table" not in ln]

    again = apply(wifi_args(lab))
    assert again["changed"] is False and again["actions"] == []
    assert snapshot(ns) == state

    # Marked traffic really leaves through wlp1s0.
    out = lab.client_exec(["ip", "route", "get", "100.64.0.1", "mark", "0x100"]).stdout
    assert "via 198.51.100.1 dev wlp1s0" in out

    assert apply(dict(wifi_args(lab), state="absent"), check=True)["changed"] is True
    assert snapshot(ns) == state
    assert apply(dict(wifi_args(lab), state="absent"))["changed"] is True
    assert snapshot(ns) == blank
    assert apply(dict(wifi_args(lab), state="absent"))["changed"] is False


@pytest.mark.parametrize("over, field", [
    ({"mark": 0}, "mark"),
    ({"mask": 0xff}, "mask"),
    ({"table": 254}, "table"),
    ({"priority": 32766}, "priority"),
    ({"interface": "wlan9"}, "interface"),
    ({"routes": [{"gateway": "203.0.113.1"}]}, "routes[0].gateway"),
    ({"netns": "no-such-ns"}, "netns"),
])
def test_bad_input_fails_cleanly_and_changes_nothing(lab, over, field):
    before = snapshot(lab.client_netns)
    result = apply(wifi_args(lab, **over))
    assert failed_cleanly(result) and result["msg"].startswith(field + ":"), result["msg"]
    assert snapshot(lab.client_netns) == before


def test_one_mark_one_table(lab):
    apply(wifi_args(lab))
    try:
        before = snapshot(lab.client_netns)
        result = apply(wifi_args(lab, table=101))
        assert failed_cleanly(result) and result["msg"].startswith("mark: 0x100 already selects table 100")
        assert snapshot(lab.client_netns) == before
    finally:
        apply(dict(wifi_args(lab), state="absent"))
