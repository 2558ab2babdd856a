"""`execute`: the synchronous core of a training run, shared by the kernel thread and the CLI.

Two phases.  `prepare` reads and checks everything a user can get wrong (task values, the
environment, every line of the data files, the model folder) and raises `TaskInvalid` with
all problems at once, before anything is written or loaded.  `execute` then marks the task
Running, builds tokenizer, data, model and Trainer, trains, saves, and ends in Completed,
Stopped or Failed; an exception becomes Failed with its message, a hint, and the traceback
in run.log.  transformers/peft/torch are imported inside the training phase only.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..events import Error, Message
from ..store import Workspace, is_pid_alive
from .hints import DISK, hint_for
from .sink import RunSink

MAX_LISTED_LINES = 10


class TaskInvalid(ValueError):
    """The task cannot start; `problems` maps a field (or '') to what is wrong with it."""

    def __init__(self, task_name: str, problems: Mapping[str, str]) -> None:
        self.task_name = task_name
        self.problems = dict(problems)
        listed = "; ".join(f"{k}: {m}" if k else m for k, m in self.problems.items())
        super().__init__(f"task {task_name!r} cannot start ({len(self.problems)} problem(s)): {listed}")


class RunBusy(RuntimeError):
    """The task is already running (in this kernel or in another process)."""


@dataclass(frozen=True)
class Prepared:
    """A task that passed every check, with its clean values and the warnings to show."""

    task_name: str
    training_type: str
    device: str
    values: dict[str, Any]
    warnings: list[tuple[str, str]] = field(default_factory=list)
    data_notes: list[str] = field(default_factory=list)
    # data files as the checks parsed them, for the run's data loading (then dropped to free memory)
    scans: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


# ---------------------------------------------------------------------------------------------
# Phase 1: checks (no writes, no model)
# ---------------------------------------------------------------------------------------------


def _data_problems(
    path: Any, key: str, training_type: str, notes: list[str], scans: dict[str, Any]
) -> dict[str, str]:
    from ..data import DataError
    from ..data.check import scan_for_training

    try:
        scanned = scan_for_training(path, training_type)
    except DataError as exc:
        return {key: str(exc)}
    report = scanned.report
    bad = max(len(report.rejected), int(getattr(report, "rejected_count", 0) or 0))
    if bad:
        shown = "; ".join(f"line {p.line}: {p.message}" for p in report.rejected[:MAX_LISTED_LINES])
        more = bad - min(len(report.rejected), MAX_LISTED_LINES)
        return {
            key: f"{path}: {bad} bad line(s), {report.usable} usable - {shown}"
            + (f" (and {more} more)" if more > 0 else "")
            + ". Fix or remove these lines."
        }
    if report.usable == 0:
        return {key: f"{path} holds no usable record"}
    notes.append(f"{key}: {report.usable} usable record(s) in {path}")
    scans[str(path)] = scanned  # parsed once: the run's data loading reuses it
    return {}


def prepare(workspace: Workspace, task_name: str, *, device: str | None = None) -> Prepared:
    """Every check that can refuse a start, in the order a user would fix them.

    `device` overrides the task's device for this run (the CLI's --device).
    """
    from ..config.validate import validate
    from ..envcheck import check_environment
    from .checkpoints import expected_lora, resume_problem, weights_misfit
    from .model import ModelError, check_model_dir, has_chat_template, missing_lora_targets

    record = workspace.load_task(task_name)
    device = device or record.device
    result = validate(record.values, record.training_type, check_paths=True)
    problems = dict(result.errors)
    values = result.values
    warnings = list(result.warnings)
    env = check_environment(values, record.training_type, device)
    for item in env.items:
        if item.level == "error":
            problems.setdefault(f"env:{item.name}", item.detail)
        elif item.level == "warning":
            warnings.append((f"env:{item.name}", item.detail))
    notes: list[str] = []
    scans: dict[str, Any] = {}
    for key in ("train_file", "eval_file"):
        if values.get(key) and key not in problems:
            problems.update(_data_problems(values[key], key, record.training_type, notes, scans))
    if "model_path" not in problems:
        try:
            check_model_dir(values.get("model_path"))
        except ModelError as exc:
            problems["model_path"] = str(exc)
        else:
            lora = expected_lora(values, record.training_type)
            adapter = values.get("lora_adapter_path") if lora is not None and values.get("attach_lora") else None
            misfit = weights_misfit(adapter, values["model_path"]) if adapter else ""
            if misfit and "lora_adapter_path" not in problems:
                problems["lora_adapter_path"] = f"{adapter} was trained on another model: {misfit}"
            if lora is not None and not values.get("attach_lora"):
                problem = missing_lora_targets(values["model_path"], lora[1])
                if problem:
                    key = "peft_config_path" if values.get("peft_config_path") else "lora_target_modules"
                    problems[key] = problem
    tokenizer_key = "tokenizer_path" if values.get("tokenizer_path") else "model_path"
    if record.training_type == "sft" and tokenizer_key not in problems and values.get(tokenizer_key):
        if not has_chat_template(values[tokenizer_key]):
            problems[tokenizer_key] = (
                f"the tokenizer in {values[tokenizer_key]} has no chat template, so SFT conversations cannot be "
                "formatted: choose a tokenizer_path whose folder has chat_template.jinja (or 'chat_template' in "
                "tokenizer_config.json)"
            )
    resume = values.get("resume_from_checkpoint")
    if resume and not {"resume_from_checkpoint", "model_path"} & set(problems):
        model_config = _read_json(Path(str(values["model_path"])) / "config.json")
        problem = resume_problem(
            resume, model_config=model_config, lora=expected_lora(values, record.training_type),
            model_dir=values["model_path"],
        )
        if problem:
            problems["resume_from_checkpoint"] = problem
    if problems:
        raise TaskInvalid(task_name, problems)
    return Prepared(task_name, record.training_type, device, values, warnings, notes, scans)


def check_not_running(workspace: Workspace, task_name: str) -> None:
    """Refuse when another live process owns this task's Running status."""
    import os

    status = workspace.read_status(task_name)  # a dead owner is turned into Failed "interrupted" here
    if status.state == "Running" and status.owner_pid not in (None, os.getpid()) and is_pid_alive(status.owner_pid):
        raise RunBusy(f"task {task_name!r} is already running (process {status.owner_pid}); stop it first")


# ---------------------------------------------------------------------------------------------
# Phase 2: the run
# ---------------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    state: str
    message: str = ""


def execute(
    workspace: Workspace,
    task_name: str,
    emit: Callable[[Any], None] | None,
    stop_event: threading.Event,
    *,
    prepared: Prepared | None = None,
    callbacks: Iterable[Any] = (),
    clock: Callable[[], float] = time.monotonic,
    stop_file: Path | None = None,
) -> str:
    """Run task `task_name` to its end and return the final state (Completed/Stopped/Failed).

    Raises `TaskInvalid` (nothing written) when the task cannot start, `RunBusy` when another
    process runs it.  `callbacks` are extra Trainer callbacks; `clock` feeds the time-based
    save and the speed figures (tests move it instead of waiting).  `stop_file`, when given,
    is a second way to ask for a stop: its presence (used by runs in other processes).

    Under torchrun every rank calls this; only rank 0 writes the task's files and emits.
    """
    if prepared is None:
        prepared = prepare(workspace, task_name)
    writer = process_rank() == 0
    if writer:
        check_not_running(workspace, task_name)
    sink = RunSink(workspace, task_name, emit if writer else None, persist=writer)
    sink.running()
    for key, text in prepared.warnings:
        sink(Message(level="warning", text=f"{key}: {text}" if key else text))
    for note in prepared.data_notes:
        sink(Message(level="info", text=note))
    try:
        from .logs import library_logs_to

        with library_logs_to(sink, prepared.values.get("log_level", "info")):
            cache_dir = workspace.task_dir(task_name) / "data_cache"  # tokenized data, reused on resume
            outcome = _train(prepared, sink, stop_event, list(callbacks), clock, cache_dir, stop_file if writer else None)
    except BaseException as exc:  # noqa: BLE001 - every failure must end in a final status
        message = _failure_message(exc)
        if isinstance(exc, KeyboardInterrupt):
            message = "aborted (second interrupt); the newest complete checkpoint can be resumed"
        hint = hint_for(exc)
        full = _disk_full_note(prepared.values.get("output_dir"))
        if full:  # torch's checkpoint writer loses errno: "unexpected pos ..." really means this
            message, hint = f"{message} ({full})", DISK
        message += _resume_note(prepared.values.get("output_dir"))
        tb = traceback.format_exc()
        sink(Message(level="error", text=tb))
        sink(Error(message=message, hint=hint, traceback=tb))
        sink.finish("Failed", message, hint)
        _consume(stop_file if writer else None)
        if not isinstance(exc, Exception):
            raise
        return "Failed"
    sink.finish(outcome.state, outcome.message)
    _consume(stop_file if writer else None)
    return outcome.state


DISK_FULL_BYTES = 8 * 1024 * 1024  # below this, no checkpoint of any real model fits


def _disk_full_note(output_dir: Any) -> str:
    """'the disk ... is full' when output_dir's file system is (nearly) out of space, else ''."""
    import shutil

    if not output_dir:
        return ""
    p = Path(str(output_dir)).expanduser()
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return ""
    return f"the disk holding output_dir is full: {free // 1024} KiB free" if free < DISK_FULL_BYTES else ""


def _resume_note(output_dir: Any) -> str:
    """Where a failed run can be resumed from: the newest *complete* checkpoint (a save cut
    short by the failure is skipped), or '' when there is none."""
    from .checkpoints import latest_checkpoint

    if not output_dir:
        return ""
    try:
        newest = latest_checkpoint(Path(str(output_dir)).expanduser())
    except OSError:
        return ""
    return f"; the newest complete checkpoint is {newest}" if newest is not None else ""


def process_rank() -> int:
    """This process's rank under torchrun (RANK), 0 otherwise."""
    import os

    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _consume(stop_file: Path | None) -> None:
    """A stop request is served once: remove it when the run ends."""
    if stop_file is not None:
        try:
            stop_file.unlink()
        except OSError:
            pass


def _train(
    prepared: Prepared,
    sink: RunSink,
    stop_event: threading.Event,
    extra: list[Any],
    clock: Callable[[], float],
    cache_dir: Path | None,
    stop_file: Path | None,
) -> _Outcome:
    from .thread import settle_imports

    settle_imports()
    from transformers import EarlyStoppingCallback, set_seed

    from ..config.build import early_stopping_plan, padding_free, training_arguments
    from ..data import collator, flattening_collator, load_datasets
    from .callbacks import EventCallback, IntervalSaveCallback, StopCallback
    from .model import add_adapter, load_model, load_tokenizer
    from .trainer import ModxTrainer

    values, tt = prepared.values, prepared.training_type
    seed = int(values["seed"])
    output_dir = Path(str(values["output_dir"])).expanduser()

    set_seed(seed)
    tokenizer = load_tokenizer(values)
    data = load_datasets(values, tt, tokenizer, cache_dir=cache_dir, scans=prepared.scans)
    prepared.scans.clear()  # the records now live in the tokenized data set
    sink(Message(level="info", text=_data_summary(data)))
    if stop_event.is_set():
        return _Outcome("Stopped", "stopped before training started; nothing to resume")

    model = load_model(values)
    set_seed(seed)  # the adapter's random init depends on it
    model = add_adapter(model, values, tt)
    resume = values.get("resume_from_checkpoint") or None  # checked in prepare()

    args = training_arguments(values, tt, output_dir=output_dir, device=prepared.device)
    stopper = StopCallback(stop_event, stop_file=stop_file)
    cbs: list[Any] = [stopper]
    if values.get("save_strategy") != "no":
        cbs.append(IntervalSaveCallback(float(values["save_interval_minutes"]), clock=clock))
    if int(values.get("early_stopping_patience") or 0) > 0:
        _, note = early_stopping_plan(values)
        if note:
            sink(Message(level="warning", text=note))
        cbs.append(
            EarlyStoppingCallback(
                early_stopping_patience=int(values["early_stopping_patience"]),
                early_stopping_threshold=float(values["early_stopping_threshold"]),
            )
        )
    trainer = ModxTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=flattening_collator() if padding_free(values, tt) else collator(tokenizer),
        processing_class=tokenizer,
        callbacks=cbs + extra,
        train_lengths=data.stats.lengths,
    )
    trainer.add_callback(EventCallback(sink, count_tokens=trainer.real_tokens_seen, clock=clock))
    if stop_event.is_set():
        return _Outcome("Stopped", "stopped before training started; nothing to resume")

    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    step = trainer.state.global_step
    if stopper.stopped and step < trainer.state.max_steps:  # a stop during the last step completes
        where = output_dir / f"checkpoint-{stopper.saved_step or step}"
        return _Outcome("Stopped", f"stopped at step {step}; resume from {where}")

    _save_final(trainer, model, tokenizer, output_dir, values, sink)
    return _Outcome("Completed", f"finished at step {step}; saved to {output_dir}")


# Exceptions whose message is written for the user; others get their type name in front.
_USER_FACING = ("ModelError", "DataError", "BuildError", "StoreError", "TaskInvalid")


def _failure_message(exc: BaseException) -> str:
    text = str(exc).strip()
    if type(exc).__name__ in _USER_FACING and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _save_final(trainer: Any, model: Any, tokenizer: Any, output_dir: Path, values: Mapping[str, Any], sink) -> None:
    """Final adapter (or full model) and tokenizer into output_dir; the merged model if asked."""
    from .model import is_peft, save_merged

    peft = is_peft(model)
    if not peft:
        model.config.use_cache = True  # restored for inference
    trainer.save_model(str(output_dir))  # adapter or full weights, plus the tokenizer
    sink(Message(level="info", text=f"saved the final {'adapter' if peft else 'model'} and tokenizer to {output_dir}"))
    if peft and values.get("merge_lora") and trainer.args.should_save:
        target = save_merged(model, tokenizer, output_dir / "merged")
        sink(Message(level="info", text=f"saved the merged model to {target}"))


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _data_summary(data: Any) -> str:
    train = len(data.train) if data.train is not None else 0
    ev = len(data.eval) if data.eval is not None else 0
    return f"data: {train} training and {ev} evaluation example(s)"
