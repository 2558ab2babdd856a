"""RunMonitor: live updates through the throttle, charts mutated in place, history, log, failures."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import comm
import numpy as np
import pytest

from modx_widgets.events import Checkpoint, Error, Eval, Log, Message, Progress, Status
from modx_widgets.ui.logpanel import visible_messages
from modx_widgets.ui.monitor import RunMonitor, format_duration, progress_text, RunData


# -- helpers -------------------------------------------------------------------------------


class RecordingComm:
    """A kernel comm stand-in that records every message (ipywidgets' own tests do the same)."""

    kernel = "present"

    def __init__(self, sent: list, **kwargs):
        self.comm_id = uuid.uuid4().hex
        self._sent = sent

    def send(self, data=None, buffers=None, **kwargs):
        self._sent.append((self.comm_id, data, list(buffers or [])))

    def on_msg(self, callback):
        pass

    def close(self, *args, **kwargs):
        pass


class Comms:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, list]] = []
        self.opened: list[RecordingComm] = []

    def create(self, **kwargs) -> RecordingComm:
        c = RecordingComm(self.sent, **kwargs)
        self.opened.append(c)
        return c


@pytest.fixture
def comms(monkeypatch):
    recorder = Comms()
    monkeypatch.setattr(comm, "create_comm", recorder.create)
    return recorder


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class FakeRun:
    """Implements the listener half of TrainingRun; emit() calls listeners on the caller's thread."""

    def __init__(self, state: str = "Pending") -> None:
        self.state = state
        self.listeners: list = []

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    def remove_listener(self, fn) -> None:
        self.listeners.remove(fn)

    def emit(self, event) -> None:
        if isinstance(event, Status):
            self.state = event.state
        for fn in list(self.listeners):
            fn(event)


def _log(step: int, loss: float | None = None, t: float | None = None) -> Log:
    kw = {} if t is None else {"time": t}
    return Log(step=step, epoch=step / 1000, loss=3.0 / (1 + step / 50) if loss is None else loss,
               learning_rate=2e-4 * (1 - step / 20_000), grad_norm=1.0 + (step % 7) / 10, **kw)


def _finished_run_events(steps: int = 40) -> list:
    events: list = [Status(state="Running", time=100.0)]
    for s in range(1, steps + 1):
        events.append(_log(s, t=100.0 + s))
        if s % 10 == 0:
            events.append(Eval(step=s, epoch=s / 1000, eval_loss=[2.0, 1.5, 1.7, 1.6][s // 10 - 1], time=100.0 + s))
            events.append(Checkpoint(step=s, path=f"/out/checkpoint-{s}", time=100.0 + s))
    events.append(Status(state="Completed", time=100.0 + steps + 1))
    return events


# -- throttling and comm traffic ---------------------------------------------------------------


def test_ten_thousand_logs_in_one_second_send_a_bounded_number_of_messages(comms):
    clock = FakeClock()
    monitor = RunMonitor(clock=clock, tail_flush=False, flush_interval=0.2, max_points=1000)
    widgets_in_monitor = len(comms.opened)
    run = FakeRun()
    monitor.attach(run)
    comms.sent.clear()
    flushes_before = monitor.flush_count

    run.emit(Status(state="Running"))
    for step in range(1, 10_001):
        run.emit(Progress(step=step, max_steps=10_000, epoch=step / 1000, elapsed_s=step / 10_000))
        run.emit(_log(step))
        clock.now += 1.0 / 10_000
    run.emit(Status(state="Completed"))

    flushes = monitor.flush_count - flushes_before
    # 1 s at <= 5 flushes/s, plus the first event and the two forced Status flushes
    assert flushes <= 8
    assert len(comms.sent) <= flushes * widgets_in_monitor
    assert len(comms.sent) < 150, f"{len(comms.sent)} comm messages for 20,002 events"
    assert len(comms.opened) == widgets_in_monitor, "no widget was created during the run"
    # every array sent to a chart holds at most max_points float64 values
    sizes = [len(bytes(b)) // 8 for _, _, buffers in comms.sent for b in buffers]
    assert sizes and max(sizes) <= 1000
    assert monitor.state == "Completed"
    assert len(monitor.data.train_loss) == 10_000
    x = np.asarray(monitor.charts.train_raw.x)
    assert len(x) <= 1000 and x[-1] == 10_000
    assert np.array_equal(x[-200:], np.arange(9801, 10_001))


@pytest.mark.parametrize(
    "forced",
    [Eval(step=2, epoch=0.002, eval_loss=1.0), Checkpoint(step=2, path="/out/checkpoint-2"), Status(state="Stopped")],
    ids=lambda e: type(e).__name__,
)
def test_eval_checkpoint_and_status_are_shown_without_waiting(comms, forced):
    clock = FakeClock()  # never advances: only forced events can flush after the first
    monitor = RunMonitor(clock=clock, tail_flush=False)
    run = FakeRun()
    monitor.attach(run)
    run.emit(_log(1))
    run.emit(_log(2))
    assert len(monitor.charts.train_raw.x) == 1, "the second log waits for the interval"
    run.emit(forced)
    assert len(monitor.charts.train_raw.x) == 2
    if isinstance(forced, Eval):
        assert list(monitor.charts.eval_line.x) == [2.0] and monitor.charts.eval_line.visible
    elif isinstance(forced, Checkpoint):
        assert list(monitor.charts.ckpt_marks.x) == [2.0]
    else:
        assert monitor.badge.state == "Stopped" and monitor.state == "Stopped"


def test_updates_are_batched_inside_hold_sync(comms):
    clock = FakeClock()
    monitor = RunMonitor(clock=clock, tail_flush=False)
    run = FakeRun()
    monitor.attach(run)
    comms.sent.clear()
    run.emit(Eval(step=5, epoch=0.1, eval_loss=1.25))
    bar_id = monitor.progress_bar.comm.comm_id
    eval_id = monitor.charts.eval_line.comm.comm_id
    eval_msgs = [d for cid, d, _ in comms.sent if cid == eval_id]
    # x, y and visible changed together: one message, not three
    assert len(eval_msgs) == 1 and {"x", "y", "visible"} <= set(eval_msgs[0]["state"])
    assert len([1 for cid, _, _ in comms.sent if cid == bar_id]) <= 1


def test_buffered_events_reach_the_view_when_the_run_goes_quiet():
    monitor = RunMonitor(flush_interval=0.05)
    run = FakeRun()
    monitor.attach(run)
    run.emit(_log(1))
    run.emit(_log(2))  # buffered; no further event will arrive
    deadline = time.monotonic() + 2.0
    while len(monitor.charts.train_raw.x) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(monitor.charts.train_raw.x) == 2
    monitor.detach()


def test_a_run_on_another_thread_updates_the_view_while_the_main_thread_is_free():
    monitor = RunMonitor(flush_interval=0.05)
    run = FakeRun()
    monitor.attach(run)
    states: list[str] = []
    monitor.on_state(states.append)

    def train():
        run.emit(Status(state="Running"))
        for step in range(1, 301):
            run.emit(_log(step))
            time.sleep(0.002)
        run.emit(Status(state="Completed"))

    worker = threading.Thread(target=train)
    worker.start()
    seen_while_running = set()
    while worker.is_alive():  # the main thread keeps working while the run trains
        seen_while_running.add(len(monitor.charts.train_raw.x))
        time.sleep(0.01)
    worker.join()
    assert len(seen_while_running) > 2, "the chart grew in several steps during the run"
    assert monitor.state == "Completed" and monitor.badge.state == "Completed"
    assert list(monitor.charts.train_raw.x)[-1] == 300
    assert states == ["Running", "Completed"]


# -- charts --------------------------------------------------------------------------------------


def test_charts_mutate_the_same_marks_through_a_run_a_clear_and_a_history(comms):
    monitor = RunMonitor(tail_flush=False)
    figures = [monitor.charts.loss_figure, monitor.charts.lr_figure, monitor.charts.grad_figure]
    marks_before = [list(f.marks) for f in figures]
    opened = len(comms.opened)
    run = FakeRun()
    monitor.attach(run)
    for event in _finished_run_events():
        run.emit(event)
    monitor.clear()
    monitor.show_history(_finished_run_events(), "Completed")
    assert [list(f.marks) for f in figures] == marks_before
    assert all(a is b for fb, fa in zip(marks_before, [f.marks for f in figures]) for a, b in zip(fb, fa))
    assert len(comms.opened) == opened, "nothing was rebuilt"


def test_smoothing_zero_draws_the_raw_loss_and_more_smoothing_flattens_it():
    monitor = RunMonitor(tail_flush=False)
    events = [_log(s, loss=2.0 + (1 if s % 2 else -1)) for s in range(1, 101)]
    monitor.show_history(events, "Completed")
    monitor.charts.smoothing.value = 0.0
    assert np.allclose(monitor.charts.train_smooth.y, monitor.charts.train_raw.y)
    monitor.charts.smoothing.value = 0.9
    smooth = np.asarray(monitor.charts.train_smooth.y)
    assert np.ptp(smooth[50:]) < 0.5 * np.ptp(np.asarray(monitor.charts.train_raw.y)[50:])


def test_log_scale_toggle_swaps_the_loss_axis_scale_on_the_same_marks():
    import bqplot

    monitor = RunMonitor(tail_flush=False)
    marks = list(monitor.charts.loss_figure.marks)
    monitor.charts.log_scale.value = True
    assert all(isinstance(m.scales["y"], bqplot.LogScale) for m in marks)
    assert list(monitor.charts.loss_figure.marks) == marks
    monitor.charts.log_scale.value = False
    assert all(isinstance(m.scales["y"], bqplot.LinearScale) for m in marks)


def test_checkpoints_and_the_best_eval_point_are_marked():
    monitor = RunMonitor(tail_flush=False)
    monitor.show_history(_finished_run_events(), "Completed")
    assert list(monitor.charts.ckpt_marks.x) == [10.0, 20.0, 30.0, 40.0]
    assert list(monitor.charts.best_mark.x) == [20.0] and list(monitor.charts.best_mark.y) == [1.5]


# -- history ---------------------------------------------------------------------------------------


def test_history_rebuilds_charts_progress_and_final_metrics():
    from modx_widgets.store.records import StatusRecord

    monitor = RunMonitor(tail_flush=False)
    states: list[str] = []
    monitor.on_state(states.append)
    status = StatusRecord(state="Completed", started=100.0, ended=141.0, step=40, max_steps=40)
    monitor.show_history(_finished_run_events(), status)
    assert monitor.state == "Completed" and monitor.badge.state == "Completed"
    assert list(monitor.charts.train_raw.x) == list(range(1, 41))
    assert list(monitor.charts.eval_line.y) == [2.0, 1.5, 1.7, 1.6]
    assert monitor.progress_bar.value == monitor.progress_bar.max == 40
    summary = monitor.summary.value
    assert "best eval loss <b>1.5</b> (step 20)" in summary and "4 checkpoint(s)" in summary
    assert "0:41" in monitor.progress_label.value  # elapsed from the status record
    assert monitor.failure_card.layout.display == "none"
    assert states == ["Completed"]


def test_history_of_an_interrupted_task_shows_the_failure_card():
    from modx_widgets.store.records import StatusRecord

    monitor = RunMonitor(tail_flush=False)
    events = [Status(state="Running", time=1.0), _log(1, t=2.0)]
    status = StatusRecord(state="Failed", message="interrupted", hint="The kernel stopped; resume from a checkpoint.")
    monitor.show_history(events, status)
    assert monitor.state == "Failed" and monitor.badge.state == "Failed"
    assert monitor.failure_card.layout.display != "none"
    assert "interrupted" in monitor.failure_card.value
    assert "resume from a checkpoint" in monitor.failure_card.value


def test_history_from_a_real_workspace_round_trip(tmp_path):
    from modx_widgets.store import Workspace

    ws = Workspace(tmp_path)
    ws.create_task("sft_demo", "sft", "SFT", "cpu", {})
    ws.append_events("sft_demo", _finished_run_events(20))
    monitor = RunMonitor(tail_flush=False)
    monitor.show_history(ws.read_events("sft_demo"), ws.read_status("sft_demo").state)
    assert list(monitor.charts.train_raw.x) == list(range(1, 21))
    assert list(monitor.charts.ckpt_marks.x) == [10.0, 20.0]


def test_a_resumed_run_replaces_the_steps_it_logs_again():
    monitor = RunMonitor(tail_flush=False)
    first = _finished_run_events(40)[:-1] + [Status(state="Stopped", time=150.0)]
    resumed = [Status(state="Running", time=200.0), *(_log(s, loss=0.5, t=200.0 + s) for s in range(21, 31))]
    monitor.show_history(first + resumed, "Running")
    x = list(monitor.charts.train_raw.x)
    assert x == list(range(1, 31)), "steps 21-40 of the first run were replaced, not drawn twice"
    assert list(monitor.charts.train_raw.y)[-10:] == [0.5] * 10
    assert list(monitor.charts.ckpt_marks.x) == [10.0, 20.0]  # checkpoint-20 is where it resumed
    assert list(monitor.charts.eval_line.x) == [10.0, 20.0] and list(monitor.charts.best_mark.x) == [20.0]
    assert np.allclose(monitor.charts.train_smooth.x, x)


def test_unknown_state_in_a_status_record_is_refused():
    with pytest.raises(ValueError, match="Pending, Running, Completed, Stopped, Failed"):
        RunMonitor(tail_flush=False).show_history([], "Done")


def test_reattach_with_history_neither_loses_nor_repeats_events():
    monitor = RunMonitor(tail_flush=False)
    run = FakeRun(state="Running")
    stored = [Status(state="Running", time=10.0), *(_log(s, t=10.0 + s) for s in range(1, 6))]
    late = _log(6, t=16.0)

    def history():
        # the run goes on between subscribing and reading the file: step 5 is both stored
        # and delivered live, step 6 only live
        run.emit(stored[-1])
        run.emit(late)
        return stored

    monitor.attach(run, history=history)
    assert list(monitor.charts.train_raw.x) == [1, 2, 3, 4, 5, 6]
    assert monitor.state == "Running"


def test_reattaching_to_a_running_task_starts_from_its_stored_events_and_log_level(tmp_path):
    from modx_widgets.store import Workspace

    ws = Workspace(tmp_path)
    ws.create_task("sft_live", "sft", "SFT", "cpu", {"log_level": "warning"})
    stored = [Status(state="Running", time=50.0), *(_log(s, t=50.0 + s) for s in range(1, 11))]
    ws.append_events("sft_live", stored)
    run = FakeRun(state="Running")
    run.workspace, run.task_name = ws, "sft_live"  # what a TrainingRun exposes
    monitor = RunMonitor(tail_flush=False)
    monitor.attach(run)
    assert list(monitor.charts.train_raw.x) == list(range(1, 11))
    assert monitor.log_panel.level == "warning" and monitor.state == "Running"
    run.emit(_log(11))
    run.emit(Status(state="Completed"))
    assert list(monitor.charts.train_raw.x) == list(range(1, 12))


def test_history_none_means_a_fresh_run_even_for_a_task_with_stored_events(tmp_path):
    from modx_widgets.store import Workspace

    ws = Workspace(tmp_path)
    ws.create_task("sft_again", "sft", "SFT", "cpu", {})
    ws.append_events("sft_again", [Status(state="Running", time=1.0), _log(1, t=2.0), Status(state="Stopped", time=3.0)])
    run = FakeRun(state="Running")
    run.workspace, run.task_name = ws, "sft_again"
    monitor = RunMonitor(tail_flush=False)
    monitor.attach(run, history=None)
    assert len(monitor.charts.train_raw.x) == 0 and monitor.state == "Running"


def test_attach_to_a_run_takes_its_current_state():
    monitor = RunMonitor(tail_flush=False)
    monitor.attach(FakeRun(state="Running"))
    assert monitor.state == "Running" and monitor.badge.state == "Running"


def test_detach_stops_updates_and_keeps_what_was_shown():
    monitor = RunMonitor(tail_flush=False)
    run = FakeRun()
    monitor.attach(run)
    run.emit(_log(1))
    monitor.detach()
    assert run.listeners == []
    run.emit(_log(2))
    assert list(monitor.charts.train_raw.x) == [1.0]


def test_attaching_to_something_that_is_not_a_run_is_explained():
    with pytest.raises(TypeError, match="add_listener"):
        RunMonitor(tail_flush=False).attach(object())


def test_clear_returns_to_pending_with_empty_views():
    monitor = RunMonitor(tail_flush=False)
    monitor.show_history(_finished_run_events(), "Completed")
    states: list[str] = []
    monitor.on_state(states.append)
    monitor.clear()
    assert monitor.state == "Pending" and states == ["Pending"]
    assert all(len(m.x) == 0 for m in monitor.charts.marks)
    assert monitor.summary.layout.display == "none"


# -- failure card, progress and log --------------------------------------------------------------


def test_failure_card_shows_message_hint_and_traceback():
    monitor = RunMonitor(tail_flush=False)
    run = FakeRun()
    monitor.attach(run)
    run.emit(Status(state="Running"))
    run.emit(Error(message="CUDA out of memory", hint="Lower batch_size <or> enable gradient checkpointing.",
                   traceback="Traceback (most recent call last): ..."))
    run.emit(Status(state="Failed", message="CUDA out of memory"))
    card = monitor.failure_card.value
    assert monitor.failure_card.layout.display != "none"
    assert "CUDA out of memory" in card
    assert "Lower batch_size &lt;or&gt; enable gradient checkpointing." in card
    assert "Traceback (most recent call last)" in card
    assert monitor.state == "Failed" and monitor.progress_bar.bar_style == "danger"


def test_a_new_run_after_a_failure_hides_the_card():
    monitor = RunMonitor(tail_flush=False)
    run = FakeRun()
    monitor.attach(run)
    run.emit(Error(message="boom"))
    monitor.attach(FakeRun())
    assert monitor.failure_card.layout.display == "none"


def test_progress_line_has_step_epoch_elapsed_eta_tokens_and_lr():
    data = RunData()
    data.apply(Status(state="Running"))
    data.apply(Progress(step=25, max_steps=100, epoch=0.5, elapsed_s=50.0, tokens_per_s=1234.4, learning_rate=1.5e-4))
    text = progress_text(data)
    for part in ("step 25 / 100", "epoch 0.50", "elapsed 0:50", "ETA 2:30", "1,234 tokens/s", "lr 1.50e-04"):
        assert part in text


def test_durations_read_like_a_clock():
    assert format_duration(75) == "1:15"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "–"


def test_log_panel_shows_only_messages_at_or_above_the_level():
    monitor = RunMonitor(tail_flush=False, log_level="warning")
    run = FakeRun()
    monitor.attach(run)
    for level in ("debug", "info", "warning", "error"):
        run.emit(Message(level=level, text=f"{level} line"))
    run.emit(Status(state="Completed"))
    html = monitor.log_panel.view.value
    assert "warning line" in html and "error line" in html
    assert "info line" not in html and "debug line" not in html
    monitor.log_panel.level = "debug"
    assert all(f"{lv} line" in monitor.log_panel.view.value for lv in ("debug", "info", "warning", "error"))


def test_attach_can_set_the_log_level_of_the_task():
    monitor = RunMonitor(tail_flush=False)
    run = FakeRun()
    monitor.attach(run, log_level="error")
    run.emit(Message(level="warning", text="disk almost full"))
    run.emit(Message(level="error", text="disk full"))
    run.emit(Status(state="Failed"))
    assert [m.text for m in monitor.log_panel.lines()] == ["disk full"]


def test_log_panel_escapes_text_and_keeps_a_bounded_view():
    monitor = RunMonitor(tail_flush=False, log_level="debug")
    run = FakeRun()
    monitor.attach(run)
    for i in range(1000):
        run.emit(Message(level="info", text=f"<line {i}>"))
    run.emit(Status(state="Completed"))
    lines = monitor.log_panel.lines()
    assert len(lines) == monitor.log_panel.max_lines and lines[-1].text == "<line 999>"
    assert "&lt;line 999&gt;" in monitor.log_panel.view.value
    assert "<line 999>" not in monitor.log_panel.view.value


def test_level_filter_is_a_pure_function_of_the_schema_order():
    levels = ("debug", "info", "warning", "error")
    msgs = [Message(level=lv, text=lv) for lv in (*levels, "trace")]
    assert [m.text for m in visible_messages(msgs, "info", levels)] == ["info", "warning", "error", "trace"]
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        visible_messages(msgs, "loud", levels)


# -- imports ----------------------------------------------------------------------------------


def test_bqplot_is_imported_only_when_a_monitor_is_created():
    code = (
        "import sys, modx_widgets, modx_widgets.ui.monitor\n"
        "assert 'bqplot' not in sys.modules, 'module import pulled bqplot'\n"
        "for heavy in ('torch', 'transformers'):\n"
        "    assert heavy not in sys.modules, heavy\n"
        "modx_widgets.ui.monitor.RunMonitor()\n"
        "assert 'bqplot' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- the real engine ------------------------------------------------------------------------------


@pytest.mark.slow
def test_monitor_follows_a_real_tiny_training_run_to_completed(tmp_path):
    run_module = pytest.importorskip("modx_widgets.run")
    if not hasattr(run_module, "TrainingRun"):
        pytest.skip("modx_widgets.run.TrainingRun is not available yet")
    from modx_widgets.schema.spec import load_schema
    from modx_widgets.store import Workspace
    from modx_widgets.testing import make_sft_data, make_tiny_model

    model = make_tiny_model(tmp_path / "model")
    data = make_sft_data(tmp_path / "train.jsonl", n=16)
    values = load_schema().defaults()
    values.update(
        train_file=str(data), model_path=str(model), output_dir=str(tmp_path / "out"),
        logging_steps=1, num_train_epochs=1, per_device_train_batch_size=4, gradient_accumulation_steps=1,
        max_seq_length=128, max_steps=6, save_strategy="no", fp16=False, gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    ws = Workspace(tmp_path / "ws")
    ws.create_task("sft_monitor", "sft", "SFT", "cpu", values)
    run = run_module.TrainingRun(ws, "sft_monitor")
    monitor = RunMonitor(flush_interval=0.1)
    states: list[str] = []
    monitor.on_state(states.append)
    monitor.attach(run)
    run.start()
    final = run.wait(timeout=240)
    monitor.detach()
    assert final == "Completed", monitor.failure_card.value
    assert monitor.state == "Completed" and states[-1] == "Completed" and "Running" in states
    assert len(monitor.data.train_loss) >= 2, "Log events reached the monitor"
    assert len(monitor.charts.train_raw.x) == len(monitor.data.train_loss)
