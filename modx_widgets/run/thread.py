"""`TrainingRun`: one task trained in a daemon thread of the kernel, plus a per-kernel registry.

The kernel's main thread only starts, stops and listens; everything slow (imports, loading,
training) happens in the thread, and nothing that goes wrong there can escape it.  The
registry lets a re-created widget find a run that is still going (`active_run`), including
one trained by another process (`launch.SubprocessRun`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..events import FINAL_STATES
from ..store import Workspace
from .engine import Prepared, RunBusy, check_not_running, execute, prepare
from .tail import STOP_FILE
from .listeners import Broadcaster


_registry: dict[tuple[str, str], "TrainingRun"] = {}
_registry_lock = threading.Lock()


def _key(root: str | Path, task_name: str) -> tuple[str, str]:
    return str(Path(root).expanduser().resolve()), task_name.casefold()


def register_run(workspace_root: str | Path | Workspace, task_name: str, run: Any) -> None:
    """Record `run` (a TrainingRun or a SubprocessRun) as this kernel's run of the task."""
    root = workspace_root.root if isinstance(workspace_root, Workspace) else workspace_root
    with _registry_lock:
        _registry[_key(root, task_name)] = run


def local_run(root: str | Path, task_name: str) -> Any:
    """This kernel's live run of the task (registry only: never attaches to another process)."""
    with _registry_lock:
        run = _registry.get(_key(root, task_name))
    return run if run is not None and run.is_alive() else None


def active_run(workspace_root: str | Path | Workspace, task_name: str) -> Any:
    """The live run of this task: one this kernel started, or one another process is training.

    A run in another process (detached, multi-GPU, or started by an earlier kernel) is found
    through status.json (Running, live owner) and followed through its files
    (`launch.SubprocessRun.attach`); the follower is registered, so later calls return it.
    None when the task is not running.
    """
    root = workspace_root.root if isinstance(workspace_root, Workspace) else workspace_root
    run = local_run(root, task_name)
    if run is not None:
        return run
    from .launch import SubprocessRun

    workspace = workspace_root if isinstance(workspace_root, Workspace) else Workspace(root)
    attached = SubprocessRun.attach(workspace, task_name)
    if attached is None:
        return None
    with _registry_lock:
        current = _registry.get(_key(root, task_name))
        if current is not None and current.is_alive():
            return current  # another caller attached first; the spare follower ends with the run
        _registry[_key(root, task_name)] = attached
    return attached


class TrainingRun(Broadcaster):
    """Start, stop and watch one task's training in a background thread.

    `start()` checks the task first (raising `TaskInvalid` or `RunBusy` in the caller's
    thread, with nothing written) and then returns at once.  Listeners are called from the
    training thread with every event and must be cheap; one that raises is reported in
    run.log and otherwise ignored.
    """

    def __init__(self, workspace: Workspace, task_name: str, *, listeners: Any = ()) -> None:
        super().__init__(listeners)
        self.workspace = workspace
        self.task_name = task_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_file: Path | None = None
        self.error: BaseException | None = None
        self.extra_callbacks: list[Any] = []  # extra Trainer callbacks (tests, tools)

    def _dispatch(self, event: Any) -> None:
        failed = self._broadcast(event)
        if failed is not None:
            raise failed  # RunSink reports it once in run.log

    # -- control --------------------------------------------------------------------------

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "TrainingRun":
        """Check the task and start training in a daemon thread; returns self."""
        if self._thread is not None:
            raise RunBusy(f"this run of task {self.task_name!r} was already started; create a new TrainingRun")
        key = _key(self.workspace.root, self.task_name)
        if local_run(self.workspace.root, self.task_name) is not None:
            raise RunBusy(f"task {self.task_name!r} is already running in this kernel; stop it first")
        check_not_running(self.workspace, self.task_name)  # another process (names its pid)
        prepared = prepare(self.workspace, self.task_name)  # TaskInvalid: nothing written
        with _registry_lock:
            other = _registry.get(key)
            if other is not None and other.is_alive():
                raise RunBusy(f"task {self.task_name!r} is already running in this kernel; stop it first")
            check_not_running(self.workspace, self.task_name)
            self._stop_file = self.workspace.task_dir(self.task_name) / STOP_FILE
            try:
                self._stop_file.unlink()  # a request left by an earlier run is not for this one
            except FileNotFoundError:
                pass
            self._thread = threading.Thread(
                target=self._main, args=(prepared,), name=f"modx-train-{self.task_name}", daemon=True
            )
            _registry[key] = self
            self._state = "Running"
            self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the run to stop after the current step (it saves a checkpoint first)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or `timeout` seconds pass); returns the current state."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._state

    def _main(self, prepared: Prepared) -> None:
        try:
            self._state = execute(
                self.workspace,
                self.task_name,
                self._dispatch,
                self._stop,
                prepared=prepared,
                callbacks=self.extra_callbacks,
                stop_file=self._stop_file,  # how another kernel asks this run to stop
            )
        except BaseException as exc:  # noqa: BLE001 - nothing may escape a kernel thread
            self.error = exc
            if self._state not in FINAL_STATES:
                self._state = "Failed"


_warmup_thread: threading.Thread | None = None
_warmup_lock = threading.Lock()


def _import_heavy() -> None:
    from .logs import quiet_import_noise

    quiet_import_noise()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, Trainer, TrainingArguments  # noqa: F401

        import peft  # noqa: F401
        import datasets  # noqa: F401

        from . import callbacks, trainer  # noqa: F401
    except Exception:  # noqa: BLE001 - a missing package is reported by the environment check
        pass


def warmup_imports() -> threading.Thread:
    """Start importing torch/transformers/peft/datasets in the background (idempotent).

    `from transformers import Trainer` takes seconds; doing it while the user fills the form
    keeps Start from freezing the notebook.  Returns the (possibly finished) thread.
    """
    global _warmup_thread
    with _warmup_lock:
        if _warmup_thread is None:
            _warmup_thread = threading.Thread(target=_import_heavy, name="modx-warmup-imports", daemon=True)
            _warmup_thread.start()
        return _warmup_thread


def settle_imports(timeout: float | None = None) -> None:
    """Wait for a running warm-up import to finish before importing transformers elsewhere.

    transformers' lazy module is not safe to import from two threads at once: a second
    thread can see a half-initialised module and fail with ImportError/AttributeError.
    Every heavy import of ours therefore waits for the warm-up first (a no-op once it is
    done, or when called from the warm-up thread itself)."""
    thread = _warmup_thread
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)

