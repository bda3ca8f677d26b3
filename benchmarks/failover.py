"""Failover: how fast the health tracker takes a broken uplink out and puts it back.

On the tracker lab (tests/integration/tracker_lab.py: three uplinks, fwmark
steering, the tracker with its default settings, 200 TCP connects/s from the
balanced cgroup), each repetition breaks wlp1s0 from the internet side, once by
carrier loss and once silently (everything dropped, link up), for 2.5 s:
detection = last connect the program still gave the broken uplink after the
fault; recovery = first connect it gets after the repair.
"""
from __future__ import annotations

from collections.abc import Callable

from tests.integration.tracker_lab import Tracker, failover_figures, fault_and_repair, tracker_host

FAULTS = ("carrier", "silent")


def measure_failover(reps: int, log: Callable[[str], None]) -> dict:
    out: dict = {fault: [] for fault in FAULTS}
    with tracker_host("bf") as host:
        tracker = Tracker(host)
        try:
            for rep in range(reps):
                for how in FAULTS:
                    tracker.wait_for(lambda h: h and all(u["state"] == "up" for u in h.values()), "all up")
                    fault, repair, connects = fault_and_repair(host, how)
                    figures = failover_figures(connects, fault, repair)
                    figures["failed_after_detection"] = len(figures["failed_after_detection"])
                    out[how].append(figures)
                    log("failover %d/%d %s: detected %.3f s, back %s s, %d failed after detection" % (
                        rep + 1, reps, how, figures["detection"],
                        "%.3f" % figures["recovery"] if figures["recovery"] is not None else "never",
                        figures["failed_after_detection"]))
        finally:
            tracker.stop()
    return out
