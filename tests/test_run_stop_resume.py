"""Stop leaves a resumable checkpoint; resuming reproduces the uninterrupted run exactly."""

from __future__ import annotations

import os
import threading

import pytest
from test_run_support import (  # noqa: F401
    CallbackBase,
    close,
    make_task,
    run_task,
    torch_single_thread,
    update_task,
)

from modx_widgets.run import RunBusy, TrainingRun, active_run
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint


def stop_during_step(stop: threading.Event, step: int):
    """A callback that presses Stop while optimizer step `step` is running."""

    def on_step_begin(cb, args, state, control, **kw):
        if state.global_step == step - 1:
            stop.set()

    return CallbackBase.make(on_step_begin=on_step_begin)


def test_stop_ends_stopped_with_a_complete_checkpoint_at_that_step(tmp_path):
    stop = threading.Event()
    ws, name, values = make_task(tmp_path, max_steps=8)
    state, rec = run_task(ws, name, stop=stop, callbacks=[stop_during_step(stop, 3)])
    assert state == "Stopped"
    ckpt = os.path.join(values["output_dir"], "checkpoint-3")
    assert [c.path for c in rec.checkpoints] == [ckpt] and is_complete(ckpt)
    status = ws.read_status(name)
    assert status.state == "Stopped" and ckpt in status.message and status.step == 3
    assert rec.states == ["Running", "Stopped"]
    assert not os.path.exists(os.path.join(values["output_dir"], "adapter_model.safetensors"))


def test_stop_before_training_starts_ends_stopped_without_a_checkpoint(tmp_path):
    stop = threading.Event()
    stop.set()
    ws, name, values = make_task(tmp_path)
    state, rec = run_task(ws, name, stop=stop)
    assert state == "Stopped" and rec.checkpoints == [] and rec.logs == []
    assert "nothing to resume" in ws.read_status(name).message


def test_stop_during_evaluation_saves_right_after_it(tmp_path):
    stop = threading.Event()

    def on_prediction_step(cb, args, state, control, **kw):
        stop.set()

    ws, name, values = make_task(tmp_path, eval_split_ratio=0.2, eval_strategy="steps", eval_steps=2, max_steps=8)
    state, rec = run_task(ws, name, stop=stop, callbacks=[CallbackBase.make(on_prediction_step=on_prediction_step)])
    assert state == "Stopped"
    assert [e.step for e in rec.evals] == [2]
    assert [c.step for c in rec.checkpoints] == [2]
    assert latest_checkpoint(values["output_dir"]).name == "checkpoint-2"


def test_stop_during_a_checkpoint_save_still_ends_with_a_resumable_checkpoint(tmp_path):
    stop = threading.Event()

    def on_save(cb, args, state, control, **kw):
        stop.set()

    ws, name, values = make_task(tmp_path, save_strategy="steps", save_steps=2, max_steps=8)
    state, rec = run_task(ws, name, stop=stop, callbacks=[CallbackBase.make(on_save=on_save)])
    assert state == "Stopped"
    newest = latest_checkpoint(values["output_dir"])
    assert newest is not None and is_complete(newest)
    assert int(newest.name.split("-")[1]) == rec.progress[-1].step < 8


@pytest.mark.parametrize(
    "training_type,reshuffle", [("sft", True), ("pretrain", False)], ids=["lora-sft-reshuffled", "pretrain"]
)
def test_resumed_run_logs_the_same_losses_and_learning_rates_as_an_uninterrupted_one(
    tmp_path, training_type, reshuffle
):
    common = dict(
        max_steps=9, gradient_accumulation_steps=2, lr_scheduler_type="cosine", warmup_steps=2,
        learning_rate=1e-2, reshuffle=reshuffle, save_strategy="no",
    )
    ws, full, _ = make_task(tmp_path, "full", training_type, **common)
    state, uninterrupted = run_task(ws, full)
    assert state == "Completed", uninterrupted.errors

    stop = threading.Event()
    ws, part, values = make_task(tmp_path, "part", training_type, **common)
    state, first = run_task(ws, part, stop=stop, callbacks=[stop_during_step(stop, 4)])
    assert state == "Stopped"
    update_task(ws, part, resume_from_checkpoint=os.path.join(values["output_dir"], "checkpoint-4"))
    state, second = run_task(ws, part)
    assert state == "Completed", second.errors

    resumed = first.logs + second.logs
    assert [log.step for log in resumed] == [log.step for log in uninterrupted.logs] == list(range(1, 10))
    # the run crosses an epoch boundary after the resume point (24 examples, 2 x 2 per step)
    assert uninterrupted.logs[-1].epoch > 1 or training_type == "pretrain"
    for a, b in zip(uninterrupted.logs, resumed):
        assert close(a.loss, b.loss), (a.step, a.loss, b.loss)
        assert close(a.learning_rate, b.learning_rate), (a.step, a.learning_rate, b.learning_rate)


# -- the kernel thread -----------------------------------------------------------------------


def test_training_run_trains_in_a_daemon_thread_and_stops_on_request(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=400, save_strategy="no")
    reached = threading.Event()
    seen = []

    def listener(event):
        seen.append(event)
        if getattr(event, "kind", "") == "progress" and event.step >= 2:
            reached.set()

    run = TrainingRun(ws, name, listeners=[listener])
    run.start()
    assert run.is_alive() and run._thread.daemon and run.state == "Running"
    assert active_run(ws.root, name) is run
    with pytest.raises(RunBusy):
        TrainingRun(ws, name).start()
    assert reached.wait(120)
    run.stop()
    assert run.wait(120) == "Stopped"
    assert not run.is_alive() and active_run(ws.root, name) is None
    newest = latest_checkpoint(values["output_dir"])
    assert newest is not None and is_complete(newest)
    assert any(getattr(e, "kind", "") == "checkpoint" for e in seen)
    assert ws.read_status(name).state == "Stopped"


def test_a_stop_file_stops_a_kernel_run_and_a_leftover_one_is_ignored(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=3)
    stop_file = ws.task_dir(name) / "stop"
    stop_file.write_text("left by an earlier run\n")
    assert TrainingRun(ws, name).start().wait(120) == "Completed"

    ws, other, values = make_task(tmp_path, "t2", max_steps=400)
    stop_file = ws.task_dir(other) / "stop"

    def ask_by_file(event):
        if getattr(event, "kind", "") == "progress" and event.step == 2:
            stop_file.write_text("please stop\n")  # what a widget in another kernel does

    assert TrainingRun(ws, other, listeners=[ask_by_file]).start().wait(120) == "Stopped"
    assert not stop_file.exists()  # served, then removed
    assert is_complete(latest_checkpoint(values["output_dir"]))
