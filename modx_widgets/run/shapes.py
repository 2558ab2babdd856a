"""Tensor names and shapes from safetensors headers, without loading a single weight.

A safetensors file starts with 8 bytes (little-endian header length) and a JSON header that
maps every tensor name to its dtype, shape and byte range.  Reading only that header lets the
pre-start checks compare a model, an adapter and a checkpoint in milliseconds, with no ML
import.  Pure Python (json only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit; a larger length means a damaged file


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape of one safetensors file; None when the header cannot be read."""
    try:
        with Path(path).open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size < MAX_HEADER_BYTES:
                return None
            header: Any = json.loads(fh.read(size))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    shapes = {}
    for name, info in header.items():
        if name != "__metadata__" and isinstance(info, dict) and isinstance(info.get("shape"), list):
            shapes[name] = tuple(int(d) for d in info["shape"])
    return shapes


def folder_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape over every *.safetensors file of a folder (all shards); None when
    there are none or one cannot be read."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        part = file_shapes(f)
        if part is None:
            return None
        shapes.update(part)
    return shapes
