"""Validation and route model of the vrf module (no kernel needed)."""
import pytest

from ansible_collections.netlb.multiwan.plugins.module_utils import vrf_model as m


def params(**over):
    base = dict(name="wifi-vrf", table=10, interfaces=["wlp1s0"], routes=[], state="present",
                netns=None, unreachable_default=True, force=False)
    base.update(over)
    return base


def route(**spec):
    full = dict(dst="default", gateway=None, interface=None, scope=None, metric=None, type="unicast")
    full.update(spec)
    return full


@pytest.mark.parametrize("name", ["wifi-vrf", "a", "vrf_10.x-y", "A" * 15])
def test_valid_names(name):
    m.validate_params(params(name=name))


@pytest.mark.parametrize("name", ["", "A" * 16, "wifi vrf", "x;rm -rf /", "vrf\"", "vrf\n", "vrf/1", "..", "é"])
def test_bad_names_name_the_field(name):
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(name=name))
    assert err.value.field == "name"
    assert str(err.value).startswith("name: ")


@pytest.mark.parametrize("table", [0, 253, 254, 255, -1, 2 ** 32, None, True, "10"])
def test_bad_tables(table):
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(table=table))
    assert err.value.field == "table"


def test_reserved_table_message_says_which():
    with pytest.raises(m.ValidationError, match="'main' table"):
        m.validate_params(params(table=254))


@pytest.mark.parametrize("table", [1, 10, 252, 256, 2 ** 32 - 1])
def test_good_tables(table):
    m.validate_params(params(table=table))


def test_absent_needs_no_table():
    assert m.validate_params(params(state="absent", table=None)) == []


@pytest.mark.parametrize("interfaces, field", [
    (["wlp1s0", "wlp1s0"], "interfaces[1]"),
    (["lo"], "interfaces[0]"),
    (["wifi-vrf"], "interfaces[0]"),
    (["ok", "bad name"], "interfaces[1]"),
    (["x" * 16], "interfaces[0]"),
])
def test_bad_interfaces(interfaces, field):
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(interfaces=interfaces))
    assert err.value.field == field


@pytest.mark.parametrize("netns", ["../etc", "a/b", "", "x" * 65])
def test_bad_netns(netns):
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(netns=netns))
    assert err.value.field == "netns"


def test_default_route_family_follows_gateway():
    r4, r6 = m.validate_params(params(routes=[route(gateway="10.0.0.1"), route(gateway="2001:db8::1")]))
    assert (r4.family, r4.dst, r4.metric, r4.scope) == (m.AF_INET, "default", 0, "global")
    assert (r6.family, r6.dst, r6.metric) == (m.AF_INET6, "default", 1024)
    assert r4.render() == "default via 10.0.0.1"


def test_prefix_is_normalised():
    (r,) = m.validate_params(params(routes=[route(dst="203.0.113.7/24", interface="wlp1s0")]))
    assert r.dst == "203.0.113.0/24" and r.scope == "link" and r.dev == "wlp1s0"
    assert r.render() == "203.0.113.0/24 dev wlp1s0 scope link"


@pytest.mark.parametrize("spec, field", [
    (route(dst="300.1.1.0/24", gateway="10.0.0.1"), "routes[0].dst"),
    (route(dst="10.0.0.0/33", gateway="10.0.0.1"), "routes[0].dst"),
    (route(gateway="10.0.0.256"), "routes[0].gateway"),
    (route(gateway="; reboot"), "routes[0].gateway"),
    (route(dst="2001:db8::/64", gateway="10.0.0.1"), "routes[0].gateway"),
    (route(dst="10.1.0.0/16"), "routes[0]"),
    (route(gateway="10.0.0.1", interface="eth9"), "routes[0].interface"),
    (route(gateway="10.0.0.1", scope="link"), "routes[0].scope"),
    (route(gateway="10.0.0.1", metric=-1), "routes[0].metric"),
    (route(gateway="10.0.0.1", metric=2 ** 32), "routes[0].metric"),
    (route(type="unreachable", gateway="10.0.0.1"), "routes[0]"),
    (route(type="nat", gateway="10.0.0.1"), "routes[0].type"),
    (dict(dst="default", via="10.0.0.1"), "routes[0]"),
    ("default via 10.0.0.1", "routes[0]"),
])
def test_bad_routes(spec, field):
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(routes=[spec]))
    assert err.value.field == field


def test_duplicate_route_keys():
    with pytest.raises(m.ValidationError) as err:
        m.validate_params(params(routes=[route(gateway="10.0.0.1"), route(dst="0.0.0.0/0", gateway="10.0.0.9")]))
    assert err.value.field == "routes[1]"


def test_connected_routes_skip_link_local_and_host_prefixes():
    got = m.connected_routes("wlp1s0", ["10.0.0.2/24", "10.9.9.9/32", "fe80::1/64", "2001:db8:2::2/64"])
    assert [r.render() for r in got] == ["10.0.0.0/24 dev wlp1s0 scope link src 10.0.0.2",
                                         "2001:db8:2::/64 dev wlp1s0 metric 256"]


def test_gateway_reachable():
    links = m.connected_routes("wlp1s0", ["10.0.0.2/24", "2001:db8:2::2/64"])
    assert m.gateway_reachable("10.0.0.1", m.AF_INET, links)
    assert not m.gateway_reachable("10.0.1.1", m.AF_INET, links)
    assert m.gateway_reachable("2001:db8:2::1", m.AF_INET6, links)
    assert m.gateway_reachable("fe80::1", m.AF_INET6, [])
    assert not m.gateway_reachable("10.0.0.1", m.AF_INET, [])


def test_plan_routes_only_missing_or_different():
    have = [
        m.Route(m.AF_INET, "10.0.0.0/24", dev="wlp1s0", scope="link", src="10.0.0.2"),
        m.Route(m.AF_INET, "default", gateway="10.0.0.1", dev="wlp1s0"),
    ]
    wanted = [
        m.Route(m.AF_INET, "10.0.0.0/24", dev="wlp1s0", scope="link"),   # src not compared
        m.Route(m.AF_INET, "default", gateway="10.0.0.1"),               # dev left to the kernel
    ] + m.unreachable_defaults([m.AF_INET])
    todo = m.plan_routes(wanted, have)
    assert [r.render() for r in todo] == ["unreachable default metric 4278198272"]
    # A different gateway for the same key must be replaced.
    todo = m.plan_routes([m.Route(m.AF_INET, "default", gateway="10.0.0.254")], have)
    assert len(todo) == 1


def test_predict_routes_replaces_by_key_and_drops_released_devices():
    have = [
        m.Route(m.AF_INET, "default", gateway="10.0.0.1", dev="wlp1s0"),
        m.Route(m.AF_INET, "192.0.2.0/24", dev="eth1", scope="link"),
    ]
    after = m.predict_routes(have, [m.Route(m.AF_INET, "default", gateway="10.0.0.254")], removed_devs=["eth1"])
    assert [r.render() for r in after] == ["default via 10.0.0.254"]


def test_render_state_for_diff():
    assert m.render_state({"exists": False}) == "vrf: absent\n"
    text = m.render_state({
        "exists": True, "name": "wifi-vrf", "table": 10, "up": True, "interfaces": ["wlp1s0"],
        "routes": m.unreachable_defaults([m.AF_INET]) + [m.Route(m.AF_INET, "default", gateway="10.0.0.1", dev="wlp1s0")],
    })
    assert text.splitlines() == [
        "vrf: wifi-vrf", "table: 10", "state: up", "interfaces:", "  - wlp1s0", "routes (table 10):",
        "  - default via 10.0.0.1 dev wlp1s0", "  - unreachable default metric 4278198272",
    ]


def test_validation_helpers_are_the_schemas():
    addr = m.parse_address(" 2001:DB8::1 ", "gateway")
    assert addr.version == 6 and str(addr) == "2001:db8::1"
    assert m.normalise_network("10.1.2.3/8", "dst") == ("10.0.0.0/8", m.AF_INET)
    assert m.normalise_network("::/0", "dst") == ("default", m.AF_INET6)
    assert m.validate_metric(None, "metric") is None and m.validate_metric(5, "metric") == 5
    assert m.validate_ifname("wlp1s0", "interface") == "wlp1s0"
    assert m.validate_table(10) == 10
    with pytest.raises(m.ValidationError, match="^table: is required when state=present$"):
        m.validate_table(None)
    with pytest.raises(m.ValidationError, match="^gateway: 'fe80::1%eth0' is not a valid IP address$"):
        m.parse_address("fe80::1%eth0", "gateway")
