"""`SubprocessRun`: a task trained by `modx-train` in processes of its own, watched from here.

Used for device "all" (or a list such as "cuda:0,cuda:1": data-parallel, one process per
GPU through torchrun and the Trainer's own DDP) and for "detached" runs on one device, which
survive a kernel restart or a closed browser.  The training processes write the task's files
exactly as an in-kernel run does (rank 0 only); a `Follower` tails them and feeds the same
listeners a `TrainingRun` feeds, so the widget cannot tell the two apart.

Why torchrun and not `accelerate launch`: on CPU, `accelerate launch --cpu --num_processes N`
starts a single process unless MPI is set up, and for GPUs accelerate itself hands over to
torch.distributed.run.  Calling it directly gives the same processes everywhere (gloo on CPU,
NCCL on GPUs) with one code path.

Stop crosses the process boundary through a file: the first `stop()` creates `<task>/stop`,
which the training processes check at every step end (they agree with one all-reduce, so all
stop at the same step); a checkpoint is saved and the task ends Stopped.  A second `stop()`
kills the launcher and every process below it (torchrun gives each worker a session of its
own, so the process tree is walked).  The launcher leaves `launch.json` (pid, host, command)
and `launch.log` (all output of the processes) in the task folder, so a later kernel can
re-attach, find the output, and still stop it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..events import FINAL_STATES, Error, Status
from ..store import StatusRecord, StoreError, Workspace, is_pid_alive
from ..store.process import this_host
from ..store.workspace import INTERRUPTED
from .tail import PROGRESS_FILE, STOP_FILE, Follower, TaskTail
from .listeners import Broadcaster

__all__ = [
    "LAUNCH_FILE",
    "LAUNCH_LOG",
    "SubprocessRun",
    "count_processes",
    "descendants",
    "kill_tree",
    "launch_command",
    "needs_subprocess",
    "visible_devices",
]

LAUNCH_FILE = "launch.json"
LAUNCH_LOG = "launch.log"
KILLED = "killed: Stop was pressed twice, so the training processes were ended at once"
KILLED_HINT = "Nothing was saved after the newest checkpoint; resume from it or start again."
_LOG_TAIL_CHARS = 2000


# ---------------------------------------------------------------------------------------------
# What to launch
# ---------------------------------------------------------------------------------------------


def _device_list(device: str) -> list[int] | None:
    """GPU indices of a list like "cuda:0,cuda:1" (or "0,1"); None when `device` is no list."""
    parts = [p.strip().lower() for p in str(device or "").split(",")]
    if len(parts) < 2:
        return None
    indices = []
    for part in parts:
        text = part[5:] if part.startswith("cuda:") else part
        if not text.isdigit():
            raise ValueError(f"device list {device!r} must look like cuda:0,cuda:1 (got {part!r})")
        indices.append(int(text))
    if len(set(indices)) != len(indices):
        raise ValueError(f"device list {device!r} names a GPU twice")
    return indices


def needs_subprocess(device: str, detached: bool = False) -> bool:
    """True when the task must train outside the kernel: several GPUs, or a detached run."""
    return bool(detached) or str(device or "").strip().lower() == "all" or _device_list(device) is not None


def visible_devices(device: str) -> str | None:
    """CUDA_VISIBLE_DEVICES for the training processes (None: leave the environment alone)."""
    indices = _device_list(device)
    return None if indices is None else ",".join(str(i) for i in indices)


def count_processes(device: str) -> int:
    """One process per GPU for "all" or a list, else one."""
    indices = _device_list(device)
    if indices is not None:
        return len(indices)
    if str(device or "").strip().lower() == "all":
        from ..envcheck import probe_gpus

        gpus = probe_gpus()
        return max(len(gpus.names), 1) if gpus.available else 1
    return 1


def launch_command(
    workspace_root: str | os.PathLike[str], task_name: str, *, processes: int = 1, device: str | None = None,
    python: str | None = None,
) -> list[str]:
    """The command line that trains the task: `modx-train` directly, or through torchrun."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    python = python or sys.executable
    tail = [task_name, "--workspace", str(workspace_root)]
    if device:
        tail += ["--device", device]
    if processes == 1:
        return [python, "-m", "modx_widgets.cli", *tail]
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "modx_widgets.cli", *tail,
    ]


def _child_env(processes: int, cuda_visible: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # launch.log shows output as it happens
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    if processes > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max((os.cpu_count() or 1) // processes, 1))
    return env


def _log_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - _LOG_TAIL_CHARS, 0))
            return fh.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def _last_meaningful_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and not set(line) <= set("*-=") and not line.startswith("warnings.warn"):
            return line
    return ""


# ---------------------------------------------------------------------------------------------
# Process trees (torchrun puts every worker in a session of its own, so one killpg is not enough)
# ---------------------------------------------------------------------------------------------


def _parent_map() -> dict[int, int]:
    """pid -> parent pid of every process, from /proc (empty where there is no /proc)."""
    parents: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return parents
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first), as /proc shows them now."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map().items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _descends_from(pid: int, ancestor: int) -> bool:
    if pid == ancestor:
        return True
    parents = _parent_map()
    seen = set()
    while pid in parents and pid not in seen and pid > 1:
        seen.add(pid)
        pid = parents[pid]
        if pid == ancestor:
            return True
    if not parents:  # no /proc: fall back to the process group the launcher leads
        try:
            return os.getpgid(pid) == ancestor
        except OSError:
            return False
    return False


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, everything below it and their process groups (never this process's group)."""
    mine = os.getpgrp()
    pids = [pid, *descendants(pid)]
    groups = set()
    for p in pids:
        try:
            groups.add(os.getpgid(p))
        except OSError:
            pass
    for p in pids:  # the launcher first, so it cannot react by starting anything
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    for g in groups - {mine}:
        try:
            os.killpg(g, signal.SIGKILL)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class SubprocessRun(Broadcaster):
    """A task trained in another process, with `TrainingRun`'s interface.

    `start()` checks the task in the caller's thread first (`TaskInvalid`, `RunBusy`, nothing
    written) and returns once the processes are launched.  `processes` defaults to one per GPU
    for device "all" or a device list, else one; `device` overrides the task's device.
    Listeners are called from the follower thread with every event and must be cheap.
    """

    def __init__(
        self,
        workspace: Workspace,
        task_name: str,
        *,
        listeners: Any = (),
        processes: int | None = None,
        device: str | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__(listeners)
        self.workspace = workspace
        self.task_name = task_name
        self._processes = processes
        self._device = device
        self.poll_interval = poll_interval
        self._popen: subprocess.Popen | None = None
        self._follower: Follower | None = None
        self._owner_pid: int | None = None
        self._stop_requested = False
        self._killed = False
        self.error: BaseException | None = None
        self.launched = False  # True when this object started the processes (False: re-attached)

    def _dispatch(self, event: Any) -> None:
        self._broadcast(event)

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The launcher's pid (this kernel's child), or the training owner's when re-attached."""
        return self._popen.pid if self._popen is not None else self._owner_pid

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def is_alive(self) -> bool:
        return self._follower is not None and self._follower.is_alive()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or `timeout` seconds pass); returns the current state."""
        if self._follower is not None:
            self._follower.join(timeout)
        if self._popen is not None and not self.is_alive():
            try:
                self._popen.wait(1)
            except subprocess.TimeoutExpired:
                pass
        return self._state

    def _task_dir(self) -> Path:
        return self.workspace.task_dir(self.task_name)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> "SubprocessRun":
        """Check the task, launch the training processes in a new session, follow their files."""
        from .engine import RunBusy, check_not_running, prepare
        from .thread import active_run, register_run

        if self._popen is not None or self._follower is not None:
            raise RunBusy(f"this run of task {self.task_name!r} was already started; create a new run")
        if active_run(self.workspace.root, self.task_name) is not None:
            raise RunBusy(f"task {self.task_name!r} is already running; stop it first")
        prepared = prepare(self.workspace, self.task_name)  # TaskInvalid: nothing written
        check_not_running(self.workspace, self.task_name)
        device = self._device or prepared.device
        processes = self._processes or count_processes(device)
        child_device = None
        if processes > 1 or _device_list(device) is not None:
            child_device = "all" if str(device).lower() not in ("cpu",) else "cpu"
        folder = self._task_dir()
        for name in (STOP_FILE, PROGRESS_FILE):
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass
        tail = TaskTail(self.workspace, self.task_name)  # from the current end: this run only
        command = launch_command(self.workspace.root, self.task_name, processes=processes, device=child_device)
        log_path = folder / LAUNCH_LOG
        with open(log_path, "wb") as log:
            self._popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(processes, visible_devices(device)),
                cwd=os.getcwd(),
                start_new_session=True,  # own process group: survives the kernel, killable as a whole
            )
        record = {
            "pid": self._popen.pid,
            "host": this_host(),
            "processes": processes,
            "device": device,
            "command": command,
            "started": time.time(),
        }
        try:
            (folder / LAUNCH_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        except OSError:
            pass  # only needed to force-stop from a later kernel
        self.launched = True
        self._state = "Running"
        popen = self._popen
        self._follower = Follower(
            tail, self._dispatch, lambda: popen.poll() is None, on_end=self._on_end, interval=self.poll_interval
        )
        register_run(self.workspace.root, self.task_name, self)
        self._follower.start()
        return self

    # -- re-attach --------------------------------------------------------------------------

    @classmethod
    def attach(cls, workspace: Workspace, task_name: str, *, listeners: Any = ()) -> "SubprocessRun | None":
        """Follow a run of `task_name` that another process is training right now, or None.

        Reads status.json: Running, owned by a live process other than this one.  Events
        written before this call are not replayed (read them with `Workspace.read_events`).
        """
        try:
            status = workspace.read_status(task_name)  # a dead owner reads as Failed here
        except StoreError:
            return None
        if status.state != "Running" or status.owner_pid is None or status.owner_pid == os.getpid():
            return None
        run = cls(workspace, task_name, listeners=listeners)
        run._owner_pid = status.owner_pid
        run._state = "Running"
        same_host = status.owner_host in (None, this_host())
        owner = status.owner_pid

        def alive() -> bool:
            if same_host:
                return is_pid_alive(owner)
            try:  # another machine's process: its status file is all we can see
                return workspace.read_status(task_name).state == "Running"
            except StoreError:
                return False

        run._follower = Follower(
            TaskTail(workspace, task_name), run._dispatch, alive, on_end=run._on_end,
            interval=run.poll_interval, seen_running=True,
        )
        run._follower.start()
        return run

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """First call: graceful stop (checkpoint, then Stopped).  Second call: kill the processes."""
        if not self.is_alive():
            return
        if self._stop_requested:
            self.kill()
            return
        self._stop_requested = True
        try:
            (self._task_dir() / STOP_FILE).write_text(f"stop requested by process {os.getpid()}\n", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot ask task {self.task_name!r} to stop: {exc}") from exc
        if self._follower is not None:
            self._follower.wake()

    def _launcher_pid(self) -> int | None:
        """The launcher to kill, only when this package started it for this task."""
        if self._popen is not None:
            return self._popen.pid
        try:
            record = json.loads((self._task_dir() / LAUNCH_FILE).read_text(encoding="utf-8"))
            launcher = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if self._owner_pid is None or record.get("host") != this_host():
            return None
        return launcher if _descends_from(self._owner_pid, launcher) else None

    def kill(self) -> None:
        """End every training process at once (no checkpoint); the task ends Failed ("killed")."""
        launcher = self._launcher_pid()
        if launcher is None:
            raise RuntimeError(
                f"task {self.task_name!r} is trained by process {self._owner_pid}, which modx_widgets did not "
                "launch from here; stop it where it was started (the graceful stop request stays in place)"
            )
        self._killed = True
        kill_tree(launcher)
        if self._follower is not None:
            self._follower.wake()

    # -- the end ----------------------------------------------------------------------------

    def _on_end(self, record: StatusRecord | None, seen_running: bool) -> Status:
        """Final Status of a run whose processes ended without reporting one."""
        try:
            (self._task_dir() / STOP_FILE).unlink()  # nobody is left to serve it
        except OSError:
            pass
        if self._popen is not None:
            try:
                self._popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self._killed:
            return self._record_end("Failed", KILLED, KILLED_HINT)
        log = _log_tail(self._task_dir() / LAUNCH_LOG)
        if seen_running and record is not None and record.state in FINAL_STATES:
            if self.launched and record.message == INTERRUPTED:
                # the store only knows the process vanished; say where its own output is
                code = self._popen.returncode if self._popen is not None else None
                hint = (f"The training processes ended without reporting (exit code {code}); their output is in "
                        f"{self._task_dir() / LAUNCH_LOG}. Resume from the newest checkpoint or start again.")
                return self._record_end(record.state, INTERRUPTED, hint, traceback=log)
            return Status(state=record.state, message=record.message, hint=record.hint)
        code = self._popen.returncode if self._popen is not None else None
        line = _last_meaningful_line(log) or "no output"
        message = f"the training process exited{f' with code {code}' if code is not None else ''} before reporting: {line}"
        hint = f"See {self._task_dir() / LAUNCH_LOG} for the full output."
        return self._record_end("Failed", message, hint, traceback=log)

    def _record_end(self, state: str, message: str, hint: str, traceback: str = "") -> Status:
        """Write a final status the processes could not write themselves; returns its event."""
        status = Status(state=state, message=message, hint=hint)
        error = Error(message=message, hint=hint, traceback=traceback)
        self._dispatch(error)
        try:
            current = self.workspace.read_status(self.task_name)
            now = time.time()
            record = StatusRecord(
                state=state, created=current.created, started=current.started, ended=now, message=message,
                hint=hint, step=current.step, max_steps=current.max_steps,
            )
            self.workspace.write_status(self.task_name, record)
            self.workspace.append_events(self.task_name, [error, status])
        except StoreError:
            pass  # the listeners still learn the end
        return status
