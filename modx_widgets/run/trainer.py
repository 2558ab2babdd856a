"""The Trainer we run: stock `transformers.Trainer` plus a real-token counter.

Counting non-pad tokens with `include_num_input_tokens_seen` costs a host sync per batch; here
the count stays on the device and is read only when a log line is written (the Trainer syncs
for the loss at that moment anyway).  Imports transformers: only imported inside a run.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

try:  # present when transformers can import its notebook helpers
    from transformers.utils.notebook import NotebookProgressCallback
except Exception:  # pragma: no cover - depends on optional IPython bits
    NotebookProgressCallback = None  # type: ignore[assignment]

# Progress is ours: these would print bars or dicts into the notebook from the training thread.
PROGRESS_CALLBACKS = tuple(c for c in (ProgressCallback, PrinterCallback, NotebookProgressCallback) if c is not None)


class ModxTrainer(Trainer):
    """`Trainer` that counts real (attention-mask) tokens on the device, without syncing.

    `train_lengths` (the train set's example lengths, known from tokenizing) feed the
    length-grouped sampler directly; the stock Trainer would read every row to find them.
    """

    def __init__(self, *args: Any, train_lengths: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._real_tokens: torch.Tensor | None = None
        self._train_lengths = list(train_lengths) if train_lengths is not None else None
        for cls in PROGRESS_CALLBACKS:
            self.remove_callback(cls)

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = self._train_lengths
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and lengths is not None
            and dataset is not None
            and len(dataset) == len(lengths)
        ):
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths
            )
        return super()._get_train_sampler(train_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        for batch in batches:
            mask = batch.get("attention_mask") if hasattr(batch, "get") else None
            if mask is None:
                ids = batch.get("input_ids") if hasattr(batch, "get") else None
                if ids is None:
                    continue
                count = torch.tensor(ids.numel(), device=ids.device)
            else:
                count = mask.sum()
            self._real_tokens = count if self._real_tokens is None else self._real_tokens + count
        return batches, num_items

    def real_tokens_seen(self) -> int:
        """Non-pad tokens fed so far in this `train()` call (one host sync)."""
        return 0 if self._real_tokens is None else int(self._real_tokens.item())
