"""`modx-train TASK [--workspace DIR] [--device DEVICE]`: run a saved task without a notebook.

Same code path as the widget (`run.execute`), same files in the task folder.  TASK is a task
name in the workspace or the path of a task's task.json.  Ctrl-C stops gracefully (the run
saves a checkpoint and ends Stopped); a second Ctrl-C aborts at once.  Creating the file
`stop` in the task folder does the same as the first Ctrl-C (how a widget stops a run in
another process).  Under torchrun every rank runs this; rank 0 alone prints and writes.

Exit codes: 0 Completed, 1 Failed, 2 the task cannot start (invalid, missing, busy),
130 Stopped by Ctrl-C.  Start-up imports only what it uses; the ML libraries load in the run.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

EXIT = {"Completed": 0, "Failed": 1, "Stopped": 130}
EXIT_INVALID = 2
PROGRESS_EVERY_S = 10.0


def resolve_task(task: str, workspace: str | None) -> tuple[Path, str]:
    """(workspace root, task name) from a name or a task.json path."""
    p = Path(task).expanduser()
    if p.name == "task.json" or p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise ValueError(f"{p} does not exist")
        name = p.resolve().parent.name
        root = p.resolve().parent.parent.parent  # <root>/tasks/<name>/task.json
        if workspace is not None and Path(workspace).expanduser().resolve() != root:
            raise ValueError(f"{p} is not inside workspace {workspace}")
        return root, name
    return Path(workspace or "modx_workspace").expanduser(), task


class Printer:
    """Turns events into short lines on stdout (progress at most every PROGRESS_EVERY_S)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self._last_progress = 0.0

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __call__(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        if kind == "progress":
            now = time.monotonic()
            if now - self._last_progress < PROGRESS_EVERY_S:
                return
            self._last_progress = now
            eta = f", eta {event.eta_s:.0f}s" if event.eta_s is not None else ""
            self._say(f"step {event.step}/{event.max_steps} epoch {event.epoch:.2f}{eta}")
        elif kind == "log":
            parts = [f"step {event.step}", f"epoch {event.epoch:.2f}"]
            for label, value, fmt in (("loss", event.loss, ".4f"), ("lr", event.learning_rate, ".3g"),
                                      ("grad_norm", event.grad_norm, ".3g"), ("tok/s", event.tokens_per_s, ".0f")):
                if value is not None:
                    parts.append(f"{label} {value:{fmt}}")
            self._say("  ".join(parts))
        elif kind == "eval":
            loss = f"{event.eval_loss:.4f}" if event.eval_loss is not None else "?"
            self._say(f"eval at step {event.step}: eval_loss {loss}")
        elif kind == "checkpoint":
            self._say(f"checkpoint saved: {event.path}")
        elif kind == "status":
            self._say(f"[{event.state}] {event.message}".rstrip())
            if event.hint:
                self._say(f"hint: {event.hint}")
        elif kind == "message" and event.level in ("warning", "error") and "\n" not in event.text:
            self._say(f"{event.level}: {event.text}")


def _install_sigint(stop: threading.Event, say) -> Any:
    """First Ctrl-C: graceful stop.  Second: KeyboardInterrupt (abort)."""

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        say("stopping after the current step (a checkpoint is saved); press Ctrl-C again to abort")

    return signal.signal(signal.SIGINT, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modx-train", description="Run a modx_widgets training task headless.")
    parser.add_argument("task", help="a task name in the workspace, or the path of a task's task.json")
    parser.add_argument("--workspace", default=None, help="workspace folder (default ./modx_workspace)")
    parser.add_argument("--device", default=None, help="override the task's device: auto, cpu, cuda:N or all")
    args = parser.parse_args(argv)

    from .run.engine import RunBusy, TaskInvalid, execute, prepare, process_rank
    from .run.lean import hide_unused_bitsandbytes
    from .run.tail import STOP_FILE, ProgressWriter
    from .store import StoreError, Workspace

    rank0 = process_rank() == 0
    try:
        root, name = resolve_task(args.task, args.workspace)
        workspace = Workspace(root)
        prepared = prepare(workspace, name, device=args.device)  # imports no ML library
    except TaskInvalid as exc:
        print(f"modx-train: task {name!r} cannot start:", file=sys.stderr)
        for key, message in exc.problems.items():
            print(f"  {key}: {message}" if key else f"  {message}", file=sys.stderr)
        return EXIT_INVALID
    except (StoreError, ValueError) as exc:
        print(f"modx-train: {exc}", file=sys.stderr)
        return EXIT_INVALID

    # This process exists for one run: keep out what the task cannot use. (Importing torch and
    # transformers in a thread while the data is checked measured no gain: both hold the GIL.)
    hide_unused_bitsandbytes(prepared.values)
    printer = Printer()
    progress_file = ProgressWriter(workspace.task_dir(name))

    def listen(event: Any) -> None:
        printer(event)
        progress_file(event)  # progress.json: what a widget in another process shows

    stop = threading.Event()
    say = (lambda text: print(text, flush=True)) if rank0 else (lambda text: None)
    previous = _install_sigint(stop, say)
    try:
        state = execute(
            workspace, name, listen if rank0 else None, stop, prepared=prepared,
            stop_file=workspace.task_dir(name) / STOP_FILE,
        )
    except RunBusy as exc:
        print(f"modx-train: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("modx-train: aborted", file=sys.stderr)
        return EXIT["Failed"]
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT.get(state, 1)


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown.

    After a run, unloading torch and transformers takes about 0.9 s on a 2-core machine: time
    the user waits for nothing. Every file of the run is written and closed by then; exit
    handlers (logging, multiprocessing, temporary files) still run, and the streams are flushed.
    """
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def run() -> NoReturn:
    """The `modx-train` console script: `main`, then a fast exit."""
    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    run()
