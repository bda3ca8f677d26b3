"""module_utils/rp_filter on a fake /proc/sys/net/ipv4/conf: which uplinks are loosened,
what is recorded, what absent, keep or an uplink gone from the document puts back.
The live check (a strict host, connects that complete, absent): tests/integration/
test_role_rp_filter_containers.py."""
import json

import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import rp_filter

WIFI = {"name": "wifi", "interface": "wlp1s0"}
MOBILE = {"name": "mobile", "interface": "usb0"}


def doc(tmp_path, steering="device", knob="loose", uplinks=(MOBILE, WIFI)):
    return {"steering": steering, "rp_filter": knob, "state_dir": str(tmp_path / "state"), "uplinks": list(uplinks)}


@pytest.fixture
def conf(tmp_path):
    root = tmp_path / "conf"

    def setting(**values):
        for interface, value in values.items():
            (root / interface).mkdir(parents=True, exist_ok=True)
            (root / interface / "rp_filter").write_text("%d\n" % value)
        return {p.name: int((p / "rp_filter").read_text()) for p in root.iterdir()}

    setting.path = str(root)
    return setting


def test_device_steering_loosens_every_uplink_and_records_what_it_was(tmp_path, conf):
    conf(all=1, usb0=1, wlp1s0=0)
    d = doc(tmp_path)
    assert rp_filter.converge(d, conf=conf.path) == ["rp_filter usb0 (mobile): 1 -> 2 (loose)",
                                                     "rp_filter wlp1s0 (wifi): 0 -> 2 (loose)"]
    assert conf() == {"all": 1, "usb0": 2, "wlp1s0": 2}
    assert json.loads((tmp_path / "state" / "rp_filter.json").read_text()) == {"usb0": 1, "wlp1s0": 0}
    assert rp_filter.converge(d, conf=conf.path) == []  # converged: nothing to do
    assert rp_filter.converge(d, present=False, conf=conf.path) == [
        "rp_filter usb0: 2 -> 1 (as before the balancer)", "rp_filter wlp1s0: 2 -> 0 (as before the balancer)"]
    assert conf() == {"all": 1, "usb0": 1, "wlp1s0": 0}
    assert not (tmp_path / "state" / "rp_filter.json").exists()


@pytest.mark.parametrize("steering", ["fwmark", "vrf"])
def test_fwmark_and_vrf_steering_need_nothing(tmp_path, conf, steering):
    conf(all=1, usb0=1, wlp1s0=1)
    assert rp_filter.steered_interfaces(doc(tmp_path, steering=steering)) == []
    assert rp_filter.converge(doc(tmp_path, steering=steering), conf=conf.path) == []
    assert conf() == {"all": 1, "usb0": 1, "wlp1s0": 1}


def test_strict_through_all_counts_and_off_or_loose_is_left_alone(tmp_path, conf):
    # The kernel applies max(all, interface): 0 on the interface is strict when all is 1.
    conf(all=1, wlp1s0=0, usb0=2)
    assert rp_filter.strict(doc(tmp_path), conf.path) == [("wifi", "wlp1s0")]
    rp_filter.converge(doc(tmp_path), conf=conf.path)
    assert conf()["wlp1s0"] == 2
    rp_filter.converge(doc(tmp_path), present=False, conf=conf.path)
    assert conf()["wlp1s0"] == 0  # what it was, not what all says
    for all_value, own in ((0, 0), (2, 1), (0, 2)):
        conf(all=all_value, wlp1s0=own, usb0=own)
        assert rp_filter.converge(doc(tmp_path), conf=conf.path) == []
        assert conf()["wlp1s0"] == own


def test_keep_changes_nothing_and_puts_back_what_loose_changed(tmp_path, conf):
    conf(all=1, usb0=1, wlp1s0=1)
    assert rp_filter.converge(doc(tmp_path, knob="keep"), conf=conf.path) == []
    assert rp_filter.converge({k: v for k, v in doc(tmp_path).items() if k != "rp_filter"}, conf=conf.path) == [], \
        "a document written before the knob existed changes nothing"
    rp_filter.converge(doc(tmp_path), conf=conf.path)
    assert rp_filter.converge(doc(tmp_path, knob="keep"), conf=conf.path) == [
        "rp_filter usb0: 2 -> 1 (as before the balancer)", "rp_filter wlp1s0: 2 -> 1 (as before the balancer)"]
    assert conf() == {"all": 1, "usb0": 1, "wlp1s0": 1}


def test_an_uplink_gone_from_the_document_gets_its_value_back(tmp_path, conf):
    conf(all=1, usb0=1, wlp1s0=1)
    rp_filter.converge(doc(tmp_path), conf=conf.path)
    rp_filter.converge(doc(tmp_path, uplinks=[MOBILE]), conf=conf.path)
    assert conf() == {"all": 1, "usb0": 2, "wlp1s0": 1}


def test_a_reset_interface_is_loosened_again_and_keeps_its_first_recorded_value(tmp_path, conf):
    # A replugged modem or a reboot: the interface is back at the distribution's 1.
    conf(all=1, usb0=1, wlp1s0=1)
    rp_filter.converge(doc(tmp_path), conf=conf.path)
    conf(wlp1s0=1)
    assert rp_filter.converge(doc(tmp_path), conf=conf.path) == ["rp_filter wlp1s0 (wifi): 1 -> 2 (loose)"]
    assert json.loads((tmp_path / "state" / "rp_filter.json").read_text()) == {"usb0": 1, "wlp1s0": 1}


def test_check_mode_and_a_missing_interface_change_nothing(tmp_path, conf):
    conf(all=1, usb0=2, wlp1s0=1)
    assert rp_filter.converge(doc(tmp_path), check_mode=True, conf=conf.path) == [
        "rp_filter wlp1s0 (wifi): 1 -> 2 (loose)"]
    assert conf()["wlp1s0"] == 1 and not (tmp_path / "state").exists()
    gone = dict(WIFI, interface="wwan0")
    assert rp_filter.converge(doc(tmp_path, uplinks=[MOBILE, gone]), conf=conf.path) == []


def test_an_unwritable_setting_names_the_knob(tmp_path, conf, monkeypatch):
    conf(all=1, usb0=2, wlp1s0=1)

    def refuse(path, mode="r", *args, **kwargs):
        if mode == "w" and path.endswith("rp_filter"):
            raise PermissionError(13, "Read-only file system")
        return open_(path, mode, *args, **kwargs)

    open_ = open
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(rp_filter.RpFilterError, match="rp_filter: cannot write 2 to .*wlp1s0.*balancer_rp_filter: keep"):
        rp_filter.converge(doc(tmp_path), conf=conf.path)
