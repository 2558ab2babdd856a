"""Nothing in a workspace, a checkpoint or a model folder is unpickled into code execution.

Each test plants a pickle whose unpickling would create a marker folder, then drives the real
entry points over it.  Checkpoint state (optimizer, scheduler, RNG) is loaded by transformers with
`torch.load(weights_only=True)`, so a planted object is refused and the run fails with the reason;
`training_args.bin` is never read back; task, status, template, event and cache files are JSON or
Arrow only.  See docs/reliability.md, "Weights-only loading".
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from test_faults_support import evil_pickle
from test_run_support import make_task, run_task

import modx_widgets
from modx_widgets.run import hints
from modx_widgets.store import StoreError, Workspace


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    ws, name, values = make_task(root, max_steps=2, save_strategy="steps", save_steps=2)
    assert run_task(ws, name)[0] == "Completed"
    return Path(values["output_dir"]) / "checkpoint-2"


# file in the checkpoint -> the run's end state once it holds a planted object
PLANTED = {
    "optimizer.pt": "Failed",
    "scheduler.pt": "Failed",
    "rng_state.pth": "Failed",
    "training_args.bin": "Completed",  # written for people; never loaded back
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_planted_object_in_a_checkpoint_is_never_unpickled_on_resume(tmp_path, checkpoint, planted):
    copy = shutil.copytree(checkpoint, tmp_path / "given" / "checkpoint-2")
    mark = tmp_path / "UNPICKLED"
    evil_pickle(copy / planted, mark)
    ws, name, _ = make_task(tmp_path, max_steps=3, resume_from_checkpoint=str(copy))
    state, rec = run_task(ws, name)
    assert not mark.exists()
    assert state == PLANTED[planted], rec.errors
    if state == "Failed":
        status = ws.read_status(name)
        assert "weights only load failed" in status.message.lower(), status.message
        assert status.hint == hints.UNSAFE


def test_a_model_folder_with_pickled_weights_is_loaded_weights_only(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=1)
    model = Path(values["model_path"])
    (model / "model.safetensors").unlink()
    mark = tmp_path / "UNPICKLED"
    evil_pickle(model / "pytorch_model.bin", mark)
    state, rec = run_task(ws, name)
    assert not mark.exists()
    status = ws.read_status(name)
    assert state == "Failed" and "weights only load failed" in status.message.lower()
    assert status.hint == hints.UNSAFE


def test_an_attached_adapter_with_pickled_weights_is_loaded_weights_only(tmp_path, checkpoint):
    adapter = shutil.copytree(checkpoint, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    mark = tmp_path / "UNPICKLED"
    evil_pickle(adapter / "adapter_model.bin", mark)
    ws, name, _ = make_task(tmp_path, max_steps=1, attach_lora=True, lora_adapter_path=str(adapter))
    state, rec = run_task(ws, name)
    assert not mark.exists() and state == "Failed"
    assert ws.read_status(name).hint == hints.UNSAFE


def test_workspace_files_replaced_by_pickles_are_refused_as_not_json(tmp_path):
    from modx_widgets.ui.prepare import PrepareWidget

    ws = Workspace(tmp_path / "ws")
    ws.create_task("t", "sft", None, "cpu", {})
    ws.save_template("mine", "sft", {})
    mark = tmp_path / "UNPICKLED"
    task = ws.task_dir("t")
    for path in (task / "task.json", task / "status.json", task / "metrics.jsonl", ws.templates_root / "mine.json"):
        evil_pickle(path, mark, torch_format=False)
    for call in (lambda: ws.load_task("t"), lambda: ws.read_status("t"), lambda: ws.load_template("mine")):
        with pytest.raises(StoreError, match="not UTF-8|not valid JSON"):
            call()
    assert ws.read_events("t") == [] and [t.name for t in ws.list_tasks()] == ["t"]
    PrepareWidget(workspace=ws).settle(30)
    assert not mark.exists()


def test_a_poisoned_data_cache_is_rebuilt_not_unpickled(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=1)
    assert run_task(ws, name)[0] == "Completed"
    cache = ws.task_dir(name) / "data_cache"
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files
    mark = tmp_path / "UNPICKLED"
    for path in files:
        evil_pickle(path, mark, torch_format=False)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert not mark.exists()


# Calls that turn bytes into objects (or run code a download brought along).
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("torch", "load"), ("joblib", "load"),
    ("dill", "load"), ("dill", "loads"), ("shelve", "open"), ("marshal", "loads"), ("marshal", "load"),
    ("cloudpickle", "load"), ("cloudpickle", "loads"), ("datasets", "load_from_disk"),
}
UNSAFE_KEYWORDS = {("allow_pickle", True), ("weights_only", False), ("trust_remote_code", True)}


def test_no_module_of_ours_unpickles_or_runs_remote_code():
    found = []
    for path in Path(modx_widgets.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib")
                       for n in names):
                    found.append(f"{path.name}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    if (func.value.id, func.attr) in UNSAFE_CALLS:
                        found.append(f"{path.name}:{node.lineno} calls {func.value.id}.{func.attr}")
                for kw in node.keywords:
                    if isinstance(kw.value, ast.Constant) and (kw.arg, kw.value.value) in UNSAFE_KEYWORDS:
                        found.append(f"{path.name}:{node.lineno} passes {kw.arg}={kw.value.value}")
    assert found == []
