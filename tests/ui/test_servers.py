"""The harness's server control: a server started for the tests answers with its token only, and
stopping it leaves no process behind, kernels included (they run in their own sessions)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from _servers import JupyterServer, descendants, isolated_env


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie waiting to be reaped by init has already ended."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_stop_ends_the_server_and_the_kernels_it_started(tmp_path):
    server = JupyterServer("lab", tmp_path, tmp_path / "lab.log", isolated_env(tmp_path / "home")).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no entry
            urllib.request.urlopen(f"{server.base}/api/kernels", timeout=10)
        assert refused.value.code == 403
        server.request("/api/kernels", method="POST")
        pids = descendants(server.proc.pid)
        assert pids, "the kernel should be a child process of the server"
        assert os.getpgid(pids[-1]) != os.getpgid(server.proc.pid)  # why stop() signals each group
    finally:
        server.stop()
    assert server.proc.poll() is not None
    assert [pid for pid in pids if _alive(pid)] == []
