"""Following a task's files written by another process: offsets, torn lines, messages, progress, the end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from modx_widgets.events import Checkpoint, Eval, Log, Message, Progress, Status, to_dict
from modx_widgets.run.tail import FileTail, Follower, LogTail, ProgressWriter, TaskTail
from modx_widgets.store import StatusRecord, Workspace
from modx_widgets.store.process import this_host


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace(tmp_path / "ws")
    workspace.create_task("t1", "sft", None, "cpu", {})
    return workspace


def _same(a, b) -> bool:
    return to_dict(a) == to_dict(b)


def test_a_torn_last_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": ')
    tail = FileTail(path)
    assert tail.read_lines() == ['{"a": 1}']
    assert tail.read_lines() == []  # still torn
    with open(path, "ab") as fh:
        fh.write(b'2}\n{"c": 3}\n')
    assert tail.read_lines() == ['{"b": 2}', '{"c": 3}']
    assert tail.offset == path.stat().st_size


def test_reading_starts_at_the_end_when_asked_and_restarts_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text("old 1\nold 2\n")
    tail = FileTail(path, offset=None)
    assert tail.read_lines() == []
    with open(path, "a") as fh:
        fh.write("new\n")
    assert tail.read_lines() == ["new"]
    path.write_text("x\n")  # shorter than the offset: a new file
    assert tail.read_lines() == ["x"]
    assert FileTail(tmp_path / "missing").read_lines() == []


def test_task_tail_returns_only_new_events_in_order(ws):
    ws.append_events("t1", [Log(step=1, epoch=0.1, loss=3.0)])  # an earlier run: not replayed
    tail = TaskTail(ws, "t1")
    assert tail.poll() == []
    new = [Status(state="Running"), Log(step=2, epoch=0.2, loss=2.5), Eval(step=2, epoch=0.2, eval_loss=2.4),
           Checkpoint(step=2, path="/x/checkpoint-2")]
    ws.append_events("t1", new[:2])
    got = tail.poll()
    ws.append_events("t1", new[2:])
    got += tail.poll()
    assert len(got) == len(new) and all(_same(a, b) for a, b in zip(got, new))
    assert TaskTail(ws, "t1", from_start=True).poll()[0].step == 1


def test_task_tail_skips_a_torn_metrics_line_until_it_is_complete(ws):
    tail = TaskTail(ws, "t1")
    line = json.dumps(to_dict(Log(step=5, epoch=1.0, loss=1.5)))
    path = ws.task_dir("t1") / "metrics.jsonl"
    with open(path, "a") as fh:
        fh.write(line[:10])
    assert tail.poll() == []
    with open(path, "a") as fh:
        fh.write(line[10:] + "\n")
    (event,) = tail.poll()
    assert isinstance(event, Log) and event.step == 5 and event.loss == 1.5


def test_log_messages_come_back_with_level_and_multi_line_text(ws):
    tail = TaskTail(ws, "t1")
    first = Message(level="warning", text="disk is filling up")
    second = Message(level="error", text="Traceback (most recent call last):\n  File x\nValueError: boom")
    ws.append_events("t1", [first, second])
    got = tail.poll()
    # the newest message is held back until the writer is known to be done with it
    assert [(m.level, m.text) for m in got if isinstance(m, Message)] == [("warning", first.text)]
    got = tail.poll()
    assert [(m.level, m.text) for m in got if isinstance(m, Message)] == [("error", second.text)]
    assert abs(got[0].time - second.time) < 1.5  # run.log keeps whole seconds


def test_a_held_message_is_released_by_the_next_header_or_the_final_flush(tmp_path):
    path = tmp_path / "run.log"
    path.write_text("2025-01-01T00:00:00Z INFO    one\n    two\n")
    tail = LogTail(path)
    assert tail.read() == []
    with open(path, "a") as fh:
        fh.write("2025-01-01T00:00:01Z DEBUG   three\nstray line\n")
    got = tail.read()
    assert [(m.level, m.text) for m in got] == [("info", "one\ntwo")]
    assert [(m.level, m.text) for m in tail.flush()] == [("debug", "three\nstray line")]


def test_progress_written_by_the_training_process_reaches_the_tail(ws):
    tail = TaskTail(ws, "t1")
    writer = ProgressWriter(ws.task_dir("t1"), every_s=3600)
    writer(Progress(step=1, max_steps=10, epoch=0.1, elapsed_s=1.0, eta_s=9.0))
    writer(Progress(step=2, max_steps=10, epoch=0.2, elapsed_s=2.0))  # throttled away
    (first,) = tail.poll()
    assert isinstance(first, Progress) and first.step == 1 and first.eta_s == 9.0
    assert tail.poll() == []  # unchanged file: nothing new
    writer(Progress(step=10, max_steps=10, epoch=1.0, elapsed_s=9.0))  # the last step is always written
    (last,) = tail.poll()
    assert last.step == 10


def _owner():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _run_follower(ws, alive, **kwargs):
    events: list = []
    follower = Follower(TaskTail(ws, "t1"), events.append, alive, interval=0.05, grace_s=0.5, **kwargs).start()
    return follower, events


def test_follower_feeds_events_until_the_final_status(ws):
    owner = _owner()
    try:
        ws.write_status("t1", StatusRecord(state="Running", owner_pid=owner.pid, owner_host=this_host()))
        follower, events = _run_follower(ws, lambda: owner.poll() is None)
        ws.append_events("t1", [Status(state="Running"), Log(step=1, epoch=0.5, loss=2.0)])
        time.sleep(0.3)
        assert follower.is_alive() and [e.kind for e in events] == ["status", "log"]
        ws.append_events("t1", [Status(state="Completed", message="done")])
        follower.join(10)
        assert not follower.is_alive()
        assert follower.final.state == "Completed" and events[-1].message == "done"
    finally:
        owner.kill()
        owner.wait()


def test_follower_reports_interrupted_when_the_owner_dies_silently(ws):
    owner = _owner()
    ws.write_status("t1", StatusRecord(state="Running", owner_pid=owner.pid, owner_host=this_host()))
    follower, events = _run_follower(ws, lambda: owner.poll() is None, seen_running=True)
    ws.append_events("t1", [Log(step=3, epoch=0.5, loss=2.0)])
    time.sleep(0.3)
    owner.kill()
    owner.wait()
    follower.join(10)
    assert not follower.is_alive()
    assert events[0].kind == "log"
    assert events[-1].kind == "status" and events[-1].state == "Failed" and events[-1].message == "interrupted"
    assert ws.read_status("t1").state == "Failed"


def test_follower_asks_on_end_when_the_process_never_reported(ws):
    asked = []

    def on_end(record, seen_running):
        asked.append((record.state, seen_running))
        return Status(state="Failed", message="launcher crashed")

    gone = threading.Event()
    gone.set()
    follower, events = _run_follower(ws, lambda: not gone.is_set(), on_end=on_end)
    follower.join(10)
    assert asked == [("Pending", False)]
    assert [(e.state, e.message) for e in events] == [("Failed", "launcher crashed")]
