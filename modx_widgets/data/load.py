"""From form values to train/eval `datasets.Dataset`s ready for the Trainer.

Order of operations (documented because users ask):
1. The train file (and eval_file) are checked line by line and tokenized, or loaded from the
   cache. SFT examples whose assistant part is cut away entirely by max_seq_length are dropped.
2. The usable examples (SFT conversations; pre-training documents) are shuffled once with `seed`.
3. max_samples > 0 keeps the first max_samples of that shuffled order: a seeded random subset,
   not the head of the file. The eval split, if any, is taken from within that subset.
   An eval_file is never capped by max_samples.
4. eval_file wins over eval_split_ratio. With a ratio, round(n * ratio) examples (at least one)
   go to eval, the rest to train; the split is seeded by `seed` and disjoint. Eval keeps file order.
5. Pre-training: each side's documents are joined with eos and cut into max_seq_length blocks
   after the split, so no document is shared by train and eval.
6. SFT with group_by_length (and padded batches of more than one example): the shuffled train
   order is regrouped so similar lengths share a batch (`order.length_grouped`: sorted inside
   windows of up to 50 optimizer steps, the window with the longest example first).
7. The train set is returned in that order. reshuffle=False -> `sequential=True`: the engine
   must feed it in that order (same order every epoch). reshuffle=True -> `sequential=False`:
   the engine's sampler draws a new order every epoch (length-grouped when group_by_length).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config.build import length_grouping
from . import cache as _cache
from .check import DataReport, ScannedFile, scan_file
from .errors import DataError
from .order import length_grouped
from .tokenize import (
    TokenizedData,
    pack_blocks,
    require_chat_template,
    separator_id,
    tokenize_conversations,
    tokenize_documents,
)

_DATA_KEYS = (
    "train_file", "eval_file", "max_samples", "eval_split_ratio", "reshuffle", "group_by_length", "padding_free",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "seed",
)


@dataclass
class DataStats:
    """Numbers for the UI, the checkpoint estimate and a data inspector.

    `truncated`/`dropped` count examples of the data files (train and eval file) before
    sampling; everything else describes the returned train/eval sets. For pre-training an
    example is a block and `documents` counts the documents packed into train blocks."""

    training_type: str
    max_seq_length: int
    examples: int = 0
    eval_examples: int = 0
    tokens: int = 0  # real (non-pad) tokens in train
    supervised_tokens: int = 0  # train tokens that carry a label
    eval_tokens: int = 0
    documents: int = 0
    truncated: int = 0
    dropped: int = 0
    lengths: list[int] = field(default_factory=list)  # train lengths, in training order
    eval_lengths: list[int] = field(default_factory=list)
    cache_hit: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("lengths", "eval_lengths")}


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset: input_ids, attention_mask, labels
    eval: Any | None
    report: DataReport
    stats: DataStats
    sequential: bool  # True: feed train in its given order every epoch (reshuffle off)
    eval_report: DataReport | None = None
    # SFT: 1-based line of the train file behind each train / eval example, in dataset order
    # (for a data inspector, and to line up other tools on the very same examples). Pre-training
    # blocks mix documents, so these stay None there.
    train_lines: list[int] | None = None
    eval_lines: list[int] | None = None


def _options(values: Mapping[str, Any]) -> dict[str, Any]:
    from ..schema.spec import load_schema

    merged = load_schema().defaults()
    merged.update({k: v for k, v in values.items() if v is not None})
    return {k: merged.get(k) for k in _DATA_KEYS}


def _tokenize_file(
    path: str | Path,
    training_type: str,
    tokenizer,
    max_seq_length: int,
    cache_dir: str | Path | None,
    scanned: ScannedFile | None = None,
) -> tuple[DataReport, TokenizedData, bool]:
    """Check and tokenize one file, through the cache when a cache_dir is given.

    `scanned`: the file as the pre-start checks already parsed it (used if the file has not
    changed since). The returned data's `kept` holds the file line number of every example."""
    if training_type == "sft":
        require_chat_template(tokenizer)  # fail before reading a large file
    key = None
    if cache_dir is not None and Path(path).is_file():
        key = _cache.cache_key(
            _cache.file_digest(path),
            _cache.tokenizer_fingerprint(tokenizer),
            training_type,
            max_seq_length if training_type == "sft" else None,
        )
        hit = _cache.load_entry(cache_dir, key)
        if hit is not None:
            return hit[0], hit[1], True
    if scanned is not None and scanned.is_current(path, training_type):
        report, records, line_numbers = scanned.report, scanned.records, scanned.line_numbers
    else:
        report, records, line_numbers = scan_file(path, training_type)
    if training_type == "sft":
        try:
            data = tokenize_conversations(records, tokenizer, max_seq_length)
        except DataError as exc:
            if exc.record is None:
                raise
            raise DataError(f"{path}, line {line_numbers[exc.record]}: {exc}") from exc
        if len(data) == 0:
            raise DataError(
                f"every conversation in {path} lost all its assistant tokens to truncation at "
                f"max_seq_length={max_seq_length}; raise max_seq_length or shorten the prompts"
            )
    else:
        data = tokenize_documents(records, tokenizer)
    data.kept = np.asarray(line_numbers, dtype=np.int64)[data.kept]
    if key is not None:
        _cache.save_entry(cache_dir, key, report, data)
    return report, data, False


def _gather(data: TokenizedData, order: np.ndarray) -> TokenizedData:
    """The examples `order` of `data`, as a new contiguous TokenizedData."""
    starts, ends = data.offsets[order], data.offsets[order + 1]
    lengths = ends - starts
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    positions = np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return TokenizedData(
        input_ids=data.input_ids[positions],
        labels=None if data.labels is None else data.labels[positions],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        kept=data.kept[order],
    )


def _split(n: int, seed: int, max_samples: int, ratio: float, split: bool) -> tuple[np.ndarray, np.ndarray | None]:
    order = np.random.default_rng(seed).permutation(n)
    if max_samples and max_samples > 0:
        order = order[:max_samples]
    if not split:
        return order, None
    n_eval = max(1, int(round(len(order) * ratio)))
    if len(order) - n_eval < 1:
        raise DataError(
            f"eval_split_ratio={ratio} leaves no training examples out of {len(order)}; "
            "lower the ratio, add data, or give an eval_file"
        )
    return order[n_eval:], np.sort(order[:n_eval])


def load_datasets(
    values: Mapping[str, Any],
    training_type: str,
    tokenizer,
    *,
    cache_dir: str | Path | None = None,
    scans: Mapping[str, ScannedFile] | None = None,
) -> PreparedData:
    """Check, tokenize, sample and split the task's data (see the module docstring for the order).

    `scans` maps a data file path (as given in values) to its already checked contents, so a
    file checked before start is not parsed twice. Raises DataError for unusable files or
    settings before any training work starts."""
    scans = scans or {}
    started = time.perf_counter()
    opts = _options(values)
    if not opts["train_file"]:
        raise DataError("train_file is required: give the path of the training data file")
    max_len = int(opts["max_seq_length"])
    seed = int(opts["seed"])
    ratio = float(opts["eval_split_ratio"] or 0.0)
    eval_file = opts["eval_file"] or None
    if training_type == "pretrain":
        sep = separator_id(tokenizer)  # fail early, before tokenizing

    report, data, hit = _tokenize_file(
        opts["train_file"], training_type, tokenizer, max_len, cache_dir, scans.get(str(opts["train_file"]))
    )
    eval_report = eval_file_data = None
    if eval_file:
        eval_report, eval_file_data, eval_hit = _tokenize_file(
            eval_file, training_type, tokenizer, max_len, cache_dir, scans.get(str(eval_file))
        )
        hit = hit and eval_hit
    train_idx, split_idx = _split(
        len(data), seed, int(opts["max_samples"] or 0), ratio, split=eval_file_data is None and ratio > 0
    )
    # Where eval examples come from: the eval file in file order, or the split-off part of train.
    eval_source: tuple[TokenizedData, np.ndarray] | None = None
    if eval_file_data is not None:
        eval_source = (eval_file_data, np.arange(len(eval_file_data)))
    elif split_idx is not None:
        eval_source = (data, split_idx)

    stats = DataStats(training_type=training_type, max_seq_length=max_len, cache_hit=hit)
    for counted in (data, eval_file_data):
        if counted is not None:
            stats.truncated += counted.truncated
            stats.dropped += counted.dropped
    if training_type == "sft":
        if not opts["reshuffle"] and length_grouping(opts, training_type):
            step_examples = int(opts["per_device_train_batch_size"]) * int(opts["gradient_accumulation_steps"])
            train_idx = length_grouped(train_idx, np.diff(data.offsets), step_examples)
        train = _gather(data, train_idx)
        evaluation = _gather(*eval_source) if eval_source else None
        stats.documents = len(train)
    else:
        train = pack_blocks(data, train_idx, sep, max_len)
        evaluation = pack_blocks(eval_source[0], eval_source[1], sep, max_len) if eval_source else None
        stats.documents = len(train_idx)
        if len(train) == 0:
            raise DataError(f"the pre-training data in {opts['train_file']} is too short to fill even one block")
    if evaluation is not None and len(evaluation) == 0:
        evaluation = None

    stats.examples = len(train)
    stats.lengths = train.lengths.tolist()
    stats.tokens = int(train.lengths.sum())
    stats.supervised_tokens = train.supervised_tokens()
    if evaluation is not None:
        stats.eval_examples = len(evaluation)
        stats.eval_lengths = evaluation.lengths.tolist()
        stats.eval_tokens = int(evaluation.lengths.sum())
    stats.seconds = time.perf_counter() - started
    sft = training_type == "sft"
    return PreparedData(
        train=train.to_dataset(),
        eval=evaluation.to_dataset() if evaluation is not None else None,
        report=report,
        stats=stats,
        sequential=not bool(opts["reshuffle"]),
        eval_report=eval_report,
        train_lines=train.kept.tolist() if sft else None,
        eval_lines=evaluation.kept.tolist() if sft and evaluation is not None else None,
    )
