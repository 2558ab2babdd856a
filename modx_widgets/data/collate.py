"""Batch collators: dynamic padding (default) and padding-free flattening (opt-in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .tokenize import IGNORE_INDEX


@dataclass
class PaddingCollator:
    """Pads a batch to its own longest example (never to max_seq_length).

    Padding is always on the right: training computes positions from 0 for every row, so right
    padding leaves real tokens at their true positions. Pads get attention_mask 0 and label -100.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if not features:
            raise ValueError("cannot collate an empty batch")
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = len(features)
        input_ids = np.full((rows, width), self.pad_token_id, dtype=np.int64)
        labels = np.full((rows, width), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((rows, width), dtype=np.int64)
        for i, (f, n) in enumerate(zip(features, lengths)):
            input_ids[i, :n] = f["input_ids"]
            labels[i, :n] = f["labels"] if "labels" in f else f["input_ids"]
            attention[i, :n] = f["attention_mask"] if "attention_mask" in f else 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
        }


def pad_id(tokenizer) -> int:
    """The pad id to use: the tokenizer's pad, else eos (pads are masked, any id works), else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def collator(tokenizer, pad_to_multiple_of: int | None = None) -> PaddingCollator:
    """Dynamic-padding collator for the data sets `load_datasets` returns."""
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of}")
    return PaddingCollator(pad_id(tokenizer), pad_to_multiple_of)


def flattening_collator():
    """Padding-free packing: a batch becomes one row with position_ids restarting per example.

    Examples stay isolated only when the attention implementation honours the position_ids
    boundaries (transformers builds a block-diagonal mask for sdpa/eager from them, and
    FlashAttention uses variable-length kernels) and the model runs with use_cache=False.
    The first label of every example is -100 so no example learns from its neighbour.
    """
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
