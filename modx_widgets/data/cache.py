"""On-disk cache of tokenized data files, so a second start skips parsing and tokenizing.

An entry is keyed by the file's content hash, the tokenizer's fingerprint (its full
tokenizer.json, chat template and special tokens), the training type, max_seq_length (SFT
only: pre-training caches whole documents and packs them afterwards, which takes milliseconds)
and CACHE_VERSION, which is bumped whenever tokenization changes. Changing seed, max_samples or
the eval split reuses the entry: those are applied after loading.

Layout: `<cache_dir>/<key>/tokens.arrow` (Arrow IPC, memory-mapped on load) and `meta.json`
(the check report and counts). Entries are written to a temporary directory and renamed into
place, so a crash or a concurrent writer never leaves a half-written entry. Nothing is evicted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .check import DataReport
from .tokenize import TokenizedData

CACHE_VERSION = 2
_HASH_BLOCK = 1 << 20


def file_digest(path: str | Path) -> str:
    """Content hash of a file (blake2b, streamed)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would produce different ids or text."""
    h = hashlib.blake2b(digest_size=20)
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    template = getattr(tokenizer, "chat_template", None)
    h.update(json.dumps(template, sort_keys=True).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        h.update(repr(getattr(tokenizer, attr, None)).encode())
    return h.hexdigest()


def cache_key(file_hash: str, tokenizer_fp: str, training_type: str, max_seq_length: int | None) -> str:
    parts = [str(CACHE_VERSION), training_type, str(max_seq_length), file_hash, tokenizer_fp]
    return hashlib.blake2b("|".join(parts).encode(), digest_size=16).hexdigest()


def load_entry(cache_dir: str | Path, key: str) -> tuple[DataReport, TokenizedData] | None:
    """The cached (report, tokens) for `key`, memory-mapped, or None on a miss or a damaged entry."""
    import pyarrow as pa

    entry = Path(cache_dir) / key
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("version") != CACHE_VERSION:
            return None
        table = pa.ipc.open_file(pa.memory_map(str(entry / "tokens.arrow"))).read_all()
        ids = table.column("input_ids").combine_chunks()
        data = TokenizedData(
            input_ids=ids.values.to_numpy(zero_copy_only=True),
            labels=(
                table.column("labels").combine_chunks().values.to_numpy(zero_copy_only=True)
                if "labels" in table.column_names
                else None
            ),
            offsets=ids.offsets.to_numpy().astype(np.int64),
            kept=np.asarray(meta["kept"], dtype=np.int64),
            truncated=meta["truncated"],
            dropped=meta["dropped"],
        )
        return DataReport.from_dict(meta["report"]), data
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None


def save_entry(cache_dir: str | Path, key: str, report: DataReport, data: TokenizedData) -> None:
    """Write an entry atomically; a concurrent writer of the same key simply wins."""
    import pyarrow as pa

    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    if final.exists():  # only reached when load_entry found it damaged: replace it
        trash = Path(tempfile.mkdtemp(prefix=f".{key}.old.", dir=root))
        os.replace(final, trash / "entry")
        shutil.rmtree(trash, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        offsets = pa.array(data.offsets, type=pa.int64())
        columns: dict[str, Any] = {"input_ids": pa.LargeListArray.from_arrays(offsets, pa.array(data.input_ids))}
        if data.labels is not None:
            columns["labels"] = pa.LargeListArray.from_arrays(offsets, pa.array(data.labels))
        table = pa.table(columns)
        with pa.OSFile(str(tmp / "tokens.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        meta = {
            "version": CACHE_VERSION,
            "report": report.to_dict(),
            "kept": data.kept.tolist(),
            "truncated": data.truncated,
            "dropped": data.dropped,
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its copy first
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
