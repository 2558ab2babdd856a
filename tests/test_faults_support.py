"""Helpers shared by tests/test_bad_input.py and tests/test_faults*.py (no tests here).

`snapshot` fingerprints a folder tree so a test can prove that a refused start changed nothing
on disk; `evil_pickle` writes a file whose unpickling would leave a mark, so a test can prove
that nothing unpickles it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry under `roots`: path -> (kind, size, sha1 of the bytes, mtime in ns).

    Directories are recorded too, so a created (even empty) folder shows up as a change.
    """
    seen: dict[str, tuple] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            seen[str(root)] = ("absent",)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            d = Path(dirpath)
            seen[str(d)] = ("dir", d.stat().st_mtime_ns)
            for name in sorted(filenames):
                p = d / name
                if p.is_symlink():
                    seen[str(p)] = ("link", os.readlink(p))
                    continue
                data = p.read_bytes()
                seen[str(p)] = ("file", len(data), hashlib.sha1(data).hexdigest(), p.stat().st_mtime_ns)
    return seen


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Human-readable differences between two snapshots (empty when nothing changed)."""
    out = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            out.append(f"{path}: {before.get(path, ('absent',))[0]} -> {after.get(path, ('absent',))[0]}")
    return out


class _Mark:
    """Unpickling this creates the folder `path`: the proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def evil_pickle(target: Path, mark: Path, *, torch_format: bool = True) -> Path:
    """Write a pickle to `target` that creates folder `mark` when unpickled (plain or torch zip)."""
    payload = {"state": _Mark(str(mark))}
    if torch_format:
        import torch

        torch.save(payload, target)
    else:
        target.write_bytes(pickle.dumps(payload))
    return target


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def run_python(code: str, *, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with tests/ importable (a process the test may let die)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=full_env
    )
