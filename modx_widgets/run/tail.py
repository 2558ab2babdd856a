"""Follow a task's files while another process trains it, and turn them back into events.

A run in a subprocess (several GPUs, or detached from the kernel) writes exactly what an
in-kernel run writes: events to `metrics.jsonl`, messages to `run.log`, its state to
`status.json`; its rank 0 also keeps the newest Progress in `progress.json` (Progress is
not worth a line per step in the log).  `TaskTail` reads what is new in those files since
its last call, by byte offset, so a long run costs the same per poll at step 10 and at step
100 000.  A line is taken only once its newline is there: a torn last line (the writer is
mid-append) waits for the next read.  `Follower` is the polling thread that feeds these
events to the same listeners an in-kernel `TrainingRun` feeds, so the monitor and the
status badges cannot tell the two apart.

Imports nothing heavy: this module runs in the notebook kernel.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..events import FINAL_STATES, Message, Progress, Status, from_dict, to_dict
from ..store import StatusRecord, Workspace

__all__ = [
    "PROGRESS_FILE",
    "STOP_FILE",
    "FileTail",
    "Follower",
    "LogTail",
    "ProgressWriter",
    "TaskTail",
]

METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"
PROGRESS_FILE = "progress.json"  # newest Progress of a run in another process
STOP_FILE = "stop"  # its presence asks a run in another process to stop gracefully
POLL_S = 0.5
_READ_LIMIT = 8 * 1024 * 1024  # bytes per read: a huge backlog is taken in slices, never at once
_LOG_HEADER = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.{7}) (.*)$")
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error"}


class FileTail:
    """New complete lines of one append-only file, by byte offset.

    `offset=None` starts at the current end (only what is written from now on).  A file that
    shrinks was replaced (a task deleted and made again): reading restarts at its beginning.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int | None = 0) -> None:
        self.path = Path(path)
        self.offset = self._size() if offset is None else int(offset)

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def read_lines(self) -> list[str]:
        """Lines completed since the last call (decoded, without their newline)."""
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self.offset:
                    self.offset = 0
                if size == self.offset:
                    return []
                fh.seek(self.offset)
                chunk = fh.read(min(size - self.offset, _READ_LIMIT))
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []  # torn line: wait for the rest
        self.offset += end + 1
        return [line.decode("utf-8", errors="replace") for line in chunk[:end].split(b"\n")]


def _parse_time(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


class LogTail:
    """Messages appended to run.log (`LEVEL text`, continuation lines indented four spaces).

    A message may continue on the next line, so the newest one is held back until the next
    header arrives, or until a read finds nothing new (the writer's append is then complete).
    """

    def __init__(self, path: str | os.PathLike[str], offset: int | None = 0) -> None:
        self._tail = FileTail(path, offset)
        self._pending: list[Any] | None = None  # [time, level, lines]

    def _emit(self, out: list[Message]) -> None:
        if self._pending is not None:
            stamp, level, lines = self._pending
            out.append(Message(level=level, text="\n".join(lines), time=stamp))
            self._pending = None

    def read(self) -> list[Message]:
        out: list[Message] = []
        lines = self._tail.read_lines()
        for line in lines:
            match = _LOG_HEADER.match(line)
            level = _LEVELS.get(match.group(2).strip()) if match else None
            if match and level:
                self._emit(out)
                self._pending = [_parse_time(match.group(1)), level, [match.group(3)]]
            elif self._pending is not None:
                self._pending[2].append(line[4:] if line.startswith("    ") else line)
            elif line.strip():  # text written by something else: keep it rather than lose it
                out.append(Message(level="info", text=line))
        if not lines:
            self._emit(out)
        return out

    def flush(self) -> list[Message]:
        out: list[Message] = []
        self._emit(out)
        return out


class ProgressWriter:
    """Listener for the training process: keeps `progress.json` holding the newest Progress.

    Written at most every `every_s` seconds (and always for the last step), atomically
    (temporary file + rename), without fsync: it is a hint for viewers, rebuilt every step.
    """

    def __init__(self, task_dir: str | os.PathLike[str], every_s: float = POLL_S) -> None:
        self.path = Path(task_dir) / PROGRESS_FILE
        self.every_s = every_s
        self._last = float("-inf")

    def __call__(self, event: Any) -> None:
        if not isinstance(event, Progress):
            return
        now = time.monotonic()
        final = event.max_steps > 0 and event.step >= event.max_steps
        if now - self._last < self.every_s and not final:
            return
        self._last = now
        data = json.dumps(to_dict(event)).encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".progress.", dir=self.path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a viewer loses a progress tick; the run must not care


class TaskTail:
    """Everything new in one task's files since the last `poll()`, as events.

    `from_start=False` (the default) ignores what earlier runs of the task left behind;
    the caller reads that history itself (`Workspace.read_events`) if it wants it.
    """

    def __init__(self, workspace: Workspace, task_name: str, *, from_start: bool = False) -> None:
        self.workspace = workspace
        self.task_name = task_name
        folder = workspace.task_dir(task_name)
        offset = 0 if from_start else None
        self._metrics = FileTail(folder / METRICS_FILE, offset)
        self._log = LogTail(folder / LOG_FILE, offset)
        self._progress_path = folder / PROGRESS_FILE
        self._progress_seen = self._progress_stamp() if not from_start else None

    def _progress_stamp(self) -> tuple[int, int] | None:
        try:
            st = self._progress_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _read_progress(self) -> Progress | None:
        stamp = self._progress_stamp()
        if stamp is None or stamp == self._progress_seen:
            return None
        try:
            event = from_dict(json.loads(self._progress_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # replaced between stat and read: next poll
        self._progress_seen = stamp
        return event if isinstance(event, Progress) else None

    def poll(self) -> list[Any]:
        """New events, in file order: metrics events, then log messages, then the newest progress."""
        events: list[Any] = []
        for line in self._metrics.read_lines():
            if not line.strip():
                continue
            try:
                events.append(from_dict(json.loads(line)))
            except (ValueError, TypeError, AttributeError):
                continue  # a foreign line: skip it like Workspace.read_events does
        events.extend(self._log.read())
        progress = self._read_progress()
        if progress is not None:
            events.append(progress)
        return events

    def flush(self) -> list[Any]:
        """What is left once the writer has finished (a held-back log message)."""
        return self.poll() + self._log.flush()

    def status(self) -> StatusRecord:
        """The task's status (a Running one whose owner died reads as Failed "interrupted")."""
        return self.workspace.read_status(self.task_name)


class Follower:
    """Polling thread: `tail.poll()` -> `dispatch(event)` until the run has ended.

    The run has ended when a final Status event arrives, or when `alive()` turns False.  In
    the second case `on_end(status record, seen_running)` decides the final Status (the
    default: the status file's final state once the run had reported Running, else Failed).
    """

    def __init__(
        self,
        tail: TaskTail,
        dispatch: Callable[[Any], None],
        alive: Callable[[], bool],
        *,
        on_end: Callable[[StatusRecord | None, bool], Status] | None = None,
        interval: float = POLL_S,
        grace_s: float = 5.0,
        seen_running: bool = False,
    ) -> None:
        self.tail = tail
        self._dispatch = dispatch
        self._alive = alive
        self._on_end = on_end
        self.interval = interval
        self.grace_s = grace_s  # after a final status, how long to wait for the process to exit
        self.final: Status | None = None
        self.seen_running = seen_running  # True when attaching to a run already under way
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"modx-tail-{tail.task_name}", daemon=True)

    def start(self) -> "Follower":
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def wake(self) -> None:
        """Poll now rather than at the next tick (after a stop request, say)."""
        self._wake.set()

    def _send(self, events: list[Any]) -> None:
        """Dispatch events; a final Status is held back so that it is always the last event."""
        for event in events:
            if isinstance(event, Status):
                if event.state == "Running":
                    self.seen_running = True
                elif event.state in FINAL_STATES:
                    self.final = event
                    continue
            self._call(event)

    def _call(self, event: Any) -> None:
        try:
            self._dispatch(event)
        except Exception:  # noqa: BLE001 - a failing view must not stop following
            pass

    def _main(self) -> None:
        while self.final is None:
            alive = self._alive()  # asked before reading, so nothing written before death is missed
            self._send(self.tail.poll())
            if self.final is not None or not alive:
                break
            self._wake.wait(self.interval)
            self._wake.clear()
        if self.final is not None:
            deadline = time.monotonic() + self.grace_s
            while self._alive() and time.monotonic() < deadline:  # let the writer finish its files
                time.sleep(0.05)
        self._send(self.tail.flush())
        if self.final is None:
            self.final = self._closing_status()
        self._call(self.final)

    def _closing_status(self) -> Status:
        """The final state of a run whose process is gone without a final event."""
        try:
            record: StatusRecord | None = self.tail.status()
        except Exception:  # noqa: BLE001 - a damaged status must not hide the end
            record = None
        if self._on_end is not None:
            return self._on_end(record, self.seen_running)
        if self.seen_running and record is not None and record.state in FINAL_STATES:
            return Status(state=record.state, message=record.message, hint=record.hint)
        return Status(state="Failed", message="the training process ended without reporting")
