"""`modx-train`: the same run headless, progress on stdout, graceful Ctrl-C, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from test_run_support import make_task

from modx_widgets.run.checkpoints import is_complete, latest_checkpoint

CLI = [sys.executable, "-m", "modx_widgets.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny model: one thread is fastest on a shared machine


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_cli_runs_a_task_by_name_to_completion(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=3)
    done = run_cli(name, "--workspace", str(ws.root))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("step ") and "loss" in ln] == ["1", "2", "3"]
    assert "[Completed]" in done.stdout
    assert ws.read_status(name).state == "Completed"
    assert os.path.exists(os.path.join(values["output_dir"], "adapter_model.safetensors"))


def test_cli_refuses_an_invalid_task_with_exit_code_2_and_writes_nothing(tmp_path):
    ws, name, values = make_task(tmp_path)
    with open(values["train_file"], "a") as f:
        f.write("not json\n")
    done = run_cli(name, "--workspace", str(ws.root))
    assert done.returncode == 2
    assert "train_file" in done.stderr and "line 25" in done.stderr
    assert ws.read_status(name).state == "Pending"


def test_cli_reports_an_unknown_task(tmp_path):
    done = run_cli("nope", "--workspace", str(tmp_path / "ws"))
    assert done.returncode == 2 and "nope" in done.stderr


def test_cli_exits_1_when_the_run_fails_and_accepts_a_task_json_path(tmp_path):
    ws, name, values = make_task(tmp_path)
    weights = os.path.join(values["model_path"], "model.safetensors")
    data = open(weights, "rb").read()
    open(weights, "wb").write(data[: len(data) // 2])  # an interrupted download: header fine, data cut
    done = run_cli(str(ws.task_dir(name) / "task.json"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[Failed]" in done.stdout and "download the model folder again" in done.stdout
    assert ws.read_status(name).state == "Failed"


def test_ctrl_c_stops_gracefully_with_a_checkpoint(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=400)
    proc = subprocess.Popen([*CLI, name, "--workspace", str(ws.root)], stdout=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            if line.startswith("step 1 ") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "stopping after the current step" in out and "[Stopped]" in out
    assert ws.read_status(name).state == "Stopped"
    newest = latest_checkpoint(values["output_dir"])
    assert newest is not None and is_complete(newest)


def test_a_stop_file_in_the_task_folder_stops_like_ctrl_c_and_is_consumed(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=400)
    stop_file = ws.task_dir(name) / "stop"
    proc = subprocess.Popen([*CLI, name, "--workspace", str(ws.root)], stdout=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            if line.startswith("step 1 ") or time.monotonic() > deadline:
                break
        stop_file.write_text("please stop\n")
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert ws.read_status(name).state == "Stopped" and not stop_file.exists()
    assert is_complete(latest_checkpoint(values["output_dir"]))
    progress = json.loads((ws.task_dir(name) / "progress.json").read_text())
    assert progress["kind"] == "progress" and progress["max_steps"] == 400


def test_device_option_overrides_the_task_device(tmp_path):
    ws, name, _ = make_task(tmp_path, device="cpu")
    done = run_cli(name, "--workspace", str(ws.root), "--device", "cuda:7")
    assert done.returncode == 2 and "cuda:7" in done.stderr


def test_fast_exit_keeps_the_exit_code_buffered_output_and_exit_handlers(tmp_path):
    marker = tmp_path / "handler_ran"
    code = (
        "import atexit, sys; from modx_widgets.cli import exit_now; "
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes')); "
        "sys.stdout.write('buffered line'); exit_now(3)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (3, "buffered line")
    assert marker.read_text() == "yes"
