"""Data inspector: what the training data will look like to the model, before Start.

For the selected data file it answers the questions users otherwise discover after the model
has loaded: how many lines are usable and why the others are not; what a conversation looks
like once rendered through the chat template, and which part of it is trained (the assistant
spans, exactly as the loss mask will have them); how long the samples are in tokens compared
with max_seq_length, how many would be truncated (or lose every trained token), and which
max_seq_length (a multiple of the schema's step, within its range) covers 99% of them.

Two caches, both in memory and keyed by content rather than by path, so an edited file or a
changed tokenizer is never served stale:
- the *scan* (line check + full-length tokenization) per (data file digest, tokenizer files
  digest, training type): changing max_seq_length reuses it, no tokenizer reload;
- the *result* per scan key plus max_seq_length and the number of examples: asking again is a
  dictionary lookup.

Pure apart from reading files; transformers is imported (through `run.model.load_tokenizer`)
only on a cache miss.
"""

from __future__ import annotations

import hashlib
import html
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data.check import LineProblem
from .data.errors import DataError
from .schema.spec import load_schema

__all__ = [
    "COVERAGE",
    "DataInspection",
    "ExampleView",
    "Histogram",
    "Segment",
    "clear_cache",
    "histogram",
    "inspect_data",
    "suggest_max_seq_length",
]

COVERAGE = 0.99  # share of samples the suggested max_seq_length must hold without truncation
HISTOGRAM_BINS = 24
CACHE_SIZE = 8
# A sample can be millions of tokens in a broken file; never tokenize "without limit" literally.
NO_LIMIT = 1 << 30
_IGNORE = -100
# Files of a model folder that decide how text becomes tokens (weights are left out: hashing
# gigabytes to key a cache would defeat its purpose).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ckpt")
_MAX_HASHED_FILE = 256 * 1024 * 1024

COLOURS = {"trained": "#c8e6c9", "trained_text": "#1b5e20", "context": "#555", "cut": "#bbb",
           "bar": "#64b5f6", "bar_over": "#ef9a9a", "limit": "#c62828"}


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one example that share how training treats them."""

    text: str
    trained: bool  # labels on these tokens (assistant span; every token for pre-training)
    cut: bool = False  # beyond max_seq_length: truncated away, the model never sees it


@dataclass(frozen=True)
class ExampleView:
    """One sample as the model sees it: rendered text split into trained / context / cut runs."""

    line: int  # 1-based line in the data file
    tokens: int  # full length in tokens, before truncation
    trained_tokens: int  # tokens that carry a label after truncation
    segments: tuple[Segment, ...]

    @property
    def truncated(self) -> bool:
        return any(s.cut for s in self.segments)

    def html(self) -> str:
        """The example as HTML: trained spans highlighted, context plain, truncated part struck out."""
        parts = []
        for seg in self.segments:
            text = html.escape(seg.text)
            if seg.cut:
                style = f"color:{COLOURS['cut']};text-decoration:line-through"
                cls = "modx-cut"
            elif seg.trained:
                style = f"background:{COLOURS['trained']};color:{COLOURS['trained_text']}"
                cls = "modx-trained"
            else:
                style = f"color:{COLOURS['context']}"
                cls = "modx-context"
            parts.append(f'<span class="{cls}" style="{style}">{text}</span>')
        cut = " - the struck-out end is cut at max_seq_length" if self.truncated else ""
        head = (
            f'<div style="font-size:85%;color:#666">line {self.line}: {self.tokens} tokens, '
            f"{self.trained_tokens} trained{cut}</div>"
        )
        body = (
            '<pre class="modx-example" style="white-space:pre-wrap;word-break:break-word;margin:2px 0 8px 0;'
            f'padding:4px;border:1px solid #ddd;font-size:85%">{"".join(parts)}</pre>'
        )
        return head + body


@dataclass(frozen=True)
class Histogram:
    """Counts of sample lengths in right-closed bins (edges[i], edges[i+1]]; edges[0] is 0."""

    edges: tuple[int, ...]
    counts: tuple[int, ...]

    def over(self, limit: int) -> int:
        """Samples in bins that lie entirely above `limit` (exact when `limit` is an edge)."""
        return sum(c for lo, c in zip(self.edges, self.counts) if lo >= limit)


@dataclass(eq=False)
class DataInspection:
    """Everything the inspector found for one data file, tokenizer and max_seq_length."""

    path: str
    training_type: str
    max_seq_length: int
    usable: int
    total_lines: int
    rejected: list[LineProblem]  # the first ones, with line numbers and reasons
    rejected_count: int
    lengths: np.ndarray  # token length of every usable sample, untruncated, in file order
    truncated: int  # samples longer than max_seq_length
    dropped: int  # SFT samples whose trained tokens all lie beyond max_seq_length (left out)
    histogram: Histogram
    suggested_max_seq_length: int | None
    suggestion_note: str
    examples: list[ExampleView] = field(default_factory=list)
    blocks: int | None = None  # pre-training: max_seq_length blocks the documents pack into
    cache_hit: bool = False
    seconds: float = 0.0

    @property
    def coverage(self) -> float:
        """Share of samples that fit max_seq_length as set now."""
        return 1.0 if not len(self.lengths) else 1.0 - self.truncated / len(self.lengths)

    def summary(self) -> str:
        """One or two sentences for the widget and for scripts."""
        text = f"{self.usable} of {self.total_lines} lines usable"
        if self.rejected_count:
            text += f", {self.rejected_count} rejected"
        if len(self.lengths):
            q = np.percentile(self.lengths, [50, 99])
            text += (
                f". Tokens per sample: median {q[0]:.0f}, 99th percentile {q[1]:.0f}, longest {int(self.lengths.max())}"
            )
        if self.training_type == "sft":
            text += f". At max_seq_length {self.max_seq_length}: {self.truncated} truncated"
            if self.dropped:
                text += f", {self.dropped} lose every trained token and are left out"
        elif self.blocks is not None:
            text += f". Packed into {self.blocks} block(s) of {self.max_seq_length} tokens (nothing is truncated)"
        if self.suggested_max_seq_length is not None and self.suggested_max_seq_length != self.max_seq_length:
            text += f". Suggested max_seq_length: {self.suggested_max_seq_length} ({self.suggestion_note})"
        return text + "."


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def suggest_max_seq_length(lengths: Sequence[int] | np.ndarray, coverage: float = COVERAGE) -> tuple[int, str]:
    """(length, note): the smallest multiple of the schema step, within the schema range, that
    holds at least `coverage` of the samples untruncated; the note says what it covers."""
    spec = load_schema().params["max_seq_length"]
    step = int(spec.step or 1)
    low, high = int(spec.minimum), int(spec.maximum)
    arr = np.sort(np.asarray(lengths, dtype=np.int64))
    if not len(arr):
        return low, "no samples"
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    need = int(arr[max(math.ceil(coverage * len(arr)), 1) - 1])
    value = min(max(math.ceil(need / step) * step, low), high)
    covered = float(np.count_nonzero(arr <= value)) / len(arr)
    if value == high and covered < coverage:
        return value, f"the largest allowed; still truncates {100 * (1 - covered):.1f}% of samples"
    return value, f"holds {100 * covered:.1f}% of samples untruncated"


def histogram(lengths: Sequence[int] | np.ndarray, limit: int, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Right-closed bins of equal power-of-two width from 0 past the longest sample, with
    `limit` always one of the edges so bars split cleanly into fits / truncated."""
    arr = np.asarray(lengths, dtype=np.int64)
    top = int(max(arr.max() if len(arr) else 0, limit, 1))
    width = 1 << max(math.ceil(math.log2(max(top / bins, 1))), 0)
    edges = sorted(set(range(0, top + width, width)) | {int(limit)})
    edges = [e for e in edges if e <= top] + ([e for e in edges if e > top][:1])
    index = np.searchsorted(np.asarray(edges[1:]), arr, side="left")  # sample in (edges[i], edges[i+1]]
    counts = np.bincount(index, minlength=len(edges) - 1)[: len(edges) - 1]
    return Histogram(tuple(int(e) for e in edges), tuple(int(c) for c in counts))


def _first_trained(labels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per sample, the position of its first labelled token (len if none)."""
    n = len(offsets) - 1
    first = np.diff(offsets).astype(np.int64)
    idx = np.flatnonzero(labels != _IGNORE)
    if len(idx):
        sample = np.searchsorted(offsets, idx, side="right") - 1
        np.minimum.at(first, sample, idx - offsets[sample])
    return first[:n]


# ------------------------------------------------------------------------------------------
# Keys and caches
# ------------------------------------------------------------------------------------------


def _digest_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)


def file_digest(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    _digest_file(Path(path), h)
    return h.hexdigest()


def tokenizer_digest(source: str | Path) -> str:
    """Hash of the files in a tokenizer/model folder that decide tokenization (weights skipped)."""
    root = Path(source).expanduser()
    h = hashlib.blake2b(digest_size=20)
    if root.is_file():
        _digest_file(root, h)
        return h.hexdigest()
    for p in sorted(root.iterdir()) if root.is_dir() else ():
        if not p.is_file() or p.suffix.lower() in _WEIGHT_SUFFIXES or p.stat().st_size > _MAX_HASHED_FILE:
            continue
        h.update(p.name.encode() + b"\0")
        _digest_file(p, h)
    return h.hexdigest()


@dataclass(eq=False)
class _Scan:
    """The length-independent part of an inspection."""

    report: Any  # DataReport
    lengths: np.ndarray
    first_trained: np.ndarray | None  # SFT only
    lines: np.ndarray  # file line of every sample
    # chosen examples: (sample index, ids, trained mask), full length
    examples: list[tuple[int, np.ndarray, np.ndarray]]
    tokenizer: Any


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_scans = _LRU(CACHE_SIZE)
_results = _LRU(CACHE_SIZE * 4)


def clear_cache() -> None:
    """Forget every cached scan and result (tests, or to free the memory)."""
    _scans.clear()
    _results.clear()


# ------------------------------------------------------------------------------------------
# The inspection
# ------------------------------------------------------------------------------------------


def _pick_examples(lengths: np.ndarray, n: int) -> list[int]:
    """The first `n` samples in file order, plus the longest one when it is not among them."""
    chosen = list(range(min(n, len(lengths))))
    if n > 0 and len(lengths) > n:
        longest = int(np.argmax(lengths))
        if longest not in chosen:
            chosen.append(longest)
    return chosen


def _scan(path: str, training_type: str, tokenizer: Any, n_examples: int) -> _Scan:
    from .data.check import scan_file
    from .data.tokenize import tokenize_conversations, tokenize_documents

    try:
        report, records, line_numbers = scan_file(path, training_type)
    except DataError as exc:
        if exc.report is None:
            raise
        report, records, line_numbers = exc.report, [], []  # readable but nothing usable: still show why
    lines = np.asarray(line_numbers, dtype=np.int64)
    if not records:
        empty = np.zeros(0, np.int64)
        return _Scan(report, empty, empty if training_type == "sft" else None, lines, [], tokenizer)
    if training_type == "sft":
        data = tokenize_conversations(records, tokenizer, NO_LIMIT)
        lines = lines[data.kept]
        labels = data.labels
        first = _first_trained(labels, data.offsets)
    else:
        data = tokenize_documents(records, tokenizer)
        labels, first = None, None
    lengths = data.lengths.astype(np.int64)
    examples = []
    for i in _pick_examples(lengths, n_examples):
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        ids = np.asarray(data.input_ids[a:b])
        mask = np.ones(b - a, bool) if labels is None else labels[a:b] != _IGNORE
        examples.append((i, ids, mask))
    return _Scan(report, lengths, first, lines, examples, tokenizer)


def _segments(tokenizer: Any, ids: np.ndarray, trained: np.ndarray, limit: int | None) -> tuple[Segment, ...]:
    """Decode runs of tokens with the same (trained, cut) flags; cut = beyond `limit`."""
    n = len(ids)
    cut = np.zeros(n, bool) if limit is None else np.arange(n) >= limit
    flags = trained.astype(np.int8) + 2 * cut.astype(np.int8)
    bounds = [0, *(np.flatnonzero(np.diff(flags)) + 1).tolist(), n]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        if b <= a:
            continue
        text = tokenizer.decode(ids[a:b].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        out.append(Segment(text=text, trained=bool(trained[a]) and not cut[a], cut=bool(cut[a])))
    return tuple(out)


def _tokenizer_source(values: Mapping[str, Any]) -> str:
    source = values.get("tokenizer_path") or values.get("model_path")
    if not source:
        raise ValueError("model_path (or tokenizer_path) is empty: the inspector needs the model's tokenizer")
    if not Path(str(source)).expanduser().exists():
        key = "tokenizer_path" if values.get("tokenizer_path") else "model_path"
        raise ValueError(f"{key} {source} does not exist: the inspector needs the model's tokenizer")
    return str(source)


def inspect_data(
    values: Mapping[str, Any],
    training_type: str = "sft",
    *,
    path: str | Path | None = None,
    examples: int = 3,
    tokenizer: Any = None,
) -> DataInspection:
    """Inspect the task's training data (or `path`) with its tokenizer at its max_seq_length.

    `values` are form values (train_file, model_path / tokenizer_path, max_seq_length; missing
    ones take the schema default).  A passed `tokenizer` skips loading one (and is keyed by the
    files of model_path / tokenizer_path all the same).  Raises `DataError` for an unreadable
    data file and `ValueError` for a missing file, tokenizer or a bad length, before any work.
    """
    started = time.perf_counter()
    if training_type not in ("sft", "pretrain"):
        raise ValueError(f"training_type must be 'sft' or 'pretrain', got {training_type!r}")
    spec = load_schema().params["max_seq_length"]
    raw_len = values.get("max_seq_length")
    try:
        max_len = int(spec.default if raw_len in (None, "") else raw_len)
    except (TypeError, ValueError):
        raise ValueError(f"max_seq_length must be a whole number, got {raw_len!r}") from None
    if max_len < 2:
        raise ValueError(f"max_seq_length must be at least 2, got {max_len}")
    data_path = path if path is not None else values.get("train_file")
    if not data_path:
        raise ValueError("train_file is empty: choose the training data file to inspect")
    data_file = Path(str(data_path)).expanduser()
    if not data_file.is_file():
        raise DataError(f"data file not found: {data_file}")
    source = _tokenizer_source(values)
    examples = max(int(examples), 0)

    scan_key = (file_digest(data_file), tokenizer_digest(source), training_type, examples)
    result_key = (*scan_key, max_len)
    hit = _results.get(result_key)
    if hit is not None:
        return _copy(hit, cache_hit=True, seconds=time.perf_counter() - started)

    scan = _scans.get(scan_key)
    scan_hit = scan is not None
    if scan is None:
        if tokenizer is None:
            from .run.model import load_tokenizer

            tokenizer = load_tokenizer(values)
        scan = _scan(str(data_file), training_type, tokenizer, examples)
        _scans.put(scan_key, scan)

    result = _assemble(scan, str(data_file), training_type, max_len)
    result.cache_hit = scan_hit
    result.seconds = time.perf_counter() - started
    _results.put(result_key, result)
    return result


def _assemble(scan: _Scan, path: str, training_type: str, max_len: int) -> DataInspection:
    lengths = scan.lengths
    sft = training_type == "sft"
    truncated = int(np.count_nonzero(lengths > max_len)) if sft else 0
    dropped = int(np.count_nonzero(scan.first_trained >= max_len)) if sft and scan.first_trained is not None else 0
    if sft:
        suggestion, note = suggest_max_seq_length(lengths) if len(lengths) else (None, "no usable samples")
    else:
        suggestion, note = None, "pre-training packs documents into blocks of max_seq_length; nothing is truncated"
    blocks = None
    if not sft and len(lengths):
        blocks = max(int((int(lengths.sum()) + len(lengths)) // max_len), 1)  # one separator per document
    views = []
    for i, ids, trained in scan.examples:
        limit = max_len if sft else None
        kept = trained[:max_len] if sft else trained
        views.append(
            ExampleView(
                line=int(scan.lines[i]) if i < len(scan.lines) else 0,
                tokens=int(len(ids)),
                trained_tokens=int(np.count_nonzero(kept)) if (not sft or scan.first_trained[i] < max_len) else 0,
                segments=_segments(scan.tokenizer, ids, trained, limit),
            )
        )
    report = scan.report
    return DataInspection(
        path=path,
        training_type=training_type,
        max_seq_length=max_len,
        usable=int(report.usable),
        total_lines=int(report.total_lines),
        rejected=list(report.rejected),
        rejected_count=int(max(report.rejected_count, len(report.rejected))),
        lengths=lengths,
        truncated=truncated,
        dropped=dropped,
        histogram=histogram(lengths, max_len),
        suggested_max_seq_length=suggestion,
        suggestion_note=note,
        examples=views,
        blocks=blocks,
    )


def _copy(result: DataInspection, **changes: Any) -> DataInspection:
    from dataclasses import replace

    return replace(result, **changes)
