"""Does the modx_widgets engine cost training speed?  Engine vs a hand-written Trainer script.

Both sides train the same LoRA SFT task (same model, data, seed, arguments) in this process,
interleaved (engine, plain, engine, plain, ...) so drifting machine load hits both alike.
Only the training loop is timed (train begin -> train end, by a callback added to both).
Real tokens are the non-pad tokens of the examples consumed, identical on both sides, so
tokens/s follows steps/s; both are printed.

    python bench/bench_trainer_ratio.py                 # tiny model, quick
    python bench/bench_trainer_ratio.py --model small --steps 40 --repeats 5

Prints min/median/max per side and the ratio engine/plain of the medians (target >= 0.98),
by wall time and by CPU time of this process (the CPU figure is the fairer one on a machine
shared with other jobs, where wall time mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.end = self.cpu_start = self.cpu_end = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kw):
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

        @property
        def seconds(self) -> tuple[float, float]:
            """(wall, CPU) seconds of the training loop."""
            return self.end - self.start, self.cpu_end - self.cpu_start

    return Timer()


def make_values(root: Path, model: str, steps: int, seq: int, batch: int, accum: int) -> dict[str, Any]:
    from modx_widgets.testing import make_sft_data, make_small_model, make_tiny_model

    model_dir = root / "model"
    (make_small_model if model == "small" else make_tiny_model)(model_dir)
    data = make_sft_data(root / "train.jsonl", n=max(64, steps * batch * accum), seed=3)
    return dict(
        train_file=str(data), model_path=str(model_dir), output_dir=str(root / "out"),
        max_seq_length=seq, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=2, max_steps=steps, logging_steps=10,
        save_strategy="no", eval_strategy="no", fp16=False, gradient_checkpointing=False,
        dataloader_num_workers=0, lora_r=16, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"],
        optim="adamw_torch", seed=11, reshuffle=False,
    )


def run_engine(root: Path, values: dict[str, Any], index: int) -> tuple[float, float]:
    from modx_widgets.run import execute
    from modx_widgets.store import Workspace

    ws = Workspace(root / "ws")
    name = f"bench_{index}"
    ws.create_task(name, "sft", None, "cpu", {**values, "output_dir": str(root / "out" / name)})
    timer = _timer()
    state = execute(ws, name, None, threading.Event(), callbacks=[timer])
    if state != "Completed":
        raise SystemExit(f"engine run ended {state}: {ws.read_status(name).message}")
    return timer.seconds


def run_plain(root: Path, values: dict[str, Any], index: int) -> tuple[float, float]:
    """What a user would write by hand with transformers + peft (data prepared the same way)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from modx_widgets.data import collator, load_datasets

    set_seed(values["seed"])
    tok = AutoTokenizer.from_pretrained(values["model_path"])
    data = load_datasets(values, "sft", tok)
    model = AutoModelForCausalLM.from_pretrained(values["model_path"], dtype=torch.float32)
    model.config.use_cache = False
    set_seed(values["seed"])
    model = get_peft_model(model, LoraConfig(r=values["lora_r"], lora_alpha=values["lora_alpha"], lora_dropout=0.0,
                                             target_modules=values["lora_target_modules"], task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(root / "plain" / str(index)), per_device_train_batch_size=values["per_device_train_batch_size"],
        gradient_accumulation_steps=values["gradient_accumulation_steps"], learning_rate=values["learning_rate"],
        lr_scheduler_type=values["lr_scheduler_type"], warmup_steps=values["warmup_steps"],
        max_steps=values["max_steps"], logging_steps=values["logging_steps"], save_strategy="no", optim="adamw_torch",
        report_to="none", disable_tqdm=True, seed=values["seed"], use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="sequential", weight_decay=0.01,
    )
    timer = _timer()
    Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator(tok), processing_class=tok,
            callbacks=[timer]).train()
    return timer.seconds


def real_tokens(values: dict[str, Any]) -> int:
    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets

    data = load_datasets(values, "sft", AutoTokenizer.from_pretrained(values["model_path"]))
    used = values["max_steps"] * values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
    return sum(data.stats.lengths[:used])


def spread(xs: list[float]) -> str:
    return f"min {min(xs):8.3f}  median {statistics.median(xs):8.3f}  max {max(xs):8.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("tiny", "small"), default="tiny")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both sides (0: torch's default)")
    opts = ap.parse_args()
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)

    with tempfile.TemporaryDirectory(prefix="modx_bench_") as tmp:
        root = Path(tmp)
        values = make_values(root, opts.model, opts.steps, opts.seq, opts.batch, opts.accum)
        tokens = real_tokens(values)
        run_engine(root, {**values, "max_steps": 2}, -1)  # warm-up: imports, allocator, caches
        run_plain(root, {**values, "max_steps": 2}, -1)
        times: dict[str, list[float]] = {"engine": [], "plain": []}
        cpu: dict[str, list[float]] = {"engine": [], "plain": []}
        for i in range(opts.repeats):
            order = (("engine", run_engine), ("plain", run_plain)) if i % 2 == 0 else (
                ("plain", run_plain), ("engine", run_engine))
            for label, fn in order:
                wall, used = fn(root, values, i)
                times[label].append(wall)
                cpu[label].append(used)
                print(f"repeat {i + 1} {label:6s} {wall:.3f} s wall, {used:.3f} s CPU", flush=True)

    print(f"\nmodel={opts.model} steps={opts.steps} batch={opts.batch} accum={opts.accum} seq={opts.seq} "
          f"real tokens per run={tokens}")
    medians = {}
    for label in ("engine", "plain"):
        sps = [opts.steps / t for t in times[label]]
        tps = [tokens / t for t in times[label]]
        medians[label] = statistics.median(sps)
        print(f"{label:6s} steps/s  {spread(sps)}")
        print(f"{label:6s} tokens/s {spread(tps)}")
    ratio = medians["engine"] / medians["plain"]
    cpu_ratio = statistics.median(cpu["plain"]) / statistics.median(cpu["engine"])
    print(f"\nratio engine/plain (median steps/s): {ratio:.3f}  (target >= 0.98: {'ok' if ratio >= 0.98 else 'MISSED'})")
    print(f"ratio engine/plain (median steps per CPU second; robust on a shared machine): {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
