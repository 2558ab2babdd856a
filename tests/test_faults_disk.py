"""A full disk while a checkpoint is saved: the run ends Failed with a message that says the disk
is full, and the checkpoints saved before stay byte-for-byte intact and resumable.

Two ways to fill the disk: a real tmpfs mounted over output_dir (in a user+mount namespace, so no
root is needed where the kernel allows it), filled with ballast right after checkpoint-2; and,
everywhere, the real `torch.save` wrapped to write half of optimizer.pt and raise ENOSPC.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults_support import REPO, snapshot
from test_run_support import CallbackBase, make_task, run_task, update_task

from modx_widgets.run import hints
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint


def assert_disk_full_status(status) -> None:
    assert status.state == "Failed"
    assert status.hint == hints.DISK
    text = status.message.lower()
    assert "no space left" in text or "disk" in text, status.message


def test_enospc_while_saving_fails_clearly_and_the_earlier_checkpoint_resumes(tmp_path, monkeypatch):
    import torch

    ws, name, values = make_task(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    out = Path(values["output_dir"])
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and Path(f).parent.name == "checkpoint-4":
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # what fit on the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    kept: dict = {}

    def on_save(cb, args, state, control, **kw):
        if state.global_step == 2:
            kept.update(snapshot(out / "checkpoint-2"))

    monkeypatch.setattr(torch, "save", save)
    state, rec = run_task(ws, name, callbacks=[CallbackBase.make(on_save=on_save)])
    monkeypatch.undo()
    assert state == "Failed"
    assert_disk_full_status(ws.read_status(name))
    assert rec.errors and rec.errors[-1].hint == hints.DISK
    assert ws.read_status(name).message.endswith(f"the newest complete checkpoint is {out / 'checkpoint-2'}")
    assert kept and snapshot(out / "checkpoint-2") == kept
    assert not is_complete(out / "checkpoint-4") and latest_checkpoint(out) == out / "checkpoint-2"

    update_task(ws, name, resume_from_checkpoint=str(out / "checkpoint-2"))  # space freed: resume
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert [log.step for log in rec.logs] == [3, 4, 5, 6]


# ----------------------------------------------------------------------------------------------
# A real full file system
# ----------------------------------------------------------------------------------------------

NAMESPACE = ["unshare", "--user", "--map-root-user", "--mount"]
MOUNT = 'mount -t tmpfs -o size=16m tmpfs "$0" && exec "$1" -c "$2"'


def tmpfs_available(tmp_path: Path) -> str | None:
    """None when a tmpfs can be mounted in a user+mount namespace here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        done = subprocess.run([*NAMESPACE, "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(probe)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else f"cannot mount a tmpfs in a namespace: {done.stderr.strip()}"


INSIDE = """
import json, os, shutil, sys
from pathlib import Path
from test_faults_support import snapshot
from test_run_support import CallbackBase, run_task
from modx_widgets.run.checkpoints import is_complete, latest_checkpoint
from modx_widgets.store import Workspace

out, leave = Path({out!r}), {leave!r}
kept = {{}}

def fill(free_bytes_to_leave):
    with open(out.parent / "ballast", "wb") as f:
        block = b"\\0" * (1 << 16)
        while shutil.disk_usage(out).free > free_bytes_to_leave + len(block):
            f.write(block)
            f.flush()
        f.write(b"\\0" * max(shutil.disk_usage(out).free - free_bytes_to_leave, 0))

def on_save(cb, args, state, control, **kw):
    if state.global_step != 2:
        return
    ckpt = out / "checkpoint-2"
    kept.update(snapshot(ckpt))
    size = {{p.name: -(-p.stat().st_size // 4096) * 4096 for p in ckpt.iterdir()}}
    late = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
    room = sum(v for k, v in size.items() if k not in late) + size["optimizer.pt"] // 2 if leave == "optimizer" \\
        else sum(size.values()) // 2
    fill(room)

ws = Workspace({root!r})
state, rec = run_task(ws, {name!r}, callbacks=[CallbackBase.make(on_save=on_save)])
status = ws.read_status({name!r})
print("RESULT", json.dumps(dict(
    state=state, message=status.message, hint=status.hint, free=shutil.disk_usage(out).free,
    intact=bool(kept) and snapshot(out / "checkpoint-2") == kept, complete=is_complete(out / "checkpoint-2"),
    latest=str(latest_checkpoint(out)), partial=sorted(p.name for p in (out / "checkpoint-4").iterdir()),
)))
"""


@pytest.mark.allow_skip(reason="needs unprivileged user namespaces (or root) to mount a tmpfs")
@pytest.mark.parametrize("leave", ["half-a-checkpoint", "optimizer"])
def test_a_real_full_disk_fails_the_run_clearly_and_keeps_earlier_checkpoints(tmp_path, leave):
    why = tmpfs_available(tmp_path)
    if why:
        pytest.skip(why)
    ws, name, values = make_task(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    mount = Path(values["output_dir"]).parent
    mount.mkdir(parents=True, exist_ok=True)
    code = INSIDE.format(out=values["output_dir"], leave=leave, root=str(ws.root), name=name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([*NAMESPACE, "sh", "-c", MOUNT, str(mount), sys.executable, code],
                          capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["state"] == "Failed", result
    status = ws.read_status(name)
    assert_disk_full_status(status)
    assert status.message.endswith(f"the newest complete checkpoint is {values['output_dir']}/checkpoint-2")
    assert result["intact"] and result["complete"] and result["latest"].endswith("checkpoint-2"), result
    assert "trainer_state.json" not in result["partial"], result
