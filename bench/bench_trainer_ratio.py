"""Does the modx_widgets engine cost training speed?  Engine vs a hand-written Trainer script.

Both sides train the same LoRA SFT task (same model, data, seed, arguments, logging_steps=1),
each run in a fresh process of its own, interleaved (engine, plain, plain, engine, ...) so
drifting machine load hits both alike. Why one process per run: torch's OpenMP thread pool
belongs to the thread that first runs a parallel op. Once the main thread of a process has
trained, a second pool for a training thread makes both pools' workers sleep instead of spin
between ops (libgomp throttles spinning when it manages more threads than there are cores),
and small ops get several times slower -- in-process pairs measured that, not the engine. A
fresh process is what a fresh kernel gives the widget (docs/performance.md, "Threads").  The engine side is what the widget runs when Start is clicked: a `TrainingRun`
(training in a kernel thread) with a live `RunMonitor` attached: it gets every Log event and
renders them (throttled) headless, through a stand-in comm that JSON-encodes each message as
the kernel would.  The plain side is transformers + peft in the main thread, as a user would
write it.

Only the training loop is timed (train begin -> train end, by a callback added to both).  The
same callback records the real (non-pad) tokens of every batch collated; the two sides must
feed identical batches (checked: reshuffle is off, and the engine's `group_by_length` and
`padding_free` are off when the schema has them, so both pad batches in the file order).

    python bench/bench_trainer_ratio.py                      # tiny, then small model
    python bench/bench_trainer_ratio.py --model small --steps 40 --repeats 5 --threads 1
    python bench/bench_trainer_ratio.py --quick              # tiny only, 2 pairs, 1 thread (~20 s)

Prints min/median/max per side and the ratio engine/plain of real tokens/s (target >= 0.98),
per pair of runs, by wall time and by CPU time of the training process (the CPU figure is the fairer
one on a machine shared with other jobs, where wall time mostly measures the neighbours), and
RESULT lines for bench/run_all.sh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "llamafactory"))

from harness import result_line  # noqa: E402  (shared RESULT format)

TARGET = 0.98
COMM_MESSAGES = [0]  # widget messages encoded so far (shows that the monitor really renders)


def _encoding_comms() -> None:
    """Widgets get a comm that JSON-encodes what it would send, so the monitor pays roughly
    what it pays in a kernel (minus the zmq send) instead of the free no-op default comm."""
    import comm

    class EncodingComm(comm.DummyComm):
        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                        **keys: Any) -> None:
            json.dumps(data, default=str)
            COMM_MESSAGES[0] += 1

    comm.create_comm = lambda *args, **kwargs: EncodingComm(*args, **kwargs)


def _recorder() -> Any:
    """A Trainer callback for both sides: times the training loop, counts each batch's real tokens."""
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.end = self.cpu_start = self.cpu_end = 0.0
            self.batch_tokens: list[int] = []

        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            loader = train_dataloader  # accelerate's DataLoaderShard wraps the torch DataLoader
            while loader is not None and "base_dataloader" in vars(loader):
                loader = loader.base_dataloader
            if loader is not None:  # its iterator (which reads collate_fn) is created after this event
                collate = loader.collate_fn

                def counting(features: Any) -> Any:
                    batch = collate(features)
                    mask = batch.get("attention_mask")  # CPU tensor here: no device sync
                    self.batch_tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
                    return batch

                loader.collate_fn = counting
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kw):
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

        @property
        def seconds(self) -> tuple[float, float]:
            """(wall, CPU) seconds of the training loop."""
            return self.end - self.start, self.cpu_end - self.cpu_start

    return Recorder()


def make_values(root: Path, model: str, steps: int, seq: int, batch: int, accum: int) -> dict[str, Any]:
    from modx_widgets.schema.spec import load_schema
    from modx_widgets.testing import make_sft_data, make_small_model, make_tiny_model

    model_dir = root / "model"
    (make_small_model if model == "small" else make_tiny_model)(model_dir)
    data = make_sft_data(root / "train.jsonl", n=max(64, steps * batch * accum), seed=3)
    values = dict(
        train_file=str(data), model_path=str(model_dir), output_dir=str(root / "out"),
        max_seq_length=seq, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=2, max_steps=steps, logging_steps=1,
        save_strategy="no", eval_strategy="no", fp16=False, gradient_checkpointing=False,
        dataloader_num_workers=0, lora_r=16, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"],
        optim="adamw_torch", seed=11, reshuffle=False,
    )
    schema_keys = load_schema().defaults()
    # the plain script feeds padded batches in the file order; so must the engine
    for key in ("group_by_length", "padding_free"):
        if key in schema_keys:
            values[key] = False
    return values


def run_engine(root: Path, values: dict[str, Any], index: int) -> tuple[tuple[float, float], list[int]]:
    """Train as the widget does: TrainingRun in a thread, RunMonitor attached (headless)."""
    from modx_widgets.run import TrainingRun
    from modx_widgets.store import Workspace
    from modx_widgets.ui.monitor import RunMonitor

    ws = Workspace(root / "ws")
    name = f"bench_{index}"
    ws.create_task(name, "sft", None, "cpu", {**values, "output_dir": str(root / "out" / name)})
    recorder = _recorder()
    run = TrainingRun(ws, name)
    run.extra_callbacks.append(recorder)
    monitor = RunMonitor()
    monitor.attach(run, history=None, log_level=values.get("log_level"))
    run.start()
    state = run.wait()
    monitor.detach()
    if state != "Completed":
        raise SystemExit(f"engine run ended {state}: {ws.read_status(name).message}")
    logged = len(monitor.data.train_loss)
    if logged < values["max_steps"]:  # logging_steps=1: the monitor must have drawn every step
        raise SystemExit(f"the monitor received {logged} loss logs for {values['max_steps']} steps")
    return recorder.seconds, recorder.batch_tokens


def run_plain(root: Path, values: dict[str, Any], index: int) -> tuple[tuple[float, float], list[int]]:
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
    recorder = _recorder()
    Trainer(model=model, args=args, train_dataset=data.train, data_collator=collator(tok), processing_class=tok,
            callbacks=[recorder]).train()
    return recorder.seconds, recorder.batch_tokens


SIDES = {"engine": "run_engine", "plain": "run_plain"}


def run_child(label: str, root: Path, values: dict[str, Any], index: int, threads: int) -> dict[str, Any]:
    """One run of one side in a fresh Python process; returns its timings and batch tokens."""
    spec = root / f"values_{label}_{index}.json"
    spec.write_text(json.dumps(values))
    cmd = [sys.executable, __file__, "--child", label, "--root", str(root), "--values", str(spec),
           "--index", str(index), "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("CHILD ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{label} run {index} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("CHILD "):])


def child_main(opts: argparse.Namespace) -> None:
    """The body of one measured process: train one side once, print one CHILD line."""
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    _encoding_comms()
    values = json.loads(Path(opts.values).read_text())
    (wall, cpu), batches = globals()[SIDES[opts.child]](Path(opts.root), values, opts.index)
    print("CHILD " + json.dumps({"wall": wall, "cpu": cpu, "batches": batches, "messages": COMM_MESSAGES[0]}))


def spread(xs: list[float]) -> str:
    return f"min {min(xs):8.3f}  median {statistics.median(xs):8.3f}  max {max(xs):8.3f}"


def bench_model(model: str, opts: argparse.Namespace) -> list[str]:
    """Interleaved engine/plain pairs on one model; prints the figures, returns its RESULT lines."""
    with tempfile.TemporaryDirectory(prefix="modx_bench_") as tmp:
        root = Path(tmp)
        values = make_values(root, model, opts.steps, opts.seq, opts.batch, opts.accum)
        used = opts.steps * opts.accum  # micro-batches that make up the timed optimizer steps
        for label in SIDES:  # warm-up: file caches of the libraries, the model and the data
            run_child(label, root, {**values, "max_steps": 2}, -1, opts.threads)
        times: dict[str, list[float]] = {"engine": [], "plain": []}
        cpu: dict[str, list[float]] = {"engine": [], "plain": []}
        tokens: dict[str, list[int]] = {"engine": [], "plain": []}
        reference: list[int] | None = None
        for i in range(opts.repeats):
            order = ("engine", "plain") if i % 2 == 0 else ("plain", "engine")
            for label in order:
                child = run_child(label, root, values, i, opts.threads)
                wall, used_cpu, batches, msgs = child["wall"], child["cpu"], child["batches"], child["messages"]
                if len(batches) < used:
                    raise SystemExit(f"{label}: {len(batches)} batches recorded for {used} micro-batches")
                if reference is None:
                    reference = batches[:used]
                elif batches[:used] != reference:  # different batches: the ratio would compare different work
                    raise SystemExit(f"{label} run {i} fed other batches (real tokens per batch "
                                     f"{batches[:8]}... vs {reference[:8]}...); check group_by_length/reshuffle")
                times[label].append(wall)
                cpu[label].append(used_cpu)
                tokens[label].append(sum(batches[:used]))
                print(f"[{model}] repeat {i + 1} {label:6s} {wall:.3f} s wall, {used_cpu:.3f} s CPU"
                      + (f", {msgs} widget messages" if label == "engine" else ""), flush=True)

    real = tokens["engine"][0]
    print(f"\nmodel={model} steps={opts.steps} batch={opts.batch} accum={opts.accum} seq={opts.seq} "
          f"logging_steps=1 real tokens per run={real} (same batches on both sides: checked)")
    for label in ("engine", "plain"):
        print(f"{label:6s} steps/s  {spread([opts.steps / t for t in times[label]])}")
        print(f"{label:6s} tokens/s {spread([n / t for n, t in zip(tokens[label], times[label])])}")
    # per pair i (engine run i, plain run i, back to back): engine tokens/s / plain tokens/s
    wall_ratios = [(ne / te) / (np_ / tp) for ne, te, np_, tp in
                   zip(tokens["engine"], times["engine"], tokens["plain"], times["plain"])]
    cpu_ratios = [(ne / ce) / (np_ / cp) for ne, ce, np_, cp in
                  zip(tokens["engine"], cpu["engine"], tokens["plain"], cpu["plain"])]
    med = statistics.median(wall_ratios)
    verdict = "ok" if med >= TARGET else "MISSED"
    print(f"\n[{model}] ratio engine/plain real tokens/s, per pair: median {med:.3f} "
          f"[{min(wall_ratios):.3f}..{max(wall_ratios):.3f}]  (target >= {TARGET}: {verdict})")
    print(f"[{model}] ratio engine/plain real tokens per CPU second (robust on a shared machine): "
          f"{statistics.median(cpu_ratios):.3f} [{min(cpu_ratios):.3f}..{max(cpu_ratios):.3f}]\n")
    return [result_line(f"engine_over_plain_tokens_per_s_{model}", wall_ratios, TARGET),
            result_line(f"engine_over_plain_tokens_per_cpu_s_{model}", cpu_ratios, TARGET)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny,small", help="tiny, small or tiny,small (default both)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved engine/plain pairs per model")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both sides (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes: tiny model only, 2 pairs, 1 thread")
    ap.add_argument("--child", choices=tuple(SIDES), help=argparse.SUPPRESS)  # internal: one measured run
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--values", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        child_main(opts)
        return
    if opts.quick:
        opts.model, opts.repeats = "tiny", 2
        opts.threads = opts.threads or 1
    models = [m.strip() for m in opts.model.split(",") if m.strip()]
    if not models or set(models) - {"tiny", "small"}:
        ap.error("--model takes tiny, small or tiny,small")
    results = [line for model in models for line in bench_model(model, opts)]
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
