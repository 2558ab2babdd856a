"""Training runs: `TrainingRun` (kernel thread), `execute` (shared core), `warmup_imports`.

Importing this package is cheap; transformers, peft and torch load inside a run.
"""

from __future__ import annotations

from .engine import Prepared, RunBusy, TaskInvalid, execute, prepare
from .thread import TrainingRun, active_run, local_run, register_run, warmup_imports

__all__ = [
    "Prepared",
    "RunBusy",
    "TaskInvalid",
    "TrainingRun",
    "active_run",
    "execute",
    "local_run",
    "prepare",
    "register_run",
    "warmup_imports",
]
