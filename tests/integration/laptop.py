"""The one-guest lab of the role tests: a laptop with mobile data (usb0,
40 Mbit/s, the primary uplink) and wifi (wlp1s0, 20 Mbit/s)."""
from __future__ import annotations

import contextlib
import tempfile

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
