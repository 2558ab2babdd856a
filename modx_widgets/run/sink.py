"""Where a run's events go: the task's files (through the Workspace) and the caller's `emit`.

One object so that the thread and the CLI write the same files the same way.  Persisting
is best effort after the run has started (a full disk must not hide the real error), and a
failing listener is reported once in run.log and otherwise ignored: a broken view may not
stop a training run.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import replace
from typing import Any, Callable

from ..events import Message, Progress, Status
from ..store import StatusRecord, Workspace

STATUS_EVERY_S = 5.0  # how often a Running status.json gets the current step


class RunSink:
    """Callable that takes every event of one run."""

    def __init__(
        self, workspace: Workspace, task_name: str, emit: Callable[[Any], None] | None, *, persist: bool = True
    ) -> None:
        self.workspace = workspace
        self.persist = persist  # False on torchrun ranks other than 0: they write nothing
        self.task_name = task_name
        self._emit = emit
        self._status: StatusRecord | None = None
        self._status_written = 0.0
        self._emit_failed = False
        self._persist_failed = False
        self.step = 0
        self.max_steps = 0

    # -- events ---------------------------------------------------------------------------

    def __call__(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.step, self.max_steps = event.step, event.max_steps
            if self._status is not None and time.monotonic() - self._status_written >= STATUS_EVERY_S:
                self._write_status(replace(self._status, step=self.step, max_steps=self.max_steps))
        else:
            self._persist(event)
        self._forward(event)

    def _persist(self, event: Any) -> None:
        if not self.persist:
            return
        try:
            self.workspace.append_events(self.task_name, [event])
        except Exception as exc:  # noqa: BLE001 - see module docstring
            if not self._persist_failed:
                self._persist_failed = True
                print(f"modx_widgets: could not write events of {self.task_name!r}: {exc}", file=sys.stderr)

    def _forward(self, event: Any) -> None:
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception:  # noqa: BLE001 - see module docstring
            if not self._emit_failed:
                self._emit_failed = True
                self._persist(Message(level="warning", text="an event listener failed:\n" + traceback.format_exc()))

    # -- status ---------------------------------------------------------------------------

    def _write_status(self, record: StatusRecord) -> None:
        if not self.persist:
            self._status = record
            return
        try:
            self._status = self.workspace.write_status(self.task_name, record)
        except Exception as exc:  # noqa: BLE001
            self._status = record
            if not self._persist_failed:
                self._persist_failed = True
                print(f"modx_widgets: could not write status of {self.task_name!r}: {exc}", file=sys.stderr)
        self._status_written = time.monotonic()

    def running(self, message: str = "") -> None:
        """Pending/any -> Running, owned by this process."""
        created = time.time()
        if self.persist:
            try:
                created = self.workspace.read_status(self.task_name).created
            except Exception:  # noqa: BLE001 - an unreadable old status is replaced
                pass
        now = time.time()
        self._write_status(StatusRecord(state="Running", created=created, started=now, updated=now, message=message))
        self(Status(state="Running", message=message))

    def finish(self, state: str, message: str = "", hint: str = "") -> None:
        """Running -> Completed / Stopped / Failed."""
        base = self._status or StatusRecord(state=state)
        record = replace(
            base, state=state, ended=time.time(), message=message, hint=hint, step=self.step, max_steps=self.max_steps
        )
        self._write_status(record)
        self(Status(state=state, message=message, hint=hint))
