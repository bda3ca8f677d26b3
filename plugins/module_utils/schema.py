# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one set of rules for the values of a balancer's inventory and options.

The controller-side plan (plugin_utils/plan.py, behind the balancer_plan and
balancer_slice filters), the modules and the netlb-multiwan command check
names, numbers and addresses with these functions, so one value is accepted
or refused the same way everywhere. Each checker takes the value and the name
of the field it came from, returns the normalised value, and raises
SchemaError naming that field. Stdlib only: the engine that imports it also
runs on the hosts, without Ansible (boot units, the netlb-multiwan command).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

U32 = 2 ** 32 - 1
MAX_UPLINKS = 16
MAX_WEIGHT = 1000
MAX_EXCLUDES = 256   # MW_MAX_EXCLUDES: the program's prefix tries
# 253 default, 254 main, 255 local: shared with the rest of the host; 0 is "unspec".
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
TABLE_RANGE_TEXT = "1-252 or 256-%d" % U32
# Below 32766 (the main table's rule) so that marked sockets are looked up first.
RULE_PRIORITY_MIN = 1
RULE_PRIORITY_MAX = 32765

LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# A systemd slice name without ".slice": "-" separates the levels of the hierarchy.
SLICE_RE = re.compile(r"([A-Za-z0-9_]+(-[A-Za-z0-9_]+)*)?")


class SchemaError(Exception):
    """A value that breaks a rule. ``field`` names it, ``message`` says why;
    str() is "field: message"."""

    def __init__(self, field, message):
        super(SchemaError, self).__init__("%s: %s" % (field, message))
        self.field = field
        self.message = message


def integer(value, field, low, high):
    """An int in low..high; bool (an int subclass) and numeric strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchemaError(field, "must be an integer %d-%d, got %r" % (low, high, value))
    return value


def choice(value, field, choices):
    if value not in choices:
        raise SchemaError(field, "must be one of %s, got %r" % (", ".join(choices), value))
    return value


def label(value, field):
    """An uplink's name: it ends up in C source, unit names and map keys."""
    if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
        raise SchemaError(field, "%r is not a valid label (1-32 of A-Z a-z 0-9 _ -)" % (value,))
    return value


def ifname(value, field, kind="interface"):
    """A network device name as the kernel accepts it (dev_valid_name), restricted to
    A-Z a-z 0-9 _ . - ; ``kind`` words the message ("interface", "device")."""
    if not isinstance(value, str) or not IFNAME_RE.fullmatch(value):
        raise SchemaError(field, "%r is not a valid %s name (1-15 characters of A-Z a-z 0-9 _ . -)" % (value, kind))
    if value in (".", ".."):
        raise SchemaError(field, "%r is not a valid %s name" % (value, kind))
    return value


def table(value, field="table"):
    """A routing table of the balancer's own: not 0 nor the kernel's 253-255."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(field, "must be an integer (%s), got %r" % (TABLE_RANGE_TEXT, value))
    if value in RESERVED_TABLES:
        raise SchemaError(field, "%d is the kernel's '%s' table; pick another (%s)"
                          % (value, RESERVED_TABLES[value], TABLE_RANGE_TEXT))
    if not 1 <= value <= U32:
        raise SchemaError(field, "%d is out of range (%s)" % (value, TABLE_RANGE_TEXT))
    return value


def mark(value, field="mark"):
    """A firewall mark that selects an uplink (0 is "no mark")."""
    return integer(value, field, 1, U32)


def mark_mask(mark_value, mask, field="mask"):
    """The mask of an fwmark rule; it must keep every bit of the (already checked) mark."""
    integer(mask, field, 1, U32)
    if mark_value & mask != mark_value:
        raise SchemaError(field, "%#x hides bits of mark %#x" % (mask, mark_value))
    return mask


def rule_priority(value, field="priority"):
    return integer(value, field, RULE_PRIORITY_MIN, RULE_PRIORITY_MAX)


def weight(value, field="weight", allow_zero=False):
    """An uplink's share of new connections: 1-MAX_WEIGHT in the inventory; the
    netlb-multiwan command also takes 0 (no new connections)."""
    return integer(value, field, 0 if allow_zero else 1, MAX_WEIGHT)


MAX_TIER = 5   # pfSense/OPNsense gateway groups' tiers 1-5
SPENT_TIER = MAX_TIER + 1   # a metered uplink whose budget is spent (when_spent: backup): below every tier


def tier(value, field="tier"):
    """An uplink's priority tier: new connections go to the lowest tier that has a
    usable uplink (up, not drained, weight > 0); a higher tier is a backup."""
    return integer(value, field, 1, MAX_TIER)


def metric(value, field="metric"):
    return integer(value, field, 0, U32)


def _text(value):
    # Zone indexes (fe80::1%eth0) are refused: routes name the interface separately.
    if not isinstance(value, str) or "%" in value:
        raise ValueError(value)
    return value.strip()


def address(value, field, version=None):
    """An IP address (version 4 or 6 if given), normalised: '2001:DB8::0:1' -> '2001:db8::1'."""
    try:
        addr = ipaddress.ip_address(_text(value))
    except ValueError:
        raise SchemaError(field, "%r is not a valid IP address" % (value,))
    if version is not None and addr.version != version:
        raise SchemaError(field, "%s is not an IPv%d address" % (value, version))
    return str(addr)


def prefix(value, field, version=None):
    """A prefix in CIDR notation, host bits cleared: '10.1.2.3/8' -> '10.0.0.0/8';
    a bare address is its own /32 or /128."""
    try:
        net = ipaddress.ip_network(_text(value), strict=False)
    except ValueError:
        raise SchemaError(field, "%r is not a prefix in CIDR notation (e.g. 203.0.113.0/24)" % (value,))
    if version is not None and net.version != version:
        raise SchemaError(field, "%s is not an IPv%d prefix" % (value, version))
    return str(net)


def slice_name(value, field="balancer_slice"):
    """A systemd slice name without .slice, or empty for none."""
    if not isinstance(value, str) or not SLICE_RE.fullmatch(value):
        raise SchemaError(field, "must be empty or words of [A-Za-z0-9_] joined by single dashes "
                                 "(a systemd slice name without .slice), got %r" % (value,))
    return value


MAX_PORT_EXCLUDES = 64
PORT_PROTOCOLS = ("tcp", "udp")
PORT_RANGE_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def port_exclusion(value, field):
    """{proto: tcp|udp, port: 22 | "22" | "6881-6889"}, normalised to
    {"proto", "port": "22" | "6881-6889"}: ports 1-65535, a range in order."""
    if not isinstance(value, dict):
        raise SchemaError(field, "must be a dictionary with proto (tcp or udp) and port, got %r" % (value,))
    unknown = sorted(set(value) - {"proto", "port"})
    if unknown:
        raise SchemaError(field + "." + unknown[0], "is not a port exclusion setting (proto, port)")
    choice(value.get("proto"), field + ".proto", PORT_PROTOCOLS)
    port = value.get("port")
    if isinstance(port, bool) or not isinstance(port, (int, str)):
        raise SchemaError(field + ".port", "must be a port 1-65535 or a range like 6881-6889, got %r" % (port,))
    match = PORT_RANGE_RE.fullmatch(str(port).strip())
    if not match:
        raise SchemaError(field + ".port", "must be a port 1-65535 or a range like 6881-6889, got %r" % (port,))
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    for bound in (first, last):
        if not 1 <= bound <= 65535:
            raise SchemaError(field + ".port", "%d is not a port (1-65535)" % bound)
    if first > last:
        raise SchemaError(field + ".port", "range %d-%d is not in order" % (first, last))
    return {"proto": value["proto"], "port": str(first) if first == last else "%d-%d" % (first, last)}


def port_exclusions(values, field="exclude_ports"):
    if not isinstance(values, (list, tuple)) or len(values) > MAX_PORT_EXCLUDES:
        raise SchemaError(field, "must be a list of at most %d port exclusions" % MAX_PORT_EXCLUDES)
    return [port_exclusion(v, "%s[%d]" % (field, i)) for i, v in enumerate(values)]


SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?", re.IGNORECASE)
SIZE_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
BUDGET_PERIODS = ("day", "week", "month")
BUDGET_WHEN_SPENT = ("drain", "backup")
# The reset day must exist in every period: 1-28 of a month, 1-7 (Monday-Sunday) of a week.
BUDGET_RESET_DAYS = {"month": 28, "week": 7}


def size(value, field):
    """Bytes from 1500, "20G", "500M", "1.5T", "2MiB": K, M, G, T are powers of 1000 (what
    providers bill), KiB, MiB ... powers of 1024; at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SchemaError(field, "must be a size such as 20G, 500M or 1500000 (bytes), got %r" % (value,))
    match = SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, str) and not match:
        raise SchemaError(field, "must be a size such as 20G, 500M or 1500000 (bytes), got %r" % (value,))
    if match:
        number, unit, binary = match.groups()
        value = int(float(number) * (1024 if binary else 1000) ** SIZE_UNITS[unit.upper()])
    if value < 1:
        raise SchemaError(field, "must be at least 1 byte")
    return value


def budget(value, field):
    """A metered uplink's data budget: {bytes, period (day|week|month), reset (the day a
    period starts: 1-28 of the month, 1-7 = Monday-Sunday of the week; none for a day),
    when_spent (drain|backup)}, normalised (bytes as an int); None for none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaError(field, "must be a dictionary (bytes, period, reset, when_spent), got %r" % (value,))
    unknown = sorted(set(value) - {"bytes", "period", "reset", "when_spent"})
    if unknown:
        raise SchemaError(field + "." + unknown[0], "is not a budget setting (bytes, period, reset, when_spent)")
    if "bytes" not in value:
        raise SchemaError(field + ".bytes", "is required: the data the period allows, e.g. 20G")
    out = {"bytes": size(value["bytes"], field + ".bytes"),
           "period": choice(value.get("period", "month"), field + ".period", BUDGET_PERIODS),
           "when_spent": choice(value.get("when_spent", "drain"), field + ".when_spent", BUDGET_WHEN_SPENT)}
    days = BUDGET_RESET_DAYS.get(out["period"])
    if value.get("reset") is not None:
        if days is None:
            raise SchemaError(field + ".reset", "a daily budget starts again every midnight: no reset day")
        out["reset"] = integer(value["reset"], field + ".reset", 1, days)
    else:
        out["reset"] = 1 if days else None
    return out


TRACK_METHODS = ("icmp", "tcp", "dns")
TRACK_LIMITS = {"interval_ms": (50, 60000), "timeout_ms": (10, 60000), "down": (1, 100), "up": (1, 100),
                "quorum": (1, 16), "port": (0, 65535)}  # port 0: the method's own
MAX_TRACK_TARGETS = 8


def track(value, field, defaults):
    """An uplink's health tracking: None (off), or the settings with ``defaults`` (the
    role's balancer_track_*) under the uplink's own; targets may stay empty (the
    tracker then probes the uplink's gateway)."""
    if value is False or (value is None and defaults is None):
        return None
    merged = dict(defaults or {})
    if value not in (None, True):
        if not isinstance(value, dict):
            raise SchemaError(field, "must be a dictionary (targets, method, interval_ms, timeout_ms, down, up, "
                                     "quorum, port, reset) or false, got %r" % (value,))
        unknown = sorted(set(value) - set(TRACK_LIMITS) - {"targets", "method", "reset"})
        if unknown:
            raise SchemaError(field + "." + unknown[0], "is not a tracking setting")
        merged.update(value)
    choice(merged.get("method", "icmp"), field + ".method", TRACK_METHODS)
    if not isinstance(merged.get("reset", True), bool):
        raise SchemaError(field + ".reset", "must be true or false, got %r" % (merged["reset"],))
    for name, (low, high) in TRACK_LIMITS.items():
        if merged.get(name) is not None:
            integer(merged[name], field + "." + name, low, high)
    targets = merged.get("targets") or []
    if not isinstance(targets, (list, tuple)) or len(targets) > MAX_TRACK_TARGETS:
        raise SchemaError(field + ".targets", "must be a list of at most %d IP addresses" % MAX_TRACK_TARGETS)
    merged["targets"] = [address(t, "%s.targets[%d]" % (field, i)) for i, t in enumerate(targets)]
    if merged.get("timeout_ms") and merged.get("interval_ms") and merged["timeout_ms"] > 10 * merged["interval_ms"]:
        raise SchemaError(field + ".timeout_ms", "at most 10 intervals, got %d ms for %d ms"
                          % (merged["timeout_ms"], merged["interval_ms"]))
    if merged["targets"] and merged.get("quorum", 1) > len(merged["targets"]):
        raise SchemaError(field + ".quorum", "%d is more than the %d targets" % (merged["quorum"], len(merged["targets"])))
    return merged
