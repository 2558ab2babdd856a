"""The only language between a training run and whatever watches it.

A run emits these plain dataclasses; the store writes them to the task's files and the
widget's monitor turns them into trait updates.  Keeping them dumb (no widgets, no torch)
means a run in another process can write them as JSON lines and a reader can rebuild them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Union

STATES = ("Pending", "Running", "Completed", "Stopped", "Failed")
FINAL_STATES = ("Completed", "Stopped", "Failed")


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Progress:
    """Where the run stands; emitted at most once per optimizer step."""

    kind: ClassVar[str] = "progress"
    step: int
    max_steps: int
    epoch: float
    elapsed_s: float
    eta_s: float | None = None
    tokens_per_s: float | None = None
    learning_rate: float | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Log:
    """One training log record (every `logging_steps`)."""

    kind: ClassVar[str] = "log"
    step: int
    epoch: float
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Eval:
    """One evaluation result; `metrics` holds everything else the Trainer reported."""

    kind: ClassVar[str] = "eval"
    step: int
    epoch: float
    eval_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint directory finished writing."""

    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Status:
    """A state change of the run (one of STATES)."""

    kind: ClassVar[str] = "status"
    state: str
    message: str = ""
    hint: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Error:
    """Why a run failed: a one-line message, an actionable hint, and the traceback text."""

    kind: ClassVar[str] = "error"
    message: str
    hint: str = ""
    traceback: str = ""
    time: float = field(default_factory=_now)


@dataclass(frozen=True)
class Message:
    """A human-readable log line; `level` is one of debug/info/warning/error."""

    kind: ClassVar[str] = "message"
    level: str
    text: str
    time: float = field(default_factory=_now)


Event = Union[Progress, Log, Eval, Checkpoint, Status, Error, Message]
EVENT_TYPES: dict[str, type] = {
    cls.kind: cls for cls in (Progress, Log, Eval, Checkpoint, Status, Error, Message)
}


def to_dict(event: Event) -> dict[str, Any]:
    """JSON-ready dict with a `kind` tag, the form stored in metrics.jsonl."""
    data = asdict(event)
    data["kind"] = event.kind
    return data


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from `to_dict` output; unknown keys are ignored (forward compatible)."""
    cls = EVENT_TYPES.get(data.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown event kind: {data.get('kind')!r}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
