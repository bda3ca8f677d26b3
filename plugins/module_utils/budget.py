# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data budgets of metered uplinks: what a period is, how usage is counted, when it is spent.

An uplink's ``budget`` (validated by schema.budget): ``bytes``, ``period`` (day, week,
month), ``reset`` (the day a period starts: 1-28 of the month, 1-7 = Monday-Sunday of the
week; midnight, local time) and ``when_spent`` (drain: out of the selection; backup: below
every tier).

Usage is what crosses the uplink's interface, both ways (what the provider bills: balanced
or not), from the interface's own byte counters, sampled by the tracker. A counter that
went backwards, or an interface with a new index (a USB modem replugged, a reboot), started
again from zero: its whole value is new usage. The usage file under the state directory
keeps, per uplink, the period's start, the bytes used in it and the last counter seen, so
a restart of the tracker or of the host loses at most one sample interval.

Pure: no I/O but the usage file; the clock is the caller's (tests move it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

from ansible_collections.netlb.multiwan.plugins.module_utils.files import atomic_write, read_json

USAGE_NAME = "usage.json"
PERIODS = ("day", "week", "month")
WHEN_SPENT = ("drain", "backup")


def usage_file(doc):
    return os.path.join(doc.get("state_dir") or "/var/lib/netlb-multiwan", USAGE_NAME)


def period(budget, now):
    """(start, end) of the budget's period holding *now*, as Unix times (local midnight)."""
    today = datetime.datetime.fromtimestamp(now).date()
    kind, reset = budget["period"], int(budget.get("reset") or 1)
    if kind == "day":
        start = today
        end = start + datetime.timedelta(days=1)
    elif kind == "week":
        start = today - datetime.timedelta(days=(today.isoweekday() - reset) % 7)
        end = start + datetime.timedelta(days=7)
    else:
        start = today.replace(day=reset)
        if start > today:
            start = _add_months(start, -1)
        end = _add_months(start, 1)
    return _midnight(start), _midnight(end)


def _add_months(day, months):
    index = day.year * 12 + day.month - 1 + months
    return day.replace(year=index // 12, month=index % 12 + 1)   # reset <= 28: every month has it


def _midnight(day):
    return float(datetime.datetime(day.year, day.month, day.day).timestamp())


class Usage(object):
    """One uplink's usage in its current period."""

    def __init__(self, start=0.0, used=0, counter=None, ifindex=None, sampled=None, reset_at=0.0):
        self.start, self.used, self.counter, self.ifindex, self.sampled = start, used, counter, ifindex, sampled
        self.reset_at = reset_at

    def as_dict(self):
        return {"period_start": self.start, "used": self.used, "counter": self.counter, "ifindex": self.ifindex,
                "sampled": self.sampled, "reset_at": self.reset_at}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            return cls()
        return cls(float(data.get("period_start") or 0.0), int(data.get("used") or 0), data.get("counter"),
                   data.get("ifindex"), data.get("sampled"), float(data.get("reset_at") or 0.0))

    def sample(self, budget, now, counter, ifindex, reset_at=0.0):
        """Account the interface's byte counter (rx + tx) read at *now*; None when the
        interface is missing (nothing to add: its traffic is not flowing). *reset_at*:
        when the operator last reset the usage (`netlb-multiwan budget NAME reset`)."""
        start, _end = period(budget, now)
        if start != self.start:   # a new period: usage starts again from zero
            self.start, self.used = start, 0
        if reset_at and reset_at > self.reset_at:
            self.used, self.reset_at = 0, reset_at
        if counter is not None:
            if self.counter is not None and ifindex == self.ifindex and counter >= self.counter:
                self.used += counter - self.counter
            elif self.counter is not None:
                self.used += counter  # the counter started again from zero since the last sample
            self.counter, self.ifindex = counter, ifindex
        self.sampled = now

    def spent(self, budget):
        return self.used >= int(budget["bytes"])

    def status(self, budget, now):
        """What status, metrics and the runtime state show."""
        _start, end = period(budget, now)
        return {"bytes": int(budget["bytes"]), "used": self.used, "spent": self.spent(budget),
                "period": budget["period"], "period_start": self.start, "period_end": end,
                "when_spent": budget.get("when_spent", "drain")}


def load(path):
    """{uplink name: Usage} from the usage file; {} without one."""
    uplinks = read_json(path).get("uplinks")
    return dict((name, Usage.from_dict(u)) for name, u in (uplinks if isinstance(uplinks, dict) else {}).items())


def save(path, usage):
    atomic_write(path, make_dir=True, text=json.dumps(
        {"version": 1, "uplinks": dict((name, u.as_dict()) for name, u in usage.items())}, indent=1, sort_keys=True)
        + "\n")
