"""Start and stop real Jupyter front-end servers (JupyterLab, Notebook 7, Voila) for browser tests.

Each server runs on loopback with a free port, a random token, an isolated Jupyter config/data/runtime
directory and its own process group, so a test run never touches the user's Jupyter set-up and a
teardown can take down the server *and* the kernels it started (kernels live in their own sessions).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the server fails loudly if it was taken since)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a server whose Jupyter settings, workspaces and kernelspecs are private to the run."""
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        path = home / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env.pop("JUPYTER_PATH", None)
    _write_lab_settings(Path(env["JUPYTER_CONFIG_DIR"]))
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# Lab/Notebook 7 user settings for a test run: no news toasts over the page (there is no network),
# and every cell rendered (windowing would leave widgets of off-screen cells out of the DOM).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}


def _write_lab_settings(config_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (no psutil needed)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces; fields after it are fixed.
        fields_after = stat.rsplit(")", 1)[1].split()
        if int(fields_after[1]) == pid:
            kids.append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    """Every process started (directly or not) by `pid`, parents before children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def _start_time(pid: int) -> str | None:
    """Kernel start time of `pid` (stat field 22): tells a process apart from a later one reusing its id."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _signal_group(pid: int, sig: int, started: str | None = None) -> None:
    """Signal the process group of `pid`, unless `pid` has gone (or now names another process)."""
    if started is not None and _start_time(pid) != started:
        return
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class JupyterServer:
    """One running front-end server; `url()` builds page URLs that carry the token."""

    kind: str  # "lab", "notebook" or "voila"
    root: Path
    log_path: Path
    env: dict[str, str]
    notebook: str | None = None  # voila serves exactly one notebook
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        common = [f"--port={self.port}", "--no-browser"]
        if self.kind == "voila":
            if not self.notebook:
                raise ValueError("voila needs the notebook to serve")
            return [
                sys.executable, "-m", "voila", self.notebook, *common,
                "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", f"--token={self.token}",
                "--show_tracebacks=True", f"--Voila.root_dir={self.root}",
            ]
        module = {"lab": "jupyterlab", "notebook": "notebook"}[self.kind]
        args = [
            sys.executable, "-m", module, *common, "--ip=127.0.0.1", "--allow-root",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
        ]
        if self.kind == "lab":
            # No network here: never fetch news or update checks (they only add toasts over the page).
            args += ["--LabApp.news_url=None",
                     "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        return args

    def start(self) -> "JupyterServer":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.root, env=self.env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        # Voila's "/" would execute the notebook, so any HTTP answer on a static path counts as ready.
        probe = "/api/status" if self.kind != "voila" else "/voila/static/does-not-exist"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.request(probe)
                return
            except urllib.error.HTTPError as exc:
                if self.kind == "voila":
                    return
                if exc.code != 503:
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.kind} server not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def url(self, path: str, **query: str) -> str:
        params = "&".join([f"{k}={v}" if v else k for k, v in query.items()] + [f"token={self.token}"])
        return f"{self.base}{path}?{params}"

    def request(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body.strip().startswith((b"{", b"[")) else body

    def sessions(self) -> list[dict]:
        """Notebook sessions the server knows (path, kernel state, connections); Lab/Notebook only."""
        result = self.request("/api/sessions")
        return list(result) if isinstance(result, list) else []

    def kernels(self) -> list[dict]:
        """Kernels the server is running (Lab/Notebook only)."""
        result = self.request("/api/kernels")
        return list(result) if isinstance(result, list) else []

    def shutdown_kernels(self) -> None:
        """Stop every kernel so the next test starts on quiet CPUs (only 2 cores here)."""
        if self.kind == "voila":
            # Voila has no kernels API; its kernels are children of the server process.
            for pid in descendants(self.proc.pid) if self.proc else []:
                _signal_group(pid, signal.SIGTERM, _start_time(pid))
            return
        for kernel in self.kernels():
            try:
                self.request(f"/api/kernels/{kernel['id']}", method="DELETE")
            except urllib.error.URLError:
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        """Terminate the server and every process it started, then make sure they are gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        procs = [(pid, _start_time(pid)) for pid in [self.proc.pid, *descendants(self.proc.pid)]]
        for pid, started in reversed(procs):
            _signal_group(pid, signal.SIGTERM, started)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        for pid, started in reversed(procs[1:]):
            _signal_group(pid, signal.SIGKILL, started)
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
