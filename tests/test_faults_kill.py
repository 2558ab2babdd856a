"""SIGKILL at the worst moments: while a task file is half written, and while a checkpoint is half
saved.  `modx-train` runs in a child process whose real write function is wrapped to write part of
its bytes and then kill the process, so the files on disk are exactly what a crash leaves.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from test_faults_support import changes, run_python, snapshot
from test_run_support import make_task, run_task, update_task

from modx_widgets.config.validate import validate
from modx_widgets.run import TaskInvalid, TrainingRun
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint, list_checkpoints
from modx_widgets.store import Workspace

CLI_TAIL = """
from modx_widgets.cli import main
sys.exit(main([{name!r}, "--workspace", {root!r}]))
"""

# Each wrapper writes part of what it was asked to write, then the process dies (no cleanup runs).
KILL_MID_WRITE = {
    # the second training log line reaches metrics.jsonl only halfway
    "metrics-line": """
import os, signal, sys
from pathlib import Path
from modx_widgets.store import workspace
real = workspace.append_text
seen = []
def append_text(path, text):
    if Path(path).name == "metrics.jsonl" and '"kind": "log"' in text:
        seen.append(text)
        if len(seen) == 2:
            data = text.encode()
            with open(path, "ab") as f:
                f.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, text)
workspace.append_text = append_text
""",
    # the final status (Completed) is half written to its temporary file, never renamed
    "status-file": """
import os, signal, sys, tempfile
from modx_widgets.store import files
real = files.write_bytes_atomic
def write_bytes_atomic(path, data):
    if path.name == "status.json" and b'"state": "Completed"' in data:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
files.write_bytes_atomic = write_bytes_atomic
""",
}


def unreadable_lines(path: Path) -> int:
    bad = 0
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            try:
                json.loads(line)
            except ValueError:
                bad += 1
    return bad


@pytest.mark.parametrize("where", sorted(KILL_MID_WRITE))
def test_killed_mid_write_of_task_files_the_workspace_loads_and_the_task_is_failed_interrupted(tmp_path, where):
    from modx_widgets.ui.prepare import PrepareWidget

    ws, name, values = make_task(tmp_path, max_steps=3)
    done = run_python(KILL_MID_WRITE[where] + CLI_TAIL.format(name=name, root=str(ws.root)))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr

    ws = Workspace(ws.root)  # a new kernel opens the workspace
    [info] = ws.list_tasks()
    assert (info.name, info.state, info.problem) == (name, "Failed", None)
    status = ws.read_status(name)
    assert status.message == "interrupted" and "newest checkpoint" in status.hint
    events = ws.read_events(name)
    assert [e.state for e in events if e.kind == "status"] == ["Running"]
    if where == "metrics-line":
        assert [e.step for e in events if e.kind == "log"] == [1]
        assert unreadable_lines(ws.task_dir(name) / "metrics.jsonl") == 1  # the torn half line

    widget = PrepareWidget(workspace=ws)
    widget.select_task(name)
    assert widget.status == "Failed" and dict(widget.tasks) == {name: "Failed"}
    widget.settle(30)

    state, rec = run_task(ws, name)  # the task runs again; its log stays readable
    assert state == "Completed", rec.errors
    events = ws.read_events(name)
    assert [e.state for e in events if e.kind == "status"][-2:] == ["Running", "Completed"]
    assert [e.step for e in events if e.kind == "log"][-3:] == [1, 2, 3]
    assert unreadable_lines(ws.task_dir(name) / "metrics.jsonl") == (1 if where == "metrics-line" else 0)


# ----------------------------------------------------------------------------------------------
# Killed while saving checkpoint-4: the half-written folder is never offered or accepted
# ----------------------------------------------------------------------------------------------

KILL_MID_SAVE = {
    # weights and optimizer written, RNG state and trainer_state.json not
    "before-trainer-state": """
import os, signal, sys
from transformers import Trainer
real = Trainer._save_rng_state
def _save_rng_state(self, output_dir):
    if self.state.global_step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, output_dir)
Trainer._save_rng_state = _save_rng_state
""",
    # trainer_state.json itself cut in the middle
    "mid-trainer-state": """
import os, signal, sys
from transformers import TrainerState
real = TrainerState.save_to_json
def save_to_json(self, json_path):
    if self.global_step == 4:
        real(self, json_path)
        with open(json_path, "r+b") as f:
            f.truncate(os.path.getsize(json_path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, json_path)
TrainerState.save_to_json = save_to_json
""",
}


@pytest.mark.parametrize("where", sorted(KILL_MID_SAVE))
def test_a_checkpoint_killed_mid_save_is_never_offered_and_the_previous_one_resumes(tmp_path, where):
    ws, name, values = make_task(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    done = run_python(KILL_MID_SAVE[where] + CLI_TAIL.format(name=name, root=str(ws.root)))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    out = Path(values["output_dir"])
    good, partial = out / "checkpoint-2", out / "checkpoint-4"
    assert partial.is_dir() and not is_complete(partial) and is_complete(good)

    assert list_checkpoints(out) == [good] and latest_checkpoint(out) == good
    suggestion = validate({**values, "resume_from_checkpoint": str(out)}, "sft").errors["resume_from_checkpoint"]
    assert "checkpoint-2" in suggestion and "checkpoint-4" not in suggestion
    status = ws.read_status(name)
    assert (status.state, status.message) == ("Failed", "interrupted")

    update_task(ws, name, resume_from_checkpoint=str(partial))
    before = snapshot(tmp_path)
    with pytest.raises(TaskInvalid) as info:
        TrainingRun(ws, name).start()
    assert "checkpoint-4" in info.value.problems["resume_from_checkpoint"]
    assert changes(before, snapshot(tmp_path)) == []

    update_task(ws, name, resume_from_checkpoint=str(good))
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert [log.step for log in rec.logs] == [3, 4, 5, 6]
    assert is_complete(partial)  # saved again, completely, by the resumed run
