"""The quickstart's demo task without a browser: build the tiny model and data, save the task, train it
with `modx-train`, and print progress and the final status.

The task is read from examples/quickstart.ipynb itself, so the notebook and this script can never
drift apart: the notebook's first code cell (which builds the model and data) is executed as is, and
the training type and values are taken from its `studio.new_task(...)` and `studio.set_values({...})`
calls without creating a widget.

    python scripts/demo_headless.py [--demo-dir demo] [--max-steps N] [--build-only]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


class NotebookShapeError(RuntimeError):
    """The quickstart no longer has the cells this script reads; fix one or the other."""


def code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]


def build_assets(notebook: Path, demo_dir: Path) -> dict[str, Any]:
    """Run the notebook's first code cell with MODX_DEMO_DIR=demo_dir; return the names it defines."""
    os.environ["MODX_DEMO_DIR"] = str(demo_dir)
    namespace: dict[str, Any] = {"__name__": "__quickstart__"}
    exec(compile(code_cells(notebook)[0], f"{notebook.name} (first code cell)", "exec"), namespace)
    for name in ("DEMO", "model_dir", "train_file"):
        if name not in namespace:
            raise NotebookShapeError(f"the first code cell of {notebook} no longer defines {name!r}")
    return namespace


def _call(tree: ast.AST, method: str) -> ast.Call:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            return node
    raise NotebookShapeError(f"no `.{method}(...)` call in the quickstart's widget cell")


def demo_task(notebook: Path, names: dict[str, Any], task: str) -> tuple[str, dict[str, Any]]:
    """(training type, values) of the notebook's demo task, with `task` as the task name."""
    cell = next((c for c in code_cells(notebook) if "set_values" in c), None)
    if cell is None:
        raise NotebookShapeError(f"{notebook} has no cell calling set_values")
    tree = ast.parse(cell)
    training_type = ast.literal_eval(_call(tree, "new_task").args[0])
    expr = ast.Expression(_call(tree, "set_values").args[0])
    scope = {"str": str, "DEMO": names["DEMO"], "model_dir": names["model_dir"],
             "train_file": names["train_file"], "task": task}
    values = eval(compile(expr, f"{notebook.name} (set_values)", "eval"), {"__builtins__": {}}, scope)
    return training_type, dict(values)


def create_task(demo_dir: Path, names: dict[str, Any], max_steps: int | None) -> tuple[Path, str]:
    """Save the demo task in <demo_dir>/workspace from the SFT/Pretrain preset plus the demo values."""
    from modx_widgets.config.validate import validate
    from modx_widgets.store import Workspace

    workspace = Workspace(demo_dir / "workspace")
    probe_type, _ = demo_task(NOTEBOOK, names, "probe")
    name = workspace.default_task_name(probe_type)
    training_type, values = demo_task(NOTEBOOK, names, name)
    if max_steps is not None:
        values["max_steps"] = max_steps
    template = next(t for t in workspace.templates()
                    if workspace.load_template(t).preset and workspace.load_template(t).training_type == training_type)
    result = validate({**workspace.load_template(template).values, **values}, training_type)
    if not result.ok:
        problems = "\n".join(f"  {key}: {message}" for key, message in result.errors.items())
        raise SystemExit(f"demo task is invalid:\n{problems}")
    workspace.create_task(name, training_type, template, "auto", result.values)
    return workspace.root, name


def modx_train_command(workspace_root: Path, task: str) -> list[str]:
    script = Path(sys.executable).with_name("modx-train")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "modx_widgets.cli"]
    return [*head, task, "--workspace", str(workspace_root)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=Path(os.environ.get("MODX_DEMO_DIR", REPO / "demo")))
    parser.add_argument("--max-steps", type=int, default=None, help="override the notebook's max_steps")
    parser.add_argument("--build-only", action="store_true", help="only build the model and data")
    args = parser.parse_args(argv)
    demo_dir = args.demo_dir.resolve()

    print(f"==> building the demo model and data in {demo_dir}", flush=True)
    names = build_assets(NOTEBOOK, demo_dir)
    if args.build_only:
        return 0

    root, task = create_task(demo_dir, names, args.max_steps)
    command = modx_train_command(root, task)
    print(f"==> training task {task!r}: {' '.join(command)}", flush=True)
    code = subprocess.call(command)

    from modx_widgets.store import Workspace

    status = Workspace(root).read_status(task)
    print(f"==> final status of {task!r}: {status.state}" + (f" ({status.message})" if status.message else ""))
    if status.hint:
        print(f"    hint: {status.hint}")
    return code


if __name__ == "__main__":
    sys.exit(main())
