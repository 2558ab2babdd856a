"""Shared helpers for the tests/test_run_*.py files: tiny tasks and a recording run.

Tiny model (~250k parameters), a few dozen records, max_seq_length at its minimum, no loader
worker processes: a run takes a second or two on one CPU core.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from modx_widgets.events import Checkpoint, Error, Eval, Log, Message, Progress, Status
from modx_widgets.run import execute
from modx_widgets.store import Workspace
from modx_widgets.testing import make_pretrain_data, make_sft_data, make_tiny_model

FAST = dict(
    max_seq_length=128,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=2,
    learning_rate=5e-3,
    lr_scheduler_type="constant",
    warmup_ratio=0.0,
    warmup_steps=0,
    max_steps=6,
    num_train_epochs=1,
    logging_steps=1,
    save_strategy="no",
    eval_strategy="no",
    fp16=False,
    gradient_checkpointing=False,
    dataloader_num_workers=0,
    lora_r=4,
    lora_alpha=8,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    seed=7,
)


def make_task(
    tmp_path: Path,
    name: str = "t1",
    training_type: str = "sft",
    *,
    n: int = 24,
    arch: str = "llama",
    device: str = "cpu",
    **values: Any,
) -> tuple[Workspace, str, dict[str, Any]]:
    """A workspace under tmp_path with one Pending task; returns (workspace, name, values)."""
    model = tmp_path / f"model-{arch}"
    if not model.exists():
        make_tiny_model(model, arch=arch)
    data = tmp_path / ("sft.jsonl" if training_type == "sft" else "docs.txt")
    if not data.exists():
        (make_sft_data if training_type == "sft" else make_pretrain_data)(data, n=n, seed=1)
    all_values = {
        **FAST,
        "train_file": str(data),
        "model_path": str(model),
        "output_dir": str(tmp_path / "out" / name),
        **values,
    }
    if training_type == "pretrain":
        for key in ("lora_r", "lora_alpha", "lora_target_modules"):
            all_values.pop(key, None)
    ws = Workspace(tmp_path / "ws")
    ws.create_task(name, training_type, None, device, all_values)
    return ws, name, all_values


def update_task(ws: Workspace, name: str, **values: Any) -> None:
    record = ws.load_task(name)
    ws.save_task(replace(record, values={**record.values, **values}))


@dataclass
class Recorder:
    """Collects every event a run emits (thread-safe enough for one writer)."""

    events: list[Any] = field(default_factory=list)

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    @property
    def logs(self) -> list[Log]:
        return self.of(Log)

    @property
    def progress(self) -> list[Progress]:
        return self.of(Progress)

    @property
    def evals(self) -> list[Eval]:
        return self.of(Eval)

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return self.of(Checkpoint)

    @property
    def states(self) -> list[str]:
        return [e.state for e in self.of(Status)]

    @property
    def errors(self) -> list[Error]:
        return self.of(Error)

    def messages(self, level: str | None = None) -> list[str]:
        return [m.text for m in self.of(Message) if level is None or m.level == level]


def run_task(ws: Workspace, name: str, *, stop: threading.Event | None = None, callbacks=(), clock=None):
    """execute() the task in this thread; returns (final state, Recorder)."""
    rec = Recorder()
    kwargs: dict[str, Any] = {"callbacks": list(callbacks)}
    if clock is not None:
        kwargs["clock"] = clock
    state = execute(ws, name, rec, stop or threading.Event(), **kwargs)
    return state, rec


def losses(rec: Recorder) -> list[float]:
    return [log.loss for log in rec.logs]


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


class CallbackBase:
    """Lazily subclassed TrainerCallback (keeps transformers out of collection time)."""

    @staticmethod
    def make(**hooks: Any) -> Any:
        from transformers import TrainerCallback

        return type("TestCallback", (TrainerCallback,), hooks)()


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """One torch intra-op thread for the test module (restored after).

    Test models are tiny; on a busy 2-core machine torch's thread pool spends its time
    waiting for the neighbours and a 1-second run takes 20.  Semantics do not change.
    Test modules import this fixture, which makes it autouse there.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
