# Wall time of every task of a play, summed over its hosts' results: what benchmarks.fleet
# reports as the slowest tasks of the no-change run (ansible-core has no profile_tasks).
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: task_times
type: aggregate
short_description: Wall time per task, written as JSON to $NETLB_TASK_TIMES
description: For benchmarks/fleet.py.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.times, self.current, self.started = [], None, None

    def _close(self):
        if self.current is not None:
            self.times.append([self.current, round(time.monotonic() - self.started, 3)])
            self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self.current, self.started = task.get_name(), time.monotonic()

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def v2_playbook_on_stats(self, stats):
        self._close()
        path = os.environ.get("NETLB_TASK_TIMES")
        if path:
            with open(path, "w") as handle:
                json.dump(self.times, handle)
