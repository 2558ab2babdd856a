"""The records kept in a workspace and their strict JSON form.

Every file carries `schema_version`.  Reading is strict on purpose: a file that is not an
object, comes from a newer version, has unknown keys or wrongly typed fields is refused with
a message naming the file, because guessing at a half-understood file is how settings get
silently lost.  Parameter values go through the same field checks as the form.

Timestamps are epoch seconds (float, UTC by definition), the same clock as `events.*.time`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config.validate import check_values
from ..events import STATES
from ..schema.spec import load_schema
from .errors import StoreError


def current_version() -> int:
    """The schema_version this package writes; files above it come from a newer release."""
    return load_schema().version


@dataclass(frozen=True)
class TaskRecord:
    """A task's settings (task.json).  Use `dataclasses.replace` to change it, then `save_task`."""

    name: str
    training_type: str
    template: str | None
    device: str
    values: dict[str, Any]
    temporary: bool = False
    schema_version: int = field(default_factory=current_version)
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StatusRecord:
    """Where a task stands (status.json); `owner_pid`/`owner_host` identify the process running it."""

    state: str = "Pending"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    updated: float = field(default_factory=time.time)
    message: str = ""
    hint: str = ""
    owner_pid: int | None = None
    owner_host: str | None = None
    step: int = 0
    max_steps: int = 0

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)} (got {self.state!r})")


@dataclass(frozen=True)
class TemplateRecord:
    """A named parameter set: a shipped preset or a user template (complete values)."""

    name: str
    training_type: str
    values: dict[str, Any]
    preset: bool = False


@dataclass(frozen=True)
class TaskInfo:
    """One row of the task list; `problem` says why the task cannot be loaded (else None)."""

    name: str
    state: str
    problem: str | None = None


# -- checking helpers --------------------------------------------------------------------


def _object(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise StoreError(f"{path} holds a JSON {type(doc).__name__}, not an object; it is not a modx_widgets file")
    return doc


def _version(doc: Mapping[str, Any], path: Path) -> int:
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StoreError(f"{path} has no valid schema_version; it is not a modx_widgets file")
    if version > current_version():
        raise StoreError(
            f"{path} was written by a newer modx_widgets (schema_version {version}, this one reads up to "
            f"{current_version()}); upgrade the package to open it"
        )
    return version


def _keys(doc: Mapping[str, Any], required: set[str], optional: set[str], path: Path) -> None:
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        raise StoreError(f"{path} has unknown keys {', '.join(map(repr, unknown))}; remove them or upgrade modx_widgets")
    missing = sorted(required - set(doc))
    if missing:
        raise StoreError(f"{path} lacks {', '.join(map(repr, missing))}; the file is incomplete")


def _typed(doc: Mapping[str, Any], key: str, types: tuple[type, ...], path: Path) -> Any:
    value = doc.get(key)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise StoreError(f"{path}: {key!r} must be {names} (got {value!r:.60})")
    return value


def training_type_problem(training_type: object) -> str | None:
    options = load_schema().basic_param("training_type").options or ()
    if training_type not in options:
        return f"training type must be one of {', '.join(options)} (got {training_type!r})"
    return None


def clean_values(values: Any, training_type: str, where: str) -> dict[str, Any]:
    """Coerce and field-check values exactly as the form does; refuse what the form would reject."""
    if not isinstance(values, Mapping):
        raise StoreError(f"{where}: values must be an object mapping parameter keys to values")
    result = check_values(values, training_type)
    if result.errors:
        listed = "; ".join(f"{k}: {m}" for k, m in result.errors.items())
        raise StoreError(f"{where}: invalid values ({listed})")
    return result.values


# -- tasks ------------------------------------------------------------------------------

_TASK_REQUIRED = {"schema_version", "training_type", "device", "values"}
_TASK_OPTIONAL = {"name", "template", "temporary", "created"}


def task_to_json(record: TaskRecord) -> dict[str, Any]:
    return {
        "schema_version": current_version(),
        "name": record.name,
        "training_type": record.training_type,
        "template": record.template,
        "device": record.device,
        "temporary": record.temporary,
        "created": record.created,
        "values": record.values,
    }


def task_from_json(doc: Any, path: Path, name: str) -> TaskRecord:
    """Parse task.json; the folder name is authoritative (a renamed folder keeps working)."""
    doc = _object(doc, path)
    version = _version(doc, path)
    _keys(doc, _TASK_REQUIRED, _TASK_OPTIONAL, path)
    training_type = doc["training_type"]
    problem = training_type_problem(training_type)
    if problem:
        raise StoreError(f"{path}: {problem}")
    device = _typed(doc, "device", (str,), path)
    template = _typed(doc, "template", (str, type(None)), path)
    temporary = _typed(doc, "temporary", (bool,), path) if "temporary" in doc else False
    created = _typed(doc, "created", (int, float), path) if "created" in doc else 0.0
    values = clean_values(doc["values"], training_type, str(path))
    return TaskRecord(name, training_type, template, device, values, temporary, version, float(created))


# -- status -----------------------------------------------------------------------------

_STATUS_FIELDS = {
    "state": (str,),
    "created": (int, float),
    "started": (int, float, type(None)),
    "ended": (int, float, type(None)),
    "updated": (int, float),
    "message": (str,),
    "hint": (str,),
    "owner_pid": (int, type(None)),
    "owner_host": (str, type(None)),
    "step": (int,),
    "max_steps": (int,),
}


def status_to_json(record: StatusRecord) -> dict[str, Any]:
    return {"schema_version": current_version(), **asdict(record)}


def status_from_json(doc: Any, path: Path) -> StatusRecord:
    doc = _object(doc, path)
    _version(doc, path)
    _keys(doc, {"schema_version", "state"}, set(_STATUS_FIELDS) - {"state"}, path)
    if doc["state"] not in STATES:
        raise StoreError(f"{path}: state must be one of {', '.join(STATES)} (got {doc['state']!r:.40})")
    kwargs = {key: _typed(doc, key, types, path) for key, types in _STATUS_FIELDS.items() if key in doc}
    return StatusRecord(**kwargs)


# -- templates --------------------------------------------------------------------------

_TEMPLATE_REQUIRED = {"schema_version", "training_type", "values"}
_TEMPLATE_OPTIONAL = {"name"}


def template_to_json(record: TemplateRecord) -> dict[str, Any]:
    return {
        "schema_version": current_version(),
        "name": record.name,
        "training_type": record.training_type,
        "values": record.values,
    }


def template_from_json(doc: Any, path: Path | str, name: str, preset: bool) -> TemplateRecord:
    """Parse a template or preset file; a preset's partial values are completed with defaults."""
    where = Path(path)
    doc = _object(doc, where)
    _version(doc, where)
    _keys(doc, _TEMPLATE_REQUIRED, _TEMPLATE_OPTIONAL, where)
    problem = training_type_problem(doc["training_type"])
    if problem:
        raise StoreError(f"{where}: {problem}")
    values = clean_values(doc["values"], doc["training_type"], str(where))
    return TemplateRecord(name, doc["training_type"], values, preset)
