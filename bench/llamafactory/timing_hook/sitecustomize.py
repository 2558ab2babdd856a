"""Benchmark probe loaded into both tools' training processes through PYTHONPATH.

Why a probe instead of each tool's own logs: the two tools log different things at different
times. This module adds the same measurement to whatever `transformers.Trainer` the process
builds, so modx_widgets and LLaMA-Factory are timed by identical code:
  * wall-clock times of train begin, every optimizer step end and train end, and the process's
    CPU time at each step end (far less sensitive than wall time to other work on a shared machine);
  * real (non-pad) input tokens and label tokens, counted on the CPU batch before the Trainer
    moves it to the device (no device synchronisation, nothing written during training);
  * every `on_log` record (loss curves).
It is inert unless BENCH_PROBE_FILE is set, and it imports nothing heavy itself: it waits for
`transformers.trainer` to be imported by the tool and patches the Trainer class then.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
import time

_T_START = time.time()
_FILE = os.environ.get("BENCH_PROBE_FILE")


def _count(inputs):
    """(real input tokens, label tokens) of one micro-batch; tensors stay on the CPU."""
    try:
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        real = int(mask.sum()) if mask is not None else int(ids.numel())
        labels = inputs.get("labels")
        lab = int((labels != -100).sum()) if labels is not None else 0
        return real, lab
    except Exception:  # never break the run being measured
        return 0, 0


def _patch(trainer_module) -> None:
    from transformers import TrainerCallback

    Trainer = trainer_module.Trainer
    if getattr(Trainer, "_bench_probe", False):
        return

    class _Probe(TrainerCallback):
        def __init__(self) -> None:
            self.rec = {"process_start": _T_START, "steps": [], "logs": []}
            self.tokens = [0, 0]

        def on_train_begin(self, args, state, control, **kw):
            self.rec["train_begin"] = time.time()
            self.rec["max_steps"] = state.max_steps

        def on_step_end(self, args, state, control, **kw):
            self.rec["steps"].append(
                (state.global_step, time.time(), self.tokens[0], self.tokens[1], time.process_time())
            )

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                self.rec["logs"].append({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

        def on_train_end(self, args, state, control, **kw):
            self.rec["train_end"] = time.time()
            self.rec["real_tokens"], self.rec["label_tokens"] = self.tokens
            self._write()

        def _write(self) -> None:
            tmp = _FILE + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.rec, f)
            os.replace(tmp, _FILE)

    original_init = Trainer.__init__
    original_step = Trainer.training_step

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._bench_probe_cb = _Probe()
        self.add_callback(self._bench_probe_cb)

    def training_step(self, model, inputs, *args, **kwargs):
        probe = getattr(self, "_bench_probe_cb", None)
        if probe is not None:
            real, lab = _count(inputs)
            probe.tokens[0] += real
            probe.tokens[1] += lab
        return original_step(self, model, inputs, *args, **kwargs)

    Trainer.__init__ = __init__
    Trainer.training_step = training_step
    Trainer._bench_probe = True


class _TrainerFinder(importlib.abc.MetaPathFinder):
    """Let `transformers.trainer` load normally, then patch its Trainer class."""

    def find_spec(self, name, path, target=None):
        if name != "transformers.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


if _FILE:
    sys.meta_path.insert(0, _TrainerFinder())
