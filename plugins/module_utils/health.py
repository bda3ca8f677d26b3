# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether an uplink is up: the health tracker's decisions, without I/O.

Two kinds of evidence, as an operator who knows mwan3 expects, but faster:

- the kernel's word (carrier lost, address or default route gone): down at
  once, since nothing sent through the uplink can work;
- probe rounds (one probe to each target every ``interval_ms``): a round
  succeeds when at least ``quorum`` targets answered within ``timeout_ms``
  (mwan3's ``reliability``). ``down`` failed rounds in a row take the uplink
  down, ``up`` good rounds in a row bring it back (hysteresis: a flapping link
  does not flap the balancer). After the kernel's word the uplink comes back
  only through good rounds, too.

The defaults detect a silent failure in about interval * (down - 1) + timeout
= 1.0 s and bring an uplink back in about interval * up = 1.0 s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.netlb.multiwan.plugins.module_utils import schema
from ansible_collections.netlb.multiwan.plugins.module_utils.files import read_json

# Written by netlb-multiwan-track, read wherever the maps are converged (module_utils/cli).
HEALTH_FILE = "/run/netlb-multiwan/health.json"
DEFAULTS = {"method": "icmp", "interval_ms": 250, "timeout_ms": 500, "down": 3, "up": 4, "quorum": 1, "reset": True}
METHODS = ("icmp", "tcp", "dns")
# Bytes on the wire per probe and answer: IPv4 + ICMP echo with 8 bytes of payload
# (+ Ethernet), the handshake and close of a TCP connect, a DNS query for "." NS.
PROBE_BYTES = {"icmp": 2 * (14 + 20 + 8 + 8), "tcp": 7 * (14 + 20 + 32), "dns": 2 * (14 + 20 + 8) + 17 + 300}


def read_health_file(path):
    """The whole health file (uplinks, active_tier, drained, written, pid); {} without one."""
    return read_json(path)


def read_health(path):
    """{uplink name: its recorded health} from the health file; {} without one."""
    uplinks = read_health_file(path).get("uplinks")
    return uplinks if isinstance(uplinks, dict) else {}


def probe_traffic_per_hour(config, targets=1):
    """(probes, bytes) an uplink's tracking costs per hour."""
    probes = int(3600 * 1000 // config["interval_ms"]) * targets
    return probes, probes * PROBE_BYTES[config["method"]]


class UplinkHealth(object):
    """One uplink's state: "up" or "down", with counts, figures and the last reason."""

    def __init__(self, name, config=None, state="up", since=0.0):
        self.name = name
        self.config = dict(DEFAULTS, **(config or {}))
        self.state = state
        self.since = since
        self.reason = "tracker started"
        self.usable = True  # what the kernel says about the link
        self.good = self.bad = 0  # rounds in a row
        self.transitions = 0
        self.rtt_ms = None
        self.loss = 0.0
        self.probes_sent = self.probes_lost = 0
        self.connections_reset = 0  # TCP connections destroyed when the uplink went down

    def _go(self, state, now, reason):
        if state == self.state:
            return None
        self.state, self.since, self.reason = state, now, reason
        self.transitions += 1
        return {"uplink": self.name, "state": state, "at": now, "reason": reason,
                "rtt_ms": self.rtt_ms, "loss": self.loss}

    def link(self, usable, now, reason):
        """The kernel's view changed. Returns a transition (dict) or None."""
        self.usable = usable
        if not usable:
            self.good = 0
            return self._go("down", now, reason)
        return None  # back only through good probe rounds

    def round(self, answered, sent, now, rtt_ms=None):
        """A probe round ended: ``answered`` of ``sent`` targets replied in time."""
        self.probes_sent += sent
        self.probes_lost += sent - answered
        self.loss = (sent - answered) / float(sent) if sent else 0.0
        if rtt_ms is not None:
            self.rtt_ms = rtt_ms
        if answered >= min(self.config["quorum"], sent) and sent:
            self.good, self.bad = self.good + 1, 0
            if self.usable and self.state == "down" and self.good >= self.config["up"]:
                return self._go("up", now, "%d good probe rounds in a row" % self.good)
        else:
            self.bad, self.good = self.bad + 1, 0
            if self.state == "up" and self.bad >= self.config["down"]:
                return self._go("down", now, "%d probe rounds in a row without %d of %d targets answering"
                                % (self.bad, self.config["quorum"], sent))
        return None

    def as_dict(self):
        return {"state": self.state, "since": self.since, "reason": self.reason, "rtt_ms": self.rtt_ms,
                "loss": self.loss, "transitions": self.transitions, "probes_sent": self.probes_sent,
                "probes_lost": self.probes_lost, "connections_reset": self.connections_reset}


def runtime_uplinks(doc, published=None):
    """The document's uplinks with the tracker's word (its health file, or the tracker's
    own ``published`` view, {"uplinks": {name: {"state"}}, "budgets": {name: {"spent"}}}):
    ``down`` for a tracked uplink it has down; for a metered uplink whose budget is spent,
    ``spent`` (when_spent: drain) or the tier below every other (backup). The file
    outlives a stopped tracker: fail-open on the last state."""
    if published is None:
        published = read_health_file(doc.get("health_file") or HEALTH_FILE)
    states = published.get("uplinks") if isinstance(published.get("uplinks"), dict) else {}
    budgets = published.get("budgets") if isinstance(published.get("budgets"), dict) else {}
    out = []
    for up in doc["uplinks"]:
        spent = bool(up.get("budget")) and bool((budgets.get(up["name"]) or {}).get("spent"))
        backup = spent and up["budget"].get("when_spent") == "backup"
        out.append(dict(up, down=isinstance(up.get("track"), dict) and states.get(up["name"], {}).get("state") == "down",
                        spent=spent and not backup, tier=schema.SPENT_TIER if backup else up.get("tier", 1)))
    return out
