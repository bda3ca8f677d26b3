# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reverse-path filtering on the uplinks the balancer steers sockets to.

Strict mode (``rp_filter=1``, the default of several distributions) drops a packet
whose source the routing tables, looked up without the socket's mark, would not send
back out of the interface it arrived on. Device steering binds a socket to an uplink
whose default route the main table does not prefer: its replies arrive there, the
check picks the preferred uplink's route, they are dropped and the connect never
completes. Loose mode (2) only asks that the source be routable at all.

fwmark steering needs nothing: the ``from <address> lookup <table>`` rules that steer
unconnected UDP (uplink_routing.converge_source_rules) also send the check for a reply
to the uplink's address into that uplink's table (measured: 100 of 100 connects with
``rp_filter=1`` on every interface). VRF steering needs nothing either: the check
looks in the VRF's table.

The kernel uses the higher of ``conf/all`` and ``conf/<interface>``, so loose mode
on the uplink alone is enough: ``all`` and the other interfaces stay as they are.
An uplink is changed only when its effective setting is strict (off stays off),
and its value from before the first change is recorded beside the program
(``rp_filter.json`` in the state directory) so that ``absent``, a knob set to
``keep`` or an uplink gone from the document puts it back.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.netlb.multiwan.plugins.module_utils import steering
from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write, read_json

CONF = "/proc/sys/net/ipv4/conf"
STRICT, LOOSE = 1, 2
DEFAULT_STATE_DIR = "/var/lib/netlb-multiwan"
RECORD_NAME = "rp_filter.json"


class RpFilterError(OSError):
    """A setting could not be written (a read-only /proc/sys: a container without privileges)."""


def steered_interfaces(doc):
    """[(uplink name, interface)] whose replies a strict check would drop."""
    provider = steering.of(doc)
    return [(u["name"], u["interface"]) for u in doc.get("uplinks") or [] if provider.strict_rp_filter_drops(u)]


def read(interface, conf=CONF):
    """The interface's own rp_filter, or None when it has none (no such interface)."""
    try:
        with open(os.path.join(conf, interface, "rp_filter")) as handle:
            return int(handle.read().strip())
    except (IOError, OSError, ValueError):
        return None


def effective(interface, conf=CONF):
    """What the kernel applies to packets arriving on *interface*, or None."""
    own = read(interface, conf)
    return None if own is None else max(own, read("all", conf) or 0)


def strict(doc, conf=CONF):
    """[(uplink name, interface)] of the steered uplinks filtered strictly now."""
    return [(name, interface) for name, interface in steered_interfaces(doc)
            if effective(interface, conf) == STRICT]


def record_path(doc):
    return os.path.join(doc.get("state_dir") or DEFAULT_STATE_DIR, RECORD_NAME)


def recorded(path):
    """{interface: its rp_filter before the balancer loosened it}."""
    return dict((k, int(v)) for k, v in read_json(path).items())


def converge(doc, present=True, check_mode=False, conf=CONF, record=None):
    """Loose mode on the steered uplinks the document asks it for (``rp_filter:
    loose``); every other recorded interface back to its value from before. With
    *present* false, everything recorded back. Returns the changes, as text."""
    wanted = dict((interface, name) for name, interface in steered_interfaces(doc)) \
        if present and doc.get("rp_filter") == "loose" else {}
    path = record or record_path(doc)
    before = recorded(path)
    after = dict(before)
    changes, writes = [], []
    for interface, previous in sorted(before.items()):
        if interface in wanted:
            continue
        del after[interface]
        current = read(interface, conf)
        if current is not None and current != previous:  # a gone interface has nothing to restore
            changes.append("rp_filter %s: %d -> %d (as before the balancer)" % (interface, current, previous))
            writes.append((interface, previous))
    for interface, name in sorted(wanted.items()):
        current = read(interface, conf)
        if current is None or effective(interface, conf) != STRICT:
            continue  # off or loose already; a missing interface is converged when it appears
        changes.append("rp_filter %s (%s): %d -> %d (loose)" % (interface, name, current, LOOSE))
        after.setdefault(interface, current)
        writes.append((interface, LOOSE))
    if check_mode or (not writes and after == before):
        return changes
    # The record first: a value changed is never a value forgotten.
    if after:
        atomic_write(path, json.dumps(after, indent=2, sort_keys=True) + "\n", make_dir=True)
    for interface, value in writes:
        setting = os.path.join(conf, interface, "rp_filter")
        try:
            with open(setting, "w") as handle:
                handle.write("%d\n" % value)
        except (IOError, OSError) as exc:
            raise RpFilterError("rp_filter: cannot write %d to %s (%s); with balancer_rp_filter: keep the "
                                "balancer leaves reverse-path filtering alone" % (value, setting, exc.strerror or exc))
    if not after and os.path.exists(path):
        os.unlink(path)
    return changes
