"""Trainer callbacks: the only places where the engine touches the training loop.

`EventCallback` turns Trainer hooks into events, `StopCallback` turns the user's Stop into a
clean, checkpointed stop, `IntervalSaveCallback` adds time-based checkpoints.  They change
nothing but `control`, as the Trainer's callback contract asks.  Imports transformers, so
this module is only imported from inside a run.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Callable

from transformers import TrainerCallback

from ..events import Checkpoint, Eval, Log, Message, Progress

Emit = Callable[[Any], None]
Clock = Callable[[], float]

# Keys of the Trainer's end-of-training summary log (not a training log line).
_SUMMARY_KEYS = ("train_runtime", "train_loss", "train_samples_per_second")


def checkpoint_path(args: Any, step: int) -> str:
    return os.path.join(args.output_dir, f"checkpoint-{step}")


class EventCallback(TrainerCallback):
    """Hooks -> Progress / Log / Eval / Checkpoint / Message events.

    Progress is emitted every optimizer step from values already on the host (the step
    counter and the scheduler's learning rate), so it costs no device sync.  Real token
    counts are read only at logging steps, where the Trainer syncs for the loss anyway.
    """

    def __init__(self, emit: Emit, *, count_tokens: Callable[[], int] | None = None, clock: Clock = time.monotonic):
        self.emit = emit
        self.count_tokens = count_tokens
        self.clock = clock
        self.start_time = 0.0
        self.start_step = 0
        self.last_log_time = 0.0
        self.last_log_tokens = 0
        self.warned_non_finite = False  # one warning per run is enough; the chart shows the gap
        self.tokens_per_s: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = self.last_log_time = self.clock()
        self.start_step = state.global_step
        self.last_log_tokens = self.count_tokens() if self.count_tokens else 0
        self.emit(Progress(step=state.global_step, max_steps=state.max_steps, epoch=float(state.epoch or 0.0),
                           elapsed_s=0.0))

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        now = self.clock()
        elapsed = now - self.start_time
        done = state.global_step - self.start_step
        eta = elapsed / done * max(state.max_steps - state.global_step, 0) if done > 0 else None
        lr = None
        if lr_scheduler is not None:
            try:
                lr = float(lr_scheduler.get_last_lr()[0])
            except (AttributeError, IndexError, TypeError):
                lr = None
        self.emit(
            Progress(
                step=state.global_step,
                max_steps=state.max_steps,
                epoch=float(state.epoch or 0.0),
                elapsed_s=elapsed,
                eta_s=eta,
                tokens_per_s=self.tokens_per_s,
                learning_rate=lr,
            )
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            now = self.clock()
            if self.count_tokens is not None:
                tokens = self.count_tokens()
                span = now - self.last_log_time
                self.tokens_per_s = (tokens - self.last_log_tokens) / span if span > 0 else None
                self.last_log_tokens = tokens
            self.last_log_time = now
            raw_loss = logs.get("loss")
            if raw_loss is not None and _finite(raw_loss) is None and not self.warned_non_finite:
                self.warned_non_finite = True
                self.emit(Message(level="warning", text=(
                    f"the training loss is {raw_loss} at step {state.global_step}: training has diverged. "
                    "Lower the learning rate, keep max_grad_norm on, or switch fp16 to bf16; resume from "
                    "the last checkpoint before this step."
                )))
            self.emit(
                Log(
                    step=state.global_step,
                    epoch=float(state.epoch or 0.0),
                    loss=_finite(logs.get("loss")),
                    learning_rate=_finite(logs.get("learning_rate")),
                    grad_norm=_finite(logs.get("grad_norm")),
                    tokens_per_s=self.tokens_per_s,
                )
            )
        elif any(k in logs for k in _SUMMARY_KEYS):
            parts = ", ".join(f"{k}={_fmt(v)}" for k, v in logs.items() if k != "total_flos")
            self.emit(Message(level="info", text=f"training finished at step {state.global_step}: {parts}"))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = dict(metrics or {})
        loss = _finite(metrics.pop("eval_loss", None))
        rest = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.emit(Eval(step=state.global_step, epoch=float(state.epoch or 0.0), eval_loss=loss, metrics=rest))

    def on_save(self, args, state, control, **kwargs):
        self.emit(Checkpoint(step=state.global_step, path=checkpoint_path(args, state.global_step)))


class StopCallback(TrainerCallback):
    """Stops the run when `stop_event` is set (or `stop_file` exists), saving a checkpoint first.

    Checked after every optimizer step, after an evaluation (the save follows at once) and
    after a save; a stop during gradient accumulation waits for the step to complete.  With
    several processes (torchrun) only the step-end check runs, and the ranks agree on it with
    one all-reduce of a single integer, so they all stop, and save, at the same step.
    """

    def __init__(self, stop_event: threading.Event, stop_file: str | os.PathLike[str] | None = None):
        self.stop_event = stop_event
        self.stop_file = stop_file
        self.stopped_at: int | None = None
        self.saved_step: int | None = None

    def _local_request(self) -> bool:
        return self.stop_event.is_set() or (self.stop_file is not None and os.path.exists(self.stop_file))

    @staticmethod
    def _distributed(args) -> bool:
        if getattr(args, "world_size", 1) <= 1:
            return False
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()

    def _agreed_request(self, args) -> bool:
        """Every rank calls this once per optimizer step; True on all ranks if any asked."""
        local = self._local_request()
        if not self._distributed(args):
            return local
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _stop(self, state, control) -> None:
        control.should_training_stop = True
        if self.saved_step != state.global_step:
            control.should_save = True
        if self.stopped_at is None:
            self.stopped_at = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed_request(args):
            self._stop(state, control)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        if not self._distributed(args) and self._local_request():
            self._stop(state, control)
        return control

    def on_save(self, args, state, control, **kwargs):
        self.saved_step = state.global_step
        if not self._distributed(args) and self._local_request():
            control.should_training_stop = True
            if self.stopped_at is None:
                self.stopped_at = state.global_step
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        # The loop breaks on a stop and then runs the epoch-end flow; do not evaluate or save
        # the same step a second time.
        if self.stopped_at is not None:
            control.should_evaluate = False
            control.should_save = self.saved_step != state.global_step
        return control

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None


class IntervalSaveCallback(TrainerCallback):
    """Asks for a checkpoint when `minutes` have passed since the last one (or the start).

    `clock` is injectable so tests can move time instead of waiting.
    """

    def __init__(self, minutes: float, clock: Clock = time.monotonic):
        if minutes <= 0:
            raise ValueError("save interval must be positive")
        self.interval_s = float(minutes) * 60.0
        self.clock = clock
        self.last = clock()

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock() - self.last >= self.interval_s:
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last = self.clock()


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
