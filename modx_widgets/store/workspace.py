"""`Workspace`: tasks and templates on disk under one root folder.

Layout::

    <root>/tasks/<name>/task.json       settings (TaskRecord)
    <root>/tasks/<name>/status.json     state and owner (StatusRecord)
    <root>/tasks/<name>/metrics.jsonl   one event per line (Log, Eval, Checkpoint, Status, Error)
    <root>/tasks/<name>/run.log         human-readable Message lines
    <root>/templates/<name>.json        user templates (presets ship with the package)

Every path is built from a checked name and then re-checked after resolving symlinks, so
nothing is read, written or deleted outside the root.  One broken task never hides the
others: `list_tasks` reports its problem and carries on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..events import Checkpoint, Error, Eval, Event, Log, Message, Progress, Status, from_dict, to_dict
from .errors import StoreError
from .files import append_text, read_complete_lines, read_json, write_json_atomic
from .names import check_name, name_problem, same_name
from .presets import find_preset, preset_names
from .process import is_pid_alive, this_host
from .records import (
    StatusRecord,
    TaskInfo,
    TaskRecord,
    TemplateRecord,
    clean_values,
    status_from_json,
    status_to_json,
    task_from_json,
    task_to_json,
    template_from_json,
    template_to_json,
    training_type_problem,
)

DEFAULT_ROOT = "modx_workspace"
TASK_FILE = "task.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "run.log"
INTERRUPTED = "interrupted"
INTERRUPTED_HINT = (
    "The process running this task ended without reporting (kernel restart, crash or kill). "
    "Start it again, or resume from its newest checkpoint."
)
# The devices config.build.parse_device understands (ignoring case).
_DEVICE = re.compile(r"auto|cpu|all|gpu|cuda(:\d{1,3})?", re.IGNORECASE)
_PERSISTED = (Log, Eval, Checkpoint, Status, Error)


def device_problem(device: object) -> str | None:
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        return f"device must be auto, cpu, all, cuda or cuda:N such as cuda:0 (got {device!r:.40})"
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Workspace:
    """Tasks and templates under `root` (default `./modx_workspace`, created on first write)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(DEFAULT_ROOT if root is None else root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def tasks_root(self) -> Path:
        return self.root / "tasks"

    @property
    def templates_root(self) -> Path:
        return self.root / "templates"

    # -- paths ------------------------------------------------------------------------

    def _contained(self, path: Path, parent: Path) -> Path:
        """`path` itself if, after resolving symlinks, it lies strictly inside `parent`."""
        resolved, base = path.resolve(), parent.resolve()
        if resolved == base or not resolved.is_relative_to(base):
            raise StoreError(f"{path} resolves to {resolved}, outside {base}; refusing to touch it")
        return path

    @staticmethod
    def _entries(folder: Path) -> list[str]:
        try:
            return [e for e in os.listdir(folder) if not e.startswith(".")]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list {folder}: {exc.strerror or exc}") from exc

    def _existing_task(self, name: str) -> str | None:
        """The on-disk spelling of task `name`, matched ignoring case."""
        return next((e for e in self._entries(self.tasks_root) if same_name(e, name)), None)

    def task_dir(self, name: str) -> Path:
        """Folder of task `name` (existing spelling if any); it need not exist yet."""
        check_name(name, "task")
        actual = self._existing_task(name) or name
        return self._contained(self.tasks_root / actual, self.tasks_root)

    def _require_task(self, name: str) -> Path:
        folder = self.task_dir(name)
        if not folder.is_dir():
            raise StoreError(f"no task named {name!r} in {self.tasks_root}")
        return folder

    # -- tasks ------------------------------------------------------------------------

    def default_task_name(self, training_type: str, now: datetime | None = None) -> str:
        """`{training_type}_{YYYYMMDD_HHmmss}`, with `_2`, `_3`, ... appended while it is taken."""
        problem = training_type_problem(training_type)
        if problem:
            raise StoreError(problem)
        base = f"{training_type}_{(now or datetime.now()):%Y%m%d_%H%M%S}"
        taken = {e.lower() for e in self._entries(self.tasks_root)}
        name, n = base, 2
        while name.lower() in taken:
            name, n = f"{base}_{n}", n + 1
        return name

    def _checked_task(self, record: TaskRecord) -> TaskRecord:
        """The record with values coerced, or StoreError for anything the form would refuse."""
        for problem in (
            training_type_problem(record.training_type),
            device_problem(record.device),
            None if record.template is None else name_problem(record.template, "template"),
        ):
            if problem:
                raise StoreError(f"task {record.name!r}: {problem}")
        if not isinstance(record.temporary, bool):
            raise StoreError(f"task {record.name!r}: temporary must be true or false")
        values = clean_values(record.values, record.training_type, f"task {record.name!r}")
        return replace(record, values=values)

    def create_task(
        self,
        name: str,
        training_type: str,
        template: str | None,
        device: str,
        values: Mapping[str, Any],
        temporary: bool = False,
    ) -> TaskRecord:
        """Create task `name` (Pending) holding its own copy of `values`.

        When `temporary` is False and `template` names a user template, that template is
        updated with these values too (the spec's default); a temporary task, or a preset,
        leaves every template untouched.
        """
        check_name(name, "task")
        record = self._checked_task(TaskRecord(name, training_type, template or None, device, values, temporary))  # type: ignore[arg-type]
        clash = self._existing_task(name)
        if clash is not None:
            raise StoreError(f"a task named {clash!r} already exists (names ignore case); choose another name")
        folder = self._contained(self.tasks_root / name, self.tasks_root)
        self.tasks_root.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            raise StoreError(f"a task named {name!r} already exists; choose another name") from None
        except OSError as exc:
            raise StoreError(f"could not create {folder}: {exc.strerror or exc}") from exc
        try:
            write_json_atomic(folder / STATUS_FILE, status_to_json(StatusRecord(created=record.created)))
            write_json_atomic(folder / TASK_FILE, task_to_json(record))  # written last: marks the task complete
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._sync_template(record)
        return record

    def load_task(self, name: str) -> TaskRecord:
        """Read and check task.json; StoreError names the file and what is wrong with it."""
        folder = self._require_task(name)
        path = folder / TASK_FILE
        return task_from_json(read_json(path), path, folder.name)

    def save_task(self, record: TaskRecord) -> TaskRecord:
        """Overwrite an existing task's settings atomically; returns the record as stored."""
        if not isinstance(record, TaskRecord):
            raise TypeError(f"save_task needs a TaskRecord, got {type(record).__name__}")
        folder = self._require_task(record.name)
        record = self._checked_task(replace(record, name=folder.name))
        write_json_atomic(folder / TASK_FILE, task_to_json(record))
        self._sync_template(record)
        return record

    def delete_task(self, name: str) -> None:
        """Remove a task folder; refused while the task is Running."""
        folder = self._require_task(name)
        try:
            state = self.read_status(folder.name).state
        except StoreError:
            state = None  # an unreadable status cannot prove a run; the task may go
        if state == "Running":
            raise StoreError(f"task {folder.name!r} is running: stop it first, then delete it")
        if folder.is_symlink():
            folder.unlink()
            return
        # Rename first so a crash mid-delete leaves a hidden folder, never a half-task in the list.
        trash = self.tasks_root / f".deleting-{folder.name}-{os.urandom(4).hex()}"
        try:
            os.rename(folder, trash)
            shutil.rmtree(trash)
        except OSError as exc:
            raise StoreError(f"could not delete task {folder.name!r}: {exc.strerror or exc}") from exc

    def list_tasks(self) -> list[TaskInfo]:
        """Every task folder with its state; a broken one is listed with its problem, never raised."""
        infos = []
        for entry in sorted(self._entries(self.tasks_root), key=str.lower):
            if not (self.tasks_root / entry).is_dir():
                continue
            problem = name_problem(entry, "task")
            if problem:
                infos.append(TaskInfo(entry, "Failed", f"{problem}; rename or remove the folder by hand"))
                continue
            state, problem = "Failed", None
            try:
                self.load_task(entry)
            except StoreError as exc:
                problem = str(exc)
            try:
                state = self.read_status(entry).state
            except StoreError as exc:
                problem = problem or str(exc)
            infos.append(TaskInfo(entry, state, problem))
        return infos

    # -- status -----------------------------------------------------------------------

    def read_status(self, name: str) -> StatusRecord:
        """The task's status; a Running one whose owner process has died becomes Failed "interrupted"."""
        folder = self._require_task(name)
        path = folder / STATUS_FILE
        if not path.exists():
            return StatusRecord()
        record = status_from_json(read_json(path), path)
        if record.state == "Running" and self._owner_gone(record):
            now = time.time()
            record = replace(record, state="Failed", message=INTERRUPTED, hint=INTERRUPTED_HINT, ended=now, updated=now)
            try:
                write_json_atomic(path, status_to_json(record))
            except StoreError:
                pass  # read-only workspace: still report the truth
        return record

    @staticmethod
    def _owner_gone(record: StatusRecord) -> bool:
        if record.owner_host not in (None, this_host()):
            return False  # another machine's pid cannot be checked from here
        return record.owner_pid is None or not is_pid_alive(record.owner_pid)

    def write_status(self, name: str, record: StatusRecord) -> StatusRecord:
        """Replace status.json; stamps `updated`, and a Running record without owner gets this process."""
        if not isinstance(record, StatusRecord):
            raise TypeError(f"write_status needs a StatusRecord, got {type(record).__name__}")
        folder = self._require_task(name)
        if record.state == "Running" and record.owner_pid is None:
            record = replace(record, owner_pid=os.getpid(), owner_host=this_host())
        record = replace(record, updated=time.time())
        write_json_atomic(folder / STATUS_FILE, status_to_json(record))
        return record

    # -- events -----------------------------------------------------------------------

    def append_events(self, name: str, events: Iterable[Event]) -> None:
        """Persist a batch: one write to metrics.jsonl, Messages as text lines to run.log, Progress dropped."""
        folder = self._require_task(name)
        metrics: list[str] = []
        log: list[str] = []
        for event in events:
            if isinstance(event, Progress):
                continue
            if isinstance(event, Message):
                text = str(event.text).replace("\r\n", "\n").replace("\n", "\n    ")
                log.append(f"{_iso(event.time)} {event.level.upper():<7} {text}")
            elif isinstance(event, _PERSISTED):
                metrics.append(json.dumps(to_dict(event), ensure_ascii=False))
            else:
                raise TypeError(f"append_events needs events from modx_widgets.events, got {type(event).__name__}")
        if metrics:
            append_text(folder / METRICS_FILE, "\n".join(metrics) + "\n")
        if log:
            append_text(folder / LOG_FILE, "\n".join(log) + "\n")

    def read_events(self, name: str) -> list[Event]:
        """Events from metrics.jsonl in order; a torn or foreign line is skipped."""
        events: list[Event] = []
        for line in read_complete_lines(self._require_task(name) / METRICS_FILE):
            try:
                data = json.loads(line)
                events.append(from_dict(data))
            except (ValueError, TypeError, AttributeError):
                continue
        return events

    def read_log(self, name: str, max_chars: int = 200_000) -> str:
        """The end of run.log (at most `max_chars` characters)."""
        path = self._require_task(name) / LOG_FILE
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return text[-max_chars:]

    # -- templates --------------------------------------------------------------------

    def _user_templates(self) -> list[str]:
        names = []
        for entry in self._entries(self.templates_root):
            stem, ext = os.path.splitext(entry)
            if ext == ".json" and name_problem(stem, "template") is None and find_preset(stem) is None:
                names.append(stem)
        return sorted(names, key=str.lower)

    def _existing_template(self, name: str) -> str | None:
        return next((t for t in self._user_templates() if same_name(t, name)), None)

    def _template_path(self, name: str) -> Path:
        return self._contained(self.templates_root / f"{name}.json", self.templates_root)

    def templates(self) -> list[str]:
        """Preset names first (SFT, Pretrain), then user templates sorted ignoring case."""
        return preset_names() + self._user_templates()

    def load_template(self, name: str) -> TemplateRecord:
        """A preset or user template with complete, checked values."""
        check_name(name, "template")
        preset = find_preset(name)
        if preset is not None:
            return preset
        actual = self._existing_template(name)
        if actual is None:
            raise StoreError(f"no template named {name!r}; available: {', '.join(self.templates())}")
        path = self._template_path(actual)
        return template_from_json(read_json(path), path, actual, preset=False)

    def save_template(self, name: str, training_type: str, values: Mapping[str, Any]) -> TemplateRecord:
        """Save (or overwrite) user template `name`; presets and case-variant clashes are refused."""
        check_name(name, "template")
        if find_preset(name) is not None:
            raise StoreError(f"{name!r} is a system preset and cannot be overwritten; save under another name")
        problem = training_type_problem(training_type)
        if problem:
            raise StoreError(f"template {name!r}: {problem}")
        existing = self._existing_template(name)
        if existing is not None and existing != name:
            raise StoreError(f"a template named {existing!r} already exists (names ignore case); use that exact name")
        record = TemplateRecord(name, training_type, clean_values(values, training_type, f"template {name!r}"))
        write_json_atomic(self._template_path(name), template_to_json(record))
        return record

    def delete_template(self, name: str) -> None:
        """Delete a user template; presets cannot be deleted."""
        check_name(name, "template")
        if find_preset(name) is not None:
            raise StoreError(f"{name!r} is a system preset and cannot be deleted")
        actual = self._existing_template(name)
        if actual is None:
            raise StoreError(f"no template named {name!r}")
        try:
            self._template_path(actual).unlink()
        except OSError as exc:
            raise StoreError(f"could not delete template {actual!r}: {exc.strerror or exc}") from exc

    def _sync_template(self, record: TaskRecord) -> None:
        """A non-temporary task writes its values back to its user template (never to a preset)."""
        if record.temporary or not record.template or find_preset(record.template) is not None:
            return
        actual = self._existing_template(record.template)
        if actual is None:
            return
        try:
            current = self.load_template(actual)
            if current.training_type == record.training_type and current.values == record.values:
                return
        except StoreError:
            pass  # a corrupt template is replaced by the task's good values
        self.save_template(actual, record.training_type, record.values)
