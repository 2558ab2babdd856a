"""Runs outside the kernel: two data-parallel CPU processes (gloo), detached runs, re-attach, stop and kill.

The "new kernel" of a re-attach is a real second Python process that builds the same objects a
notebook would (`active_run`, `PrepareWidget`) on the same workspace.  The training tests are
marked slow: every training process imports torch and transformers on two shared cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_run_support import make_task

from modx_widgets.config.validate import validate
from modx_widgets.events import Error, Log, Status
from modx_widgets.run import active_run
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint, list_checkpoints, step_of
from modx_widgets.run.launch import (
    KILLED,
    LAUNCH_FILE,
    SubprocessRun,
    count_processes,
    descendants,
    launch_command,
    needs_subprocess,
    visible_devices,
)
from modx_widgets.store import StatusRecord, is_pid_alive
from modx_widgets.store.process import this_host
from modx_widgets.ui.prepare import estimate_total_steps

LONG = dict(max_steps=100_000, save_strategy="no", logging_steps=1)


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _all_gone(run: SubprocessRun) -> bool:
    return not is_pid_alive(run.pid) and not descendants(run.pid)


def _second_kernel(script: str, ws_root: Path, name: str, timeout: float = 600) -> list[dict]:
    """Run `script` in a fresh Python process (a restarted kernel); it prints JSON lines."""
    code = textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code, str(ws_root), name], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# ---------------------------------------------------------------------------------------------
# Cheap: what gets launched
# ---------------------------------------------------------------------------------------------


def test_only_several_gpus_or_a_detached_run_leave_the_kernel():
    assert needs_subprocess("all") and needs_subprocess("cuda:0,cuda:1")
    assert needs_subprocess("cpu", detached=True) and needs_subprocess("cuda:0", detached=True)
    assert not needs_subprocess("cpu") and not needs_subprocess("auto") and not needs_subprocess("cuda:1")
    assert visible_devices("cuda:2, cuda:0") == "2,0" and visible_devices("all") is None
    assert count_processes("cuda:0,cuda:3") == 2 and count_processes("cpu") == 1
    with pytest.raises(ValueError, match="twice"):
        needs_subprocess("cuda:1,cuda:1")
    with pytest.raises(ValueError, match="cuda:0,cuda:1"):
        visible_devices("cuda:0,gpu")


def test_launch_command_uses_torchrun_for_several_processes_only(tmp_path):
    one = launch_command(tmp_path, "t1")
    assert one[1:] == ["-m", "modx_widgets.cli", "t1", "--workspace", str(tmp_path)]
    two = launch_command(tmp_path, "t1", processes=2, device="all")
    assert two[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in two
    assert two[-6:] == ["modx_widgets.cli", "t1", "--workspace", str(tmp_path), "--device", "all"]
    with pytest.raises(ValueError, match="at least 1"):
        launch_command(tmp_path, "t1", processes=0)


def test_a_run_modx_did_not_launch_can_be_asked_to_stop_but_not_killed(tmp_path):
    ws, name, _ = make_task(tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ws.write_status(name, StatusRecord(state="Running", owner_pid=owner.pid, owner_host=this_host()))
        run = SubprocessRun.attach(ws, name)
        assert run is not None and run.is_alive() and not run.launched and run.state == "Running"
        run.stop()
        assert (ws.task_dir(name) / "stop").is_file()  # the graceful request is always possible
        with pytest.raises(RuntimeError, match="did not launch"):
            run.stop()  # second press would kill: refused, the owner is not ours
        assert owner.poll() is None
    finally:
        owner.kill()
        owner.wait()
    assert run.wait(30) == "Failed"  # the owner died without reporting: interrupted
    assert SubprocessRun.attach(ws, name) is None


def test_a_launcher_that_dies_before_reporting_fails_the_task_with_its_output(tmp_path):
    ws, name, values = make_task(tmp_path)
    run = SubprocessRun(ws, name).start()  # the parent's checks pass...
    Path(values["train_file"]).write_text("not json\n")  # ...the child's do not
    assert run.wait(300) == "Failed"
    status = ws.read_status(name)
    assert status.state == "Failed" and "code 2" in status.message and "launch.log" in status.hint
    assert "train_file" in (ws.task_dir(name) / "launch.log").read_text()
    assert any(isinstance(e, Error) for e in ws.read_events(name))
    assert _all_gone(run)


STOP_SCRIPT = """
import json, sys
from modx_widgets.run import active_run
run = active_run(sys.argv[1], sys.argv[2])
print(json.dumps({"attached": run is not None}), flush=True)
run.stop()
print(json.dumps({"state": run.wait(600)}), flush=True)
"""


def test_another_kernel_stops_a_run_training_in_this_kernel(tmp_path):
    from modx_widgets.run import TrainingRun

    ws, name, values = make_task(tmp_path, **LONG)
    stepped = threading.Event()
    run = TrainingRun(ws, name, listeners=[lambda e: isinstance(e, Log) and stepped.set()]).start()
    assert stepped.wait(300)
    first, last = _second_kernel(STOP_SCRIPT, ws.root, name)
    assert first == {"attached": True} and last == {"state": "Stopped"}
    assert run.wait(60) == "Stopped" and is_complete(latest_checkpoint(values["output_dir"]))
    assert not (ws.task_dir(name) / "stop").exists()  # served, then removed


# ---------------------------------------------------------------------------------------------
# Training in other processes
# ---------------------------------------------------------------------------------------------

FOLLOW_SCRIPT = """
import json, sys
from modx_widgets.run import active_run
from modx_widgets.store import Workspace
ws = Workspace(sys.argv[1])
run = active_run(ws.root, sys.argv[2])
print(json.dumps({"attached": run is not None, "launched": getattr(run, "launched", None)}), flush=True)
seen = []
run.add_listener(lambda e: seen.append(e))
state = run.wait(600)
print(json.dumps({"state": state, "kinds": [e.kind for e in seen],
                  "log_steps": [e.step for e in seen if e.kind == "log"]}), flush=True)
"""


@pytest.mark.slow
def test_two_processes_train_data_parallel_and_a_new_kernel_reattaches(tmp_path):
    n, save_steps = 48, 4
    ws, name, values = make_task(
        tmp_path, n=n, max_steps=-1, num_train_epochs=1, gradient_accumulation_steps=1,
        save_strategy="steps", save_steps=save_steps, save_total_limit=10, learning_rate=2e-2,
    )
    events: list = []
    run = SubprocessRun(ws, name, processes=2, listeners=[events.append]).start()
    assert json.loads((ws.task_dir(name) / LAUNCH_FILE).read_text())["processes"] == 2
    _wait_until(lambda: ws.read_status(name).state == "Running", 300, "rank 0 to report Running")
    first, last = _second_kernel(FOLLOW_SCRIPT, ws.root, name)
    assert first == {"attached": True, "launched": False}
    assert run.wait(300) == "Completed"

    steps = estimate_total_steps(validate(values).values, n, devices=2)
    assert steps == estimate_total_steps(validate(values).values, n, devices=1) // 2  # the data was split
    logs = [e for e in events if isinstance(e, Log)]
    assert [e.step for e in logs] == list(range(1, steps + 1))  # each step once: rank 0 alone reports
    stored = [e.step for e in ws.read_events(name) if isinstance(e, Log)]
    assert stored == list(range(1, steps + 1))
    third = len(logs) // 3
    assert sum(e.loss for e in logs[-third:]) < sum(e.loss for e in logs[:third])  # the loss falls
    assert [step_of(p) for p in list_checkpoints(values["output_dir"])] == list(range(save_steps, steps + 1, save_steps))
    assert (Path(values["output_dir"]) / "adapter_model.safetensors").is_file()

    assert last["state"] == "Completed" and last["kinds"][-1] == "status"
    assert last["log_steps"] == [s for s in range(1, steps + 1) if s in last["log_steps"]]  # the rest, in order
    assert [e.state for e in events if isinstance(e, Status)] == ["Running", "Completed"]
    assert ws.read_status(name).state == "Completed" and _all_gone(run)


@pytest.mark.slow
def test_stop_reaches_both_processes_which_save_a_checkpoint_and_end_stopped(tmp_path):
    ws, name, values = make_task(tmp_path, n=48, **LONG)
    first_log = threading.Event()
    run = SubprocessRun(ws, name, processes=2,
                        listeners=[lambda e: isinstance(e, Log) and first_log.set()]).start()
    assert first_log.wait(300), "no training step within 300 s"
    run.stop()
    assert run.wait(300) == "Stopped"
    status = ws.read_status(name)
    newest = latest_checkpoint(values["output_dir"])
    assert status.state == "Stopped" and newest is not None and is_complete(newest)
    assert 0 < step_of(newest) < LONG["max_steps"] and f"checkpoint-{step_of(newest)}" in status.message
    assert len(list_checkpoints(values["output_dir"])) == 1
    _wait_until(lambda: _all_gone(run), 30, "every training process to exit")


WIDGET_SCRIPT = """
import json, sys
from modx_widgets import PrepareWidget
w = PrepareWidget(sys.argv[1])
print(json.dumps({"task": w.task_name, "running": w.running, "status": w.status,
                  "following": w.monitor.run is not None}), flush=True)
w.stop()
state = w.wait(600)
print(json.dumps({"state": state, "monitor": w.monitor.state, "listed": dict(w.tasks)[sys.argv[2]]}), flush=True)
"""


@pytest.mark.slow
def test_a_detached_run_outlives_its_widget_and_a_new_widget_reattaches_and_stops_it(tmp_path):
    from modx_widgets import PrepareWidget

    ws, name, values = make_task(tmp_path, **LONG)
    widget = PrepareWidget(ws)
    widget.select_task(name)
    widget.detached = True
    widget.start()
    run = active_run(ws.root, name)
    assert isinstance(run, SubprocessRun) and run.launched and widget.running
    _wait_until(lambda: any(isinstance(e, Log) for e in ws.read_events(name)), 300, "a training step")
    first, last = _second_kernel(WIDGET_SCRIPT, ws.root, name)
    assert first == {"task": name, "running": True, "status": "Running", "following": True}
    assert last == {"state": "Stopped", "monitor": "Stopped", "listed": "Stopped"}
    assert widget.wait(60) == "Stopped"  # the first widget saw the same end
    assert is_complete(latest_checkpoint(values["output_dir"]))
    assert _all_gone(run)


@pytest.mark.slow
def test_second_stop_kills_every_process_and_fails_the_task(tmp_path):
    ws, name, values = make_task(tmp_path, **LONG)
    stepped = threading.Event()
    events: list = []

    def listen(event):
        events.append(event)
        if isinstance(event, Log):
            stepped.set()

    run = SubprocessRun(ws, name, listeners=[listen]).start()
    assert stepped.wait(300)
    run.stop()
    run.stop()
    assert run.wait(60) == "Failed"
    _wait_until(lambda: _all_gone(run), 30, "the killed processes to disappear")
    status = ws.read_status(name)
    assert status.state == "Failed" and status.message == KILLED
    assert events[-1].kind == "status" and events[-1].message == KILLED
    assert any(isinstance(e, Error) and e.message == KILLED for e in ws.read_events(name))
    assert not os.path.exists(os.path.join(values["output_dir"], "adapter_model.safetensors"))


@pytest.mark.slow
def test_a_training_process_that_dies_silently_leaves_the_task_failed_interrupted(tmp_path):
    import signal

    ws, name, _ = make_task(tmp_path, **LONG)
    stepped = threading.Event()
    run = SubprocessRun(ws, name, listeners=[lambda e: isinstance(e, Log) and stepped.set()]).start()
    assert stepped.wait(300)
    owner = ws.read_status(name).owner_pid
    assert owner == run.pid  # one process: the launched process itself trains and owns the task
    os.kill(owner, signal.SIGKILL)  # the out-of-memory killer, say
    assert run.wait(60) == "Failed"
    status = ws.read_status(name)
    assert status.state == "Failed" and status.message == "interrupted"
    assert "launch.log" in status.hint and "-9" in status.hint
