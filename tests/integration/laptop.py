"""The one-guest labs of the role tests: a laptop with mobile data (usb0,
40 Mbit/s, the primary uplink) and wifi (wlp1s0, 20 Mbit/s); an edge box with three
unshaped uplinks (usb0, wlp1s0, enp2s0) in a systemd container."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest

from tests.lab.fleet import GuestSpec
from tests.lab.netlab import Uplink


@contextlib.contextmanager
def laptop(fleet_class, available, name: str, **fleet_options):
    """(scratch directory, fleet, guest), or the test is skipped with the lab's reason."""
    reason = available()
    if reason:
        pytest.skip(reason)
    spec = GuestSpec("laptop", [Uplink("usb0", 40), Uplink("wlp1s0", 20)])
    with tempfile.TemporaryDirectory(prefix="netlb-%s-" % name) as tmp, \
            fleet_class([spec], name=name, **fleet_options) as fleet:
        yield tmp, fleet, fleet.guests[0]


@contextlib.contextmanager
def edge(name: str):
    """(scratch directory, fleet, guest): the edge box in a systemd container, or the test
    is skipped with the lab's reason."""
    from tests.lab.containers import ContainerFleet, containers_available

    reason = containers_available()
    if reason:
        pytest.skip(reason)
    spec = GuestSpec("edge", [Uplink("usb0"), Uplink("wlp1s0"), Uplink("enp2s0")])
    with tempfile.TemporaryDirectory(prefix="netlb-%s-" % name) as tmp, ContainerFleet([spec], name=name) as fleet:
        yield tmp, fleet, fleet.guests[0]


def fwmark_edge_vars(tmp: str, guest_fleet, guest, **extra) -> dict:
    """The edge box's host vars: fwmark steering, the program built on the controller (no
    clang and no package mirror in the container); *extra* adds the policy, cgroup..."""
    return {**guest_fleet.host_vars(guest),
            "balancer_manage_packages": False,  # no package mirror reachable from the container
            "balancer_build_on": "controller",
            "balancer_build_cache": str(Path(tmp, "build")),
            "balancer_steering": "fwmark",
            **extra}


def fwmark_laptop_vars(tmp: str, guest_fleet, guest, **extra) -> dict:
    """The laptop's host vars in a systemd container: fwmark steering, round robin, wifi
    in table 100 with mark 0x100, the program built on the controller (no clang and no
    package mirror in the container)."""
    usb, wifi = guest.uplinks
    return {**guest_fleet.host_vars(guest),
            "balancer_manage_packages": False,
            "balancer_build_on": "controller",
            "balancer_build_cache": str(Path(tmp, "build")),
            "balancer_steering": "fwmark",
            "balancer_policy": "round_robin",
            "balancer_cgroup": "multiwan",
            "balancer_uplinks": [
                {"name": "mobile", "interface": "usb0", "gateway": usb.gateway},
                {"name": "wifi", "interface": "wlp1s0", "gateway": wifi.gateway, "gateway6": wifi.gateway6,
                 "table": 100, "mark": 0x100},
            ],
            **extra}


def device_laptop_vars(tmp: str, guest_fleet, guest, **extra) -> dict:
    """The laptop's host vars for device steering (no VRF, table or rule: each socket bound
    to its uplink's interface), round robin; the host needs a default route per uplink."""
    return {**guest_fleet.host_vars(guest),
            "balancer_manage_packages": False,
            "balancer_build_cache": str(Path(tmp, "build")),
            "balancer_steering": "device",
            "balancer_policy": "round_robin",
            "balancer_cgroup": "multiwan",
            "balancer_uplinks": [{"name": "mobile", "interface": "usb0"}, {"name": "wifi", "interface": "wlp1s0"}],
            **extra}
