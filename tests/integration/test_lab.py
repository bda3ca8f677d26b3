"""The lab itself: emulated uplinks in namespaces on this machine's kernel."""
import subprocess

import pytest

from tests.lab.netlab import Lab, LabError, Uplink, stream_local_hosts

pytestmark = pytest.mark.hostkernel


def netns_list():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_uplinks_route_and_lab_cleans_up():
    with Lab([Uplink("usb0", 40), Uplink("wlp1s0", 20)], name="nlbtest") as lab:
        assert "nlbtest-client" in netns_list() and "nlbtest-inet" in netns_list()
        usb, wifi = lab.uplinks
        # The primary carries the default route...
        assert set(stream_local_hosts(lab.iperf3(parallel=2, seconds=1))) == {usb.address}
        # ...and the second uplink routes both ways once a rule sends traffic to it.
        lab.client_exec(["ip", "rule", "add", "from", wifi.address, "lookup", "100"])
        lab.client_exec(["ip", "route", "add", "default", "via", wifi.gateway, "table", "100"])
        result = lab.iperf3(parallel=2, seconds=1, extra=["-B", wifi.address])
        assert set(stream_local_hosts(result)) == {wifi.address}
        # tbf shaping is in place on both ends.
        assert "tbf" in lab.client_exec(["tc", "qdisc", "show", "dev", "wlp1s0"]).stdout
    assert "nlbtest" not in netns_list()


def test_current_netns_is_refused_outside_a_guest(monkeypatch):
    monkeypatch.delenv("NETLB_IN_VM", raising=False)
    with pytest.raises(LabError, match="only allowed inside a VM lab guest"):
        Lab([Uplink("usb0")], client_netns=None)
