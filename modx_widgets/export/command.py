"""A task as the shell command that trains it headless (`modx-train`, `accelerate launch`, `torchrun`).

The command runs the same code path as the widget (`modx_widgets.cli`), so it needs the
package installed; the task itself stays in the workspace and is read from there.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from ._common import ExportError

__all__ = ["LAUNCHERS", "to_cli_command"]

LAUNCHERS = ("modx-train", "accelerate", "torchrun")


def _gpu_list(device: str) -> list[str] | None:
    parts = [p.strip().lower() for p in device.split(",")]
    if len(parts) < 2:
        return None
    return [p[5:] if p.startswith("cuda:") else p for p in parts]


def _accelerate(device: str, processes: int | None, tail: list[str]) -> list[str]:
    """`accelerate launch` flags for the task's device: --cpu, one process, or several with --multi_gpu."""
    args = ["accelerate", "launch"]
    gpus = _gpu_list(device)
    if device == "cpu":
        args += ["--cpu", "--num_processes", str(processes or 1)]
    elif gpus is not None:
        args += ["--multi_gpu", "--gpu_ids", ",".join(gpus), "--num_processes", str(processes or len(gpus))]
    elif device == "all":
        # without --num_processes accelerate starts one process per visible GPU
        args += ["--multi_gpu"] + (["--num_processes", str(processes)] if processes else [])
    else:  # auto or one GPU: the run itself picks cuda:N, so every GPU stays visible
        args += ["--num_processes", str(processes or 1)]
    return args + ["-m", "modx_widgets.cli", *tail]


def to_cli_command(
    task: Any,
    workspace: str | os.PathLike[str] | None = None,
    *,
    launcher: str = "modx-train",
    processes: int | None = None,
) -> str:
    """The command line that trains `task` (a TaskRecord or a task name) from `workspace`.

    launcher: "modx-train" (one process, what the widget's thread runs), "accelerate"
    (`accelerate launch -m modx_widgets.cli ...`, flags from the task's device) or "torchrun"
    (the form the package itself uses for several GPUs).  `processes` overrides the process
    count (default: one per listed GPU, else one).
    """
    if launcher not in LAUNCHERS:
        raise ExportError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if processes is not None and processes < 1:
        raise ExportError(f"processes must be at least 1, got {processes}")
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not name:
        raise ExportError("give a task name or a TaskRecord to build its command")
    device = "auto" if isinstance(task, str) else str(getattr(task, "device", "auto") or "auto").strip().lower()
    root = str(Path(workspace).expanduser().resolve()) if workspace is not None else "modx_workspace"
    tail = [name, "--workspace", root]
    if launcher == "modx-train":
        return shlex.join(["modx-train", *tail])
    if launcher == "accelerate":
        return shlex.join(_accelerate(device, processes, tail))
    from ..run.launch import count_processes, launch_command, visible_devices

    count = processes or (len(_gpu_list(device) or []) or (count_processes(device) if device == "all" else 1))
    command = launch_command(root, name, processes=count, python="python")
    visible = visible_devices(device)
    return (f"CUDA_VISIBLE_DEVICES={visible} " if visible else "") + shlex.join(command)
