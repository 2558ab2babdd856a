"""Crash-safe file primitives for the workspace.

Whole files are replaced atomically (temporary file in the same folder, fsync, os.replace),
so a reader sees either the old or the new content, never a mix, even if the process is
killed mid-write.  Append-only logs get one write() per batch; readers skip a torn last
line.  JSON is the only format read back: nothing in a workspace is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .errors import StoreError

MAX_JSON_BYTES = 16 * 1024 * 1024  # a task or template file is a few KiB; refuse absurd ones
TMP_SUFFIX = ".tmp"
_append_lock = threading.Lock()  # newline repair + write must not interleave between threads


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless to skip where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide the file from other readers of the workspace
                os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StoreError(f"could not write {path}: {exc.strerror or exc}; the previous version is intact") from exc
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """Atomically write `data` as indented UTF-8 JSON (NaN allowed: losses can be NaN)."""
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: Path) -> Any:
    """Decode a JSON file, turning every way it can be broken into a StoreError naming the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StoreError(f"{path} is missing") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size > MAX_JSON_BYTES:
        raise StoreError(f"{path} is {size} bytes, far too large for a settings file; it is not a modx_widgets file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise StoreError(f"{path} is empty (an interrupted write?); delete it or restore it from a backup")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StoreError(f"{path} is not UTF-8 text; it is not a modx_widgets file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "it may be truncated or hand-edited"
        ) from None
    except RecursionError:
        raise StoreError(f"{path} is nested too deeply to be a modx_widgets file") from None


def append_text(path: Path, text: str) -> None:
    """Append whole lines with a single write(), first closing any torn line a crash left behind."""
    if not text:
        return
    data = text.encode("utf-8")
    with _append_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size > 0:
                with open(path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise StoreError(f"could not append to {path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)


def read_complete_lines(path: Path) -> list[str]:
    """Lines of `path` that were fully written (the last one only if it ends in a newline)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = raw.split(b"\n")
    lines.pop()  # either b"" after the final newline, or a torn fragment
    return [line.decode("utf-8", errors="replace") for line in lines if line.strip()]
