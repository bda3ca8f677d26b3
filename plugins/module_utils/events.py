# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the tracker tells the world on every transition: one structured journal entry and
the operator's hooks.

An event is a dict of strings, the fields of the journal entry and the environment of
the hooks alike:

  NETLB_STATE        up | down | drained | undrained | spent | renewed (a data budget) | tier
  NETLB_UPLINK       the uplink's name (empty for a tier change)
  NETLB_REASON       why, in words
  NETLB_TIER         the uplink's tier (for a tier change: the tier new connections now go to)
  NETLB_ACTIVE_TIER  the tier new connections go to after the event (0: none is usable)
  NETLB_RTT_MS, NETLB_LOSS   up and down decided by probes: the last round's figures

The journal entry carries MESSAGE_ID (below, fixed: `journalctl MESSAGE_ID=...` and
Event-Driven Ansible's ansible.eda.journald select on it), PRIORITY (warning for down,
notice otherwise) and a MESSAGE in words. It is written with journald's native protocol
(a datagram of FIELD=value lines on its socket), so nothing beyond the standard library
is needed; without journald the MESSAGE goes to stdout instead.

Hooks: every executable file in the hooks directory (hooks.d next to the state
document: /etc/netlb-multiwan/hooks.d), run with the event in its
environment, without waiting for it: failover never waits for a hook. A hook still
running after HOOK_TIMEOUT seconds is killed (its whole process group); at most
MAX_RUNNING run at once, further ones are skipped and logged. Their output goes where
the tracker's does (the journal of netlb-multiwan-track).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import socket
import time

from ansible_collections.netlb.multiwan.plugins.module_utils import runner

MESSAGE_ID = "8b0c5f4e2d7a4c1b9e6f3a5d7c2e9b14"
HOOKS_DIR = "/etc/netlb-multiwan/hooks.d"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
HOOK_TIMEOUT = 30.0
MAX_RUNNING = 16
STATES = ("up", "down", "drained", "undrained", "spent", "renewed", "tier")
PRIORITY_WARNING, PRIORITY_NOTICE = 4, 5


def hooks_dir(state_file):
    """hooks.d next to the state document: /etc/netlb-multiwan/hooks.d."""
    return os.path.join(os.path.dirname(os.path.abspath(state_file)), "hooks.d")


def event(state, uplink="", reason="", tier=0, active_tier=None, rtt_ms=None, loss=None):
    fields = {"NETLB_STATE": state, "NETLB_UPLINK": uplink or "", "NETLB_REASON": reason or "",
              "NETLB_TIER": str(tier or 0), "NETLB_ACTIVE_TIER": str(active_tier or 0)}
    if rtt_ms is not None:
        fields["NETLB_RTT_MS"] = "%.1f" % rtt_ms
    if loss is not None:
        fields["NETLB_LOSS"] = "%.2f" % loss
    return fields


def message(fields):
    if fields["NETLB_STATE"] == "tier":
        return "new connections now go to tier %s: %s" % (fields["NETLB_TIER"], fields["NETLB_REASON"])
    figures = ""
    if "NETLB_LOSS" in fields:
        figures = " (rtt %s ms, loss %.0f%%)" % (fields.get("NETLB_RTT_MS", "-"), 100 * float(fields["NETLB_LOSS"]))
    return "%s %s: %s%s" % (fields["NETLB_UPLINK"], fields["NETLB_STATE"], fields["NETLB_REASON"], figures)


def journal_entry(fields, text, identifier="netlb-multiwan-track"):
    """The datagram of journald's native protocol: FIELD=value lines (no value here
    holds a newline: they are replaced)."""
    lines = [("MESSAGE", text), ("MESSAGE_ID", MESSAGE_ID),
             ("PRIORITY", str(PRIORITY_WARNING if fields["NETLB_STATE"] in ("down", "spent") else PRIORITY_NOTICE)),
             ("SYSLOG_IDENTIFIER", identifier)] + sorted(fields.items())
    return "".join("%s=%s\n" % (key, str(value).replace("\n", " ")) for key, value in lines).encode("utf-8")


class Events(object):
    """Emits events: journal (or stdout) and hooks; reap() bounds the running hooks."""

    def __init__(self, log, hooks_dir=HOOKS_DIR, journal_socket=JOURNAL_SOCKET):
        self.log = log   # the tracker's: a line on stdout, which systemd puts in the journal
        self.hooks_dir = hooks_dir
        self.journal_socket = journal_socket
        self.running = []   # (process, deadline, path)

    def emit(self, fields):
        text = message(fields)
        if not self.to_journal(fields, text):
            self.log(text)
        self.run_hooks(fields)

    def to_journal(self, fields, text):
        if not self.journal_socket or not os.path.exists(self.journal_socket):
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.sendto(journal_entry(fields, text), self.journal_socket)
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def hooks(self):
        try:
            names = sorted(os.listdir(self.hooks_dir))
        except OSError:
            return []
        paths = [os.path.join(self.hooks_dir, n) for n in names if not n.startswith(".")]
        return [p for p in paths if os.path.isfile(p) and os.access(p, os.X_OK)]

    def run_hooks(self, fields):
        self.reap()
        for path in self.hooks():
            if len(self.running) >= MAX_RUNNING:
                self.log("hook %s skipped: %d hooks still running" % (path, len(self.running)))
                continue
            try:
                proc = runner.spawn([path], fields)
            except OSError as exc:
                self.log("hook %s: %s" % (path, exc))
                continue
            self.running.append((proc, time.time() + HOOK_TIMEOUT, path))

    def reap(self, now=None):
        """Collect finished hooks (logging failures), kill those past their time."""
        now = time.time() if now is None else now
        still = []
        for proc, deadline, path in self.running:
            code = proc.poll()
            if code is None and now >= deadline:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                proc.wait()
                self.log("hook %s killed after %.0f s" % (path, HOOK_TIMEOUT))
            elif code is None:
                still.append((proc, deadline, path))
            elif code:
                self.log("hook %s failed (exit status %d)" % (path, code))
        self.running = still
