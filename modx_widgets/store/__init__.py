"""Tasks, statuses, event logs and templates on disk (see `Workspace`).

Only JSON is ever read back, every write is atomic, and every name is checked so that
nothing escapes the workspace root.
"""

from __future__ import annotations

from .errors import StoreError
from .names import MAX_NAME_LENGTH, check_name, name_problem, same_name
from .process import is_pid_alive
from .records import StatusRecord, TaskInfo, TaskRecord, TemplateRecord
from .workspace import INTERRUPTED, Workspace

__all__ = [
    "INTERRUPTED",
    "MAX_NAME_LENGTH",
    "StatusRecord",
    "StoreError",
    "TaskInfo",
    "TaskRecord",
    "TemplateRecord",
    "Workspace",
    "check_name",
    "is_pid_alive",
    "name_problem",
    "same_name",
]
