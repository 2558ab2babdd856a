"""Faults inside a run, in one kernel: Stop at awkward moments, exceptions in each part of the
training loop, and the misuses a notebook invites (start twice, delete or edit while running,
stop when idle).  Faults are injected into the real code paths (a callback, or the real function
wrapped by monkeypatch), never by replacing the engine.
"""

from __future__ import annotations

import functools
import html
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_faults_support import changes, snapshot
from test_run_support import CallbackBase, make_task, run_task, update_task

from modx_widgets.run import RunBusy, TrainingRun, active_run
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint
from modx_widgets.store import StatusRecord, StoreError


# ----------------------------------------------------------------------------------------------
# Stop at the first step, during evaluation, during a save: Stopped, and the newest complete
# checkpoint resumes to the end
# ----------------------------------------------------------------------------------------------


def _stop_in_first_step(stop: threading.Event, monkeypatch) -> tuple[dict, list]:
    def on_step_begin(cb, args, state, control, **kw):
        if state.global_step == 0:
            stop.set()

    return {}, [CallbackBase.make(on_step_begin=on_step_begin)]


def _stop_in_evaluation(stop: threading.Event, monkeypatch) -> tuple[dict, list]:
    def on_prediction_step(cb, args, state, control, **kw):
        stop.set()

    values = dict(eval_split_ratio=0.2, eval_strategy="steps", eval_steps=3)
    return values, [CallbackBase.make(on_prediction_step=on_prediction_step)]


def _stop_in_save(stop: threading.Event, monkeypatch) -> tuple[dict, list]:
    from transformers import Trainer

    real = Trainer._save_optimizer_and_scheduler

    def saving(self, output_dir):  # Stop pressed while the optimizer state is being written
        stop.set()
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", saving)
    return dict(save_strategy="steps", save_steps=2), []


STOPS = {"first-step": _stop_in_first_step, "evaluation": _stop_in_evaluation, "checkpoint-save": _stop_in_save}


@pytest.mark.parametrize("moment", sorted(STOPS))
def test_stop_ends_stopped_and_the_newest_complete_checkpoint_resumes_to_the_end(tmp_path, monkeypatch, moment):
    stop = threading.Event()
    extra, callbacks = STOPS[moment](stop, monkeypatch)
    ws, name, values = make_task(tmp_path, max_steps=6, **extra)
    state, first = run_task(ws, name, stop=stop, callbacks=callbacks)
    monkeypatch.undo()
    assert state == "Stopped", first.errors
    newest = latest_checkpoint(values["output_dir"])
    assert newest is not None and is_complete(newest)
    stopped_at = first.progress[-1].step
    assert newest.name == f"checkpoint-{stopped_at}" and stopped_at < 6
    status = ws.read_status(name)
    assert status.state == "Stopped" and str(newest) in status.message  # the message says where to resume

    update_task(ws, name, resume_from_checkpoint=str(newest))
    state, second = run_task(ws, name)
    assert state == "Completed", second.errors
    assert [log.step for log in first.logs + second.logs] == list(range(1, 7))


# ----------------------------------------------------------------------------------------------
# An exception in data loading, the forward pass, a callback or a save: Failed with the message;
# the widget and the kernel stay usable and the next task trains
# ----------------------------------------------------------------------------------------------


def _nth_call_raises(real, n: int, exc: Exception):
    calls = {"n": 0}

    @functools.wraps(real)  # keeps the signature: the Trainer reads forward()'s parameters
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    return wrapper


def _break_data_loading(monkeypatch) -> dict:
    import modx_widgets.data as data

    real = data.collator

    def collator(tokenizer):
        return _nth_call_raises(real(tokenizer), 3, ValueError("collate exploded on a batch"))

    monkeypatch.setattr(data, "collator", collator)
    return {}


def _break_forward(monkeypatch) -> dict:
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "forward",
                        _nth_call_raises(LlamaForCausalLM.forward, 3, RuntimeError("forward exploded")))
    return {}


def _break_callback(monkeypatch) -> dict:
    from modx_widgets.run.callbacks import EventCallback

    monkeypatch.setattr(EventCallback, "on_log",
                        _nth_call_raises(EventCallback.on_log, 2, KeyError("callback exploded")))
    return {}


def _break_save(monkeypatch) -> dict:
    from transformers import Trainer

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler",
                        _nth_call_raises(Trainer._save_optimizer_and_scheduler, 1, OSError("save exploded")))
    return {"save_strategy": "steps", "save_steps": 2}


BREAKS = {"data-loading": _break_data_loading, "forward-pass": _break_forward, "callback": _break_callback,
          "checkpoint-save": _break_save}


def widget_values(tmp_path: Path, **extra) -> dict:
    _, _, values = make_task(tmp_path, "seed-task", **extra)
    return values


@pytest.mark.parametrize("where", sorted(BREAKS))
def test_an_exception_in_the_loop_ends_failed_and_the_widget_starts_the_next_task(tmp_path, monkeypatch, where):
    from modx_widgets.ui.prepare import PrepareWidget

    extra = BREAKS[where](monkeypatch)
    values = widget_values(tmp_path, max_steps=4, **extra)
    widget = PrepareWidget(workspace=tmp_path / "ws2")
    widget.device = "cpu"
    widget.set_values({k: v for k, v in values.items() if k != "output_dir"} | {"output_dir": str(tmp_path / "o1")})
    widget.task_name = "broken"
    widget.start()
    assert widget.wait(300) == "Failed"
    monkeypatch.undo()
    status = widget.workspace.read_status("broken")
    assert status.state == "Failed" and "exploded" in status.message
    assert "Traceback" in widget.workspace.read_log("broken") and "exploded" in widget.workspace.read_log("broken")
    assert "Failed" in html.unescape(widget._message.value) and "exploded" in html.unescape(widget._message.value)
    assert not widget.running and not widget._start_button.disabled
    assert active_run(widget.workspace.root, "broken") is None

    widget.task_name = "next"
    widget.set_values({"max_steps": 1, "save_strategy": "no", "output_dir": str(tmp_path / "o2")})
    widget.start()
    assert widget.wait(300) == "Completed"
    assert dict(widget.tasks) == {"broken": "Failed", "next": "Completed"}
    widget.settle(30)


# ----------------------------------------------------------------------------------------------
# Misuse: start twice, delete or edit while running, stop when nothing runs
# ----------------------------------------------------------------------------------------------


def wait_for_step(events: list, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(getattr(e, "kind", "") == "progress" and e.step >= step for e in list(events)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach step {step} in {timeout}s")


def test_start_twice_is_refused_in_this_kernel_and_from_another_process(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=2000, save_strategy="no")
    seen: list = []
    run = TrainingRun(ws, name, listeners=[seen.append]).start()
    try:
        wait_for_step(seen, 1)
        with pytest.raises(RunBusy):
            run.start()  # the same object
        with pytest.raises(RunBusy):
            TrainingRun(ws, name).start()  # a second object in this kernel
    finally:
        run.stop()
    assert run.wait(120) == "Stopped"

    # a live process elsewhere owns the Running status (e.g. modx-train in a terminal)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ws.write_status(name, StatusRecord(state="Running", owner_pid=other.pid))
        before = snapshot(tmp_path)
        with pytest.raises(RunBusy, match=str(other.pid)):
            TrainingRun(ws, name).start()
        assert changes(before, snapshot(tmp_path)) == []
    finally:
        other.kill()
        other.wait()
    assert ws.read_status(name).message == "interrupted"  # its owner is gone now


def test_a_running_task_cannot_be_deleted_and_its_files_stay_until_it_stops(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=2000, save_strategy="no")
    seen: list = []
    run = TrainingRun(ws, name, listeners=[seen.append]).start()
    try:
        wait_for_step(seen, 1)
        with pytest.raises(StoreError, match="stop it first"):
            ws.delete_task(name)
        assert (ws.task_dir(name) / "task.json").is_file() and run.is_alive()
    finally:
        run.stop()
    assert run.wait(120) == "Stopped"
    ws.delete_task(name)
    assert not ws.task_dir(name).exists() and [t.name for t in ws.list_tasks()] == []


def test_stop_when_nothing_runs_changes_nothing(tmp_path):
    from modx_widgets.ui.prepare import PrepareWidget

    ws, name, values = make_task(tmp_path, max_steps=1)
    widget = PrepareWidget(workspace=ws)
    widget.select_task(name)
    before = snapshot(tmp_path)
    widget.stop()
    assert "Nothing is running" in widget._message.value
    TrainingRun(ws, name).stop()  # a run that was never started
    assert changes(before, snapshot(tmp_path)) == [] and widget.status == "Pending"

    run = TrainingRun(ws, name).start()
    assert run.wait(120) == "Completed"
    before = snapshot(tmp_path)
    run.stop()  # after the end
    widget.stop()
    assert run.state == "Completed" and ws.read_status(name).state == "Completed"
    assert changes(before, snapshot(tmp_path)) == []
    widget.settle(30)


def test_values_edited_while_running_apply_to_the_next_run_only_and_the_widget_says_so(tmp_path):
    from modx_widgets.ui.prepare import PrepareWidget, StartRefused

    values = widget_values(tmp_path, max_steps=2000, save_strategy="no")
    widget = PrepareWidget(workspace=tmp_path / "ws2")
    widget.device = "cpu"
    widget.set_values(values)
    widget.task_name = "edited"
    widget.start()
    seen: list = []
    widget._run.add_listener(seen.append)
    try:
        wait_for_step(seen, 1)
        widget.set_values({"max_steps": 3, "learning_rate": 1e-3})
        assert "next run" in widget._message.value
        assert widget._start_button.disabled
        with pytest.raises(StartRefused) as info:
            widget.start()  # Start again while it runs
        assert "already running" in info.value.errors["run"] or "still running" in info.value.errors["run"]
        assert widget.workspace.load_task("edited").values["max_steps"] == 2000  # the task file is untouched
        wait_for_step(seen, max(e.step for e in seen if getattr(e, "kind", "") == "progress") + 2)
    finally:
        widget.stop()
    assert widget.wait(120) == "Stopped"
    progress = [e for e in seen if getattr(e, "kind", "") == "progress"]
    assert {e.max_steps for e in progress} == {2000} and progress[-1].step > 3  # the run kept its settings
    logged = [e for e in seen if getattr(e, "kind", "") == "log"]
    assert {log.learning_rate for log in logged} == {values["learning_rate"]}

    widget.start()  # the next run of the same task uses the edited values
    assert widget.wait(120) == "Completed"
    assert widget.workspace.load_task("edited").values["max_steps"] == 3
    assert widget.workspace.read_status("edited").step == 3
    widget.settle(30)


# ----------------------------------------------------------------------------------------------
# Containment: a run writes into its task folder and its output_dir, nowhere else
# ----------------------------------------------------------------------------------------------


def test_a_run_writes_only_into_its_task_folder_and_its_output_dir(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, eval_split_ratio=0.2,
                                 eval_strategy="steps", eval_steps=1)
    before = snapshot(tmp_path)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    out = Path(values["output_dir"])
    allowed = {str(p) for p in [tmp_path, *out.parents] if tmp_path in [p, *p.parents]}  # folders created for out
    inside = (str(ws.task_dir(name)), str(out))
    after = snapshot(tmp_path)
    stray = [c for c in changes(before, after)
             if not c.split(":")[0].startswith(inside) and c.split(":")[0] not in allowed]
    assert stray == []
    assert any(p.startswith(str(out / "checkpoint-1")) for p in after)  # it did write where it should
