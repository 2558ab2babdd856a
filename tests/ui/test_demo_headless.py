"""The README's headless main job: scripts/demo_headless.py trains the quickstart's own task with
modx-train (no browser) and reports the final status."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from modx_widgets.store import Workspace

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "demo_headless.py"
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def _notebook_constants() -> dict[str, object]:
    """The literal values of the notebook's `studio.set_values({...})` (paths are expressions)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "set_values" in "".join(c["source"]))
    call = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "set_values")
    found = {}
    for key, value in zip(call.args[0].keys, call.args[0].values):
        try:
            found[ast.literal_eval(key)] = ast.literal_eval(value)
        except ValueError:
            pass
    return found


def test_headless_demo_trains_the_notebooks_task_to_completed(tmp_path):
    demo = tmp_path / "demo"
    env = {**os.environ, "MODX_DEMO_DIR": str(tmp_path / "ignored")}  # --demo-dir wins over the variable
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--demo-dir", str(demo), "--max-steps", "2"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    workspace = Workspace(demo / "workspace")
    [(name, state)] = [(t.name, t.state) for t in workspace.list_tasks()]
    assert state == "Completed"
    assert f"final status of '{name}': Completed" in proc.stdout
    assert "step 2" in proc.stdout  # progress was printed
    record = workspace.load_task(name)
    assert record.values["model_path"] == str(demo / "tiny-llama")
    assert record.values["output_dir"] == str(demo / "runs" / name)
    assert record.values["max_steps"] == 2  # the override
    constants = _notebook_constants()
    assert len(constants) > 5, constants
    for key, value in constants.items():  # every other literal the notebook sets reached the task
        if key != "max_steps":
            assert record.values[key] == value, key
    assert not (tmp_path / "ignored").exists()
