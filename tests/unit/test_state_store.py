"""The state document: built whole from the plan (balancer_state filter), checked the same
way by every reader (state_store.read / load)."""

import json

import pytest

from ansible_collections.netlb.multiwan.plugins.filter.balancer_state import balancer_state
from ansible_collections.netlb.multiwan.plugins.module_utils import state_store
from ansible_collections.netlb.multiwan.plugins.plugin_utils import plan
from ansible.errors import AnsibleFilterError

MOBILE = {"name": "mobile", "interface": "usb0", "weight": 2, "gateway": "192.0.2.1"}
WIFI = {"name": "wifi", "interface": "wlp1s0", "vrf": "wifi-vrf", "table": 10, "gateway": "10.0.0.1",
        "gateway6": "2001:DB8::0:1", "weight": 3}
SETTINGS = {"ipv6": True, "object": "/var/lib/netlb-multiwan/multiwan.bpf.o", "attach_types": ["connect4"],
            "attachments": [{"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb"}], "attach_method": "auto",
            "rule_priority": 1000, "force": False, "metrics_textfile": None, "netns_guard": True,
            "rp_filter": "loose", "state_dir": "/var/lib/netlb-multiwan", "mptcp": "off"}


def test_the_document_is_the_plan_with_its_checked_values():
    doc = balancer_state(plan.plan([MOBILE, WIFI], steering="vrf", policy="weighted", exclude=["10.1.2.3/8"]),
                         SETTINGS)
    assert doc["version"] == 1 and doc["steering"] == "vrf" and doc["policy"] == "weighted"
    assert doc["exclude"] == ["10.0.0.0/8"]
    mobile, wifi = doc["uplinks"]
    assert (mobile["slot"], mobile["vrf"], mobile["table"], mobile["routes"]) == (0, None, None, [])
    # Gateways normalised by the schema.
    assert (wifi["slot"], wifi["weight"], wifi["gateway6"]) == (1, 3, "2001:db8::1")
    assert (wifi["vrf"], wifi["table"]) == ("wifi-vrf", 10)
    assert wifi["routes"] == [{"dst": "default", "gateway": "10.0.0.1"}, {"dst": "default", "gateway": "2001:db8::1"}]
    assert doc["attachments"] == SETTINGS["attachments"] and doc["rule_priority"] == 1000
    assert state_store.validate(json.loads(state_store.render(doc))) == doc


@pytest.mark.parametrize("settings, message", [
    (dict(SETTINGS, rule_priority="1000"), r"rule_priority has the wrong type \(str\)"),
    (dict(SETTINGS, force=1), r"force has the wrong type \(int\)"),
    (dict(SETTINGS, colour="blue"), "colour is not a setting of the document"),
    (dict((k, v) for k, v in SETTINGS.items() if k != "state_dir"), "state_dir is missing"),
    (dict(SETTINGS, attachments=[{"cgroup": "multiwan"}]), r"attachments\[0\] needs a cgroup and a pin_dir"),
])
def test_a_bad_setting_is_named(settings, message):
    with pytest.raises(AnsibleFilterError, match=message):
        balancer_state(plan.plan([MOBILE, WIFI], steering="vrf"), settings)


def test_a_main_table_gateway_is_checked_too():
    with pytest.raises(plan.ConfigError, match=r"uplinks\[0\].gateway"):
        plan.plan([dict(MOBILE, gateway="192.0.2.300"), WIFI], steering="vrf")


@pytest.mark.parametrize("text, message", [
    ("{", "is not JSON"),
    ("[]", "is not a JSON object"),
    ('{"version": 2, "uplinks": []}', "version is 2; this engine reads version 1"),
    ('{"version": 1, "uplinks": {}}', "uplinks must be a list of objects"),
    ('{"version": 1, "uplinks": [{"slot": 0}]}', r"uplinks\[0\] needs a name"),
])
def test_every_reader_refuses_the_same_documents(tmp_path, text, message):
    path = tmp_path / "balancer.json"
    path.write_text(text)
    with pytest.raises(state_store.StateError, match=message) as raised:
        state_store.load(str(path))
    assert str(raised.value).startswith(str(path))


def test_a_missing_document_is_none_to_read_and_an_error_to_load(tmp_path):
    path = str(tmp_path / "balancer.json")
    assert state_store.read(path) is None
    with pytest.raises(state_store.StateError, match="is missing: the balancer role has not been applied"):
        state_store.load(path)


ROLE = {"ipv6": True, "state_dir": "/var/lib/netlb-multiwan", "cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb",
        "slice": "multiwan-apps", "attach_method": "auto", "rule_priority": 1000, "force": False,
        "metrics_textfile": "", "netns_guard": True, "rp_filter": "loose", "mptcp": "off"}


def test_the_settings_from_the_role_s_variables():
    fwmark = plan.plan([MOBILE, dict(WIFI, vrf=None, mark=256, table=100)], steering="fwmark")
    doc = balancer_state(fwmark, role=ROLE)
    # sendmsg hooks: fwmark steering picks an uplink's table by source address for unconnected UDP.
    assert doc["attach_types"] == ["connect4", "sendmsg4", "connect6", "sendmsg6"]
    # systemd nests slices by their dashes: multiwan-apps.slice lives in multiwan.slice.
    assert doc["attachments"] == [
        {"cgroup": "multiwan", "pin_dir": "/sys/fs/bpf/netlb"},
        {"cgroup": "multiwan.slice/multiwan-apps.slice", "pin_dir": "/sys/fs/bpf/netlb_slice",
         "slice": "multiwan-apps.slice"}]
    assert doc["object"] == "/var/lib/netlb-multiwan/multiwan.bpf.o" and doc["metrics_textfile"] is None
    others = [k for k in SETTINGS if k not in ("object", "attach_types", "attachments")]
    assert dict((k, doc[k]) for k in others) == dict((k, SETTINGS[k]) for k in others)
    # As Jinja's | bool and | int read extra vars given as text; the whole host: no slice.
    text = balancer_state(plan.plan([MOBILE, WIFI], steering="vrf"),
                          role=dict(ROLE, ipv6="false", force="yes", rule_priority="20", cgroup="/",
                                    metrics_textfile="/run/m.prom"))
    assert (text["ipv6"], text["force"], text["rule_priority"]) == (False, True, 20)
    assert text["attach_types"] == ["connect4", "sendmsg4"] and text["attachments"] == [{"cgroup": "/", "pin_dir": "/sys/fs/bpf/netlb"}]
    assert text["metrics_textfile"] == "/run/m.prom"


@pytest.mark.parametrize("change, message", [
    ({"rule_priority": "high"}, "balancer_rule_priority must be an integer"),
    ({"ipv6": "maybe"}, "balancer_ipv6 must be a boolean"),
    ({"cgroup": 3}, "balancer_cgroup must be a string"),
])
def test_a_bad_role_variable_is_named(change, message):
    with pytest.raises(AnsibleFilterError, match=message):
        balancer_state(plan.plan([MOBILE], steering="fwmark"), role=dict(ROLE, **change))
    with pytest.raises(AnsibleFilterError, match="balancer_mptcp is missing"):
        balancer_state(plan.plan([MOBILE], steering="fwmark"), role=dict((k, v) for k, v in ROLE.items() if k != "mptcp"))
    with pytest.raises(AnsibleFilterError, match="exactly one of settings and role"):
        balancer_state(plan.plan([MOBILE], steering="fwmark"), SETTINGS, role=ROLE)
