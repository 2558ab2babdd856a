"""How batches are built, measured: random pairs vs length-grouped vs padding-free packing.

Three `modx-train` runs of the same task that differ only in batching, interleaved over repeats,
each a separate process timed by the benchmark probe (bench/llamafactory/timing_hook):
  random        group_by_length off: batches pad to the longest of randomly drawn examples
  grouped       group_by_length on (the default): similar lengths share a batch
  padding_free  padding_free on: each batch is one row without pads (DataCollatorWithFlattening)
Ratios are real (non-pad) tokens per second of the training loop, per repeat, against `random`.
The final training loss of each mode is printed: the three train on the same examples, so it
should agree to within the noise that a different batch composition brings.

    python bench/bench_batching.py                  # small model (~19M), 128 conversations, 3 repeats
    python bench/bench_batching.py --quick          # tiny model, 48 conversations, 1 repeat
    python bench/bench_batching.py --gc off         # without gradient checkpointing
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH / "llamafactory"))

from harness import RunResult, result_line, run_probed  # noqa: E402

WORK = BENCH / "_work" / "batching"
MODES: dict[str, dict[str, Any]] = {
    "random": {"group_by_length": False, "padding_free": False},
    "grouped": {"group_by_length": True, "padding_free": False},
    "padding_free": {"group_by_length": False, "padding_free": True},
}


def modx_train() -> str:
    cli = Path(sys.executable).parent / "modx-train"
    found = str(cli) if cli.exists() else shutil.which("modx-train")
    if not found:
        sys.exit("modx-train is not installed in this environment: pip install -e '.[train]' first")
    return found


def build(model: str, conversations: int) -> tuple[Path, Path]:
    from modx_widgets.testing import make_sft_data, make_small_model, make_tiny_model

    root = WORK / f"{model}_{conversations}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    maker = make_small_model if model == "small" else make_tiny_model
    return maker(root / "model"), make_sft_data(root / "train.jsonl", n=conversations, seed=0)


def run_mode(root: Path, model_dir: Path, data: Path, mode: str, index: int, options: dict[str, Any]) -> RunResult:
    from modx_widgets.config.validate import validate
    from modx_widgets.store import Workspace

    run_dir = root / "runs" / f"{index:03d}_{mode}"
    raw = {"train_file": str(data), "model_path": str(model_dir), "output_dir": str(run_dir / "out"),
           "num_train_epochs": 1, **options, **MODES[mode]}
    checked = validate(raw, "sft", check_paths=True)
    if checked.errors:
        sys.exit(f"benchmark task rejected: {checked.errors}")
    workspace = Workspace(run_dir / "workspace")
    workspace.create_task("bench", "sft", None, "cpu", checked.values, temporary=True)
    task_json = workspace.task_dir("bench") / "task.json"
    return run_probed("modx_widgets", [modx_train(), str(task_json)], run_dir)


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", choices=("tiny", "small"), default="small")
    ap.add_argument("--conversations", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gc", choices=("on", "off"), default="on", help="gradient checkpointing (default on, as in the schema)")
    ap.add_argument("--quick", action="store_true", help="tiny model, 48 conversations, 1 repeat")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.model, ns.conversations, ns.repeats = "tiny", 48, 1
    options = {"max_seq_length": 512, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
               "gradient_checkpointing": ns.gc == "on", "logging_steps": 1, "save_strategy": "no"}
    model_dir, data = build(ns.model, ns.conversations)
    root = data.parent
    results: dict[str, list[RunResult]] = {m: [] for m in MODES}
    index = 0
    for repeat in range(ns.repeats):
        order = list(MODES) if repeat % 2 == 0 else list(reversed(MODES))  # drift hits every mode alike
        for mode in order:
            index += 1
            results[mode].append(run_mode(root, model_dir, data, mode, index, options))
        print(f"  repeat {repeat + 1}/{ns.repeats} done", flush=True)

    print(f"\nbatching -- {ns.model} model, {ns.conversations} conversations, batch 2 x accumulation 4, "
          f"gradient checkpointing {ns.gc}; median [min..max] over {ns.repeats} repeat(s)")
    print(f"{'mode':<14}{'loop s':>24}{'real tokens/s':>30}{'computed/real tokens':>24}{'final loss':>12}")
    for mode, runs in results.items():
        loop = spread([r.train_s for r in runs])
        tps = spread([r.tokens_per_s for r in runs])
        final = runs[-1].losses[-1][1] if runs[-1].losses else float("nan")
        computed = computed_over_real(model_dir, data, mode, options)
        print(f"{mode:<14}{loop[0]:>8.2f} [{loop[1]:.2f}..{loop[2]:.2f}]"
              f"{tps[0]:>14.0f} [{tps[1]:.0f}..{tps[2]:.0f}]{computed:>24.2f}{final:>12.4f}")
    print()
    for mode in ("grouped", "padding_free"):
        ratios = [a.tokens_per_s / b.tokens_per_s for a, b in zip(results[mode], results["random"])]
        med, lo, hi = spread(ratios)
        print(f"ratio {mode} / random, real tokens/s: {med:.3f} [{lo:.3f}..{hi:.3f}]")
        print(result_line(f"{mode}_over_random_tokens_per_s", ratios))
    return 0


def computed_over_real(model_dir: Path, data: Path, mode: str, options: dict[str, Any]) -> float:
    """Tokens the model computes (pads included) per real token, from the order the engine feeds."""
    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets

    values = {"train_file": str(data), **options, **MODES[mode]}
    prepared = load_datasets(values, "sft", AutoTokenizer.from_pretrained(model_dir))
    lengths, batch = prepared.stats.lengths, int(options["per_device_train_batch_size"])
    if MODES[mode]["padding_free"]:
        return 1.0
    computed = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    return computed / sum(lengths)


if __name__ == "__main__":
    sys.exit(main())
