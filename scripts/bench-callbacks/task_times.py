"""Callback for the benchmarks: wall time per task (from its start to the next task's start), printed at the end.

    ANSIBLE_CALLBACK_PLUGINS=scripts/bench-callbacks ANSIBLE_CALLBACKS_ENABLED=task_times ansible-playbook ...

Like ansible.posix.profile_tasks, which this collection does not depend on; it prints the slowest tasks
with the hosts each ran on, and the total. A benchmark's view only: it changes nothing the play does.
"""

from __future__ import annotations

import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_times
type: aggregate
short_description: wall time per task, slowest first
description: Prints each task's wall time (until the next task starts) when the playbook ends.
options:
  top:
    description: How many tasks to print.
    default: 25
    env: [{name: TASK_TIMES_TOP}]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._times: list[list] = []  # [label, seconds, hosts]
        self._current: list | None = None
        self._started = time.monotonic()
        self._mark = self._started

    def _close(self) -> None:
        now = time.monotonic()
        if self._current is not None:
            self._current[1] += now - self._mark
        self._mark = now

    def _open(self, label: str) -> None:
        self._close()
        self._current = [label, 0.0, set()]
        self._times.append(self._current)

    def v2_playbook_on_play_start(self, play) -> None:
        self._open(f"(play) {play.get_name()}")

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._open(f"{task.get_path() or ''} {task.get_name()}".strip())

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._open(f"(handler) {task.get_name()}")

    def _host(self, result) -> None:
        if self._current is not None:
            self._current[2].add(result._host.get_name())

    def v2_runner_on_ok(self, result) -> None:
        self._host(result)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._host(result)

    def v2_runner_on_skipped(self, result) -> None:
        self._host(result)

    def v2_runner_on_unreachable(self, result) -> None:
        self._host(result)

    def v2_playbook_on_stats(self, stats) -> None:
        self._close()
        total = time.monotonic() - self._started
        top = int(os.environ.get("TASK_TIMES_TOP", "25"))
        self._display.display(f"task_times: {len(self._times)} tasks and plays, {total:.2f} s in all; slowest:")
        for label, seconds, hosts in sorted(self._times, key=lambda t: -t[1])[:top]:
            self._display.display(f"{seconds:7.2f} s  {label[-110:]}  [{len(hosts)} hosts]")
