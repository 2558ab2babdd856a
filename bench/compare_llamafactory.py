"""modx_widgets vs LLaMA-Factory on the same work: same model, same conversations, same hyperparameters.

    python bench/compare_llamafactory.py                 # everything, small model (about an hour on 2 busy cores)
    python bench/compare_llamafactory.py --quick         # tiny model, few conversations (a smoke run)
    python bench/compare_llamafactory.py --sections user,matched --repeats 5

Sections (each prints min/median/max over interleaved repeats; ratios are computed per pair):
  user     what a user waits for: whole process, command -> saved adapter, each tool with its own
           defaults (gradient checkpointing on in both). Ratio = LLaMA-Factory time / ours (target >= 1.3).
  matched  same settings, gradient checkpointing off on both, logging every step: real (non-pad)
           tokens/s of the training loop, ours / LLaMA-Factory (target >= 1.05); loss curves compared.
  data     preparing N conversations (default 100,000): our read + check + tokenize vs LLaMA-Factory's
           preprocessing (load, align, tokenize), both single-process, cold caches.
  start    command -> first optimizer step (fresh process) for both tools; ours also from
           TrainingRun.start() in a warmed kernel (imports preloaded, like the widget).
  memory   peak RSS of LoRA vs full fine-tuning (6 steps), both tools.

LLaMA-Factory lives in its own virtual environment (bench/llamafactory/setup.sh, run automatically
when missing). Both tools run as separate processes with the same probe (bench/llamafactory/
timing_hook) so they are timed by identical code. Results also go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH / "llamafactory"))

from harness import (  # noqa: E402
    OFFLINE_ENV,
    RunFailed,
    RunResult,
    compare_losses,
    fmt_spread,
    result_line,
    run_probed,
    spread,
)
from lf_config import DEFAULT_TEMPLATE, lf_train_config, write_config  # noqa: E402
from lf_data import convert_jsonl  # noqa: E402

LF_VENV = Path(os.environ.get("LF_VENV", BENCH / "_work" / "lf-venv"))
WORK = BENCH / "_work" / "compare"
RESULTS = BENCH / "results"
SECTIONS = ("user", "matched", "data", "start", "memory")
TARGETS = {"user": 1.3, "matched": 1.05}


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------


def ensure_lf_venv() -> Path:
    """The llamafactory-cli of the benchmark venv; builds the venv on first use."""
    cli = LF_VENV / "bin" / "llamafactory-cli"
    if not cli.exists():
        print(f"[setup] LLaMA-Factory venv missing at {LF_VENV}: running bench/llamafactory/setup.sh", flush=True)
        subprocess.run(["bash", str(BENCH / "llamafactory" / "setup.sh")], check=True)
    return cli


def our_cli() -> Path:
    cli = Path(sys.executable).parent / "modx-train"
    if not cli.exists():
        found = shutil.which("modx-train")
        if not found:
            sys.exit("modx-train is not installed in this environment: pip install -e '.[train]' first")
        cli = Path(found)
    return cli


class Workload:
    """The model, the conversations and their LLaMA-Factory conversion, built once per invocation."""

    def __init__(self, model: str, conversations: int, max_seq_length: int, seed: int = 0) -> None:
        from modx_widgets.testing import make_sft_data, make_small_model, make_tiny_model

        self.root = WORK / f"{model}_{conversations}"
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        build = make_small_model if model == "small" else make_tiny_model
        self.model_name = model
        self.model_dir = build(self.root / "model")
        self.train_file = make_sft_data(self.root / "train.jsonl", n=conversations, seed=seed)
        self.conversations = conversations
        self.max_seq_length = max_seq_length
        self._runs = 0
        conv = convert_jsonl(self.train_file, self.root / "lf_data", order=self.our_training_order())
        if conv.skipped:
            sys.exit(f"{len(conv.skipped)} conversation(s) cannot be expressed in sharegpt: {conv.skipped[:3]}")
        self.lf_dataset_dir, self.lf_dataset = conv.dataset_dir, conv.dataset

    def our_training_order(self) -> list[int]:
        """Record indices in the order our engine feeds them (reshuffle off: one seeded order).

        Found by matching token sequences, not by re-implementing the data room's shuffle, so
        LLaMA-Factory (with disable_shuffling) sees the very same batches. Conversations our
        engine drops (assistant part truncated away) are left out of its file as well.
        """
        from transformers import AutoTokenizer

        from modx_widgets.data import load_datasets, tokenize_conversations

        tok = AutoTokenizer.from_pretrained(self.model_dir)
        prepared = load_datasets(self.values(), "sft", tok)
        with open(self.train_file, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
        tokenized = tokenize_conversations(records, tok, self.max_seq_length)
        by_ids: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(tokenized)):
            ids = tuple(int(t) for t in tokenized.input_ids[tokenized.offsets[i]:tokenized.offsets[i + 1]])
            by_ids.setdefault(ids, []).append(int(tokenized.kept[i]))
        return [by_ids[tuple(row)].pop(0) for row in prepared.train["input_ids"]]

    def values(self, **overrides: Any) -> dict[str, Any]:
        """Complete, validated modx values for this workload (schema defaults + overrides)."""
        from modx_widgets.config.validate import validate

        raw = {
            "train_file": str(self.train_file),
            "model_path": str(self.model_dir),
            "output_dir": str(self.root / "unused"),
            "max_seq_length": self.max_seq_length,
            "num_train_epochs": 1,
            **overrides,
        }
        result = validate(raw, "sft", check_paths=False)
        if result.errors:
            raise SystemExit(f"benchmark values rejected by validate(): {result.errors}")
        return result.values

    def fresh_dir(self, label: str) -> Path:
        self._runs += 1
        d = self.root / "runs" / f"{self._runs:03d}_{label}"
        d.mkdir(parents=True)
        return d


def run_ours(wl: Workload, values: dict[str, Any], label: str) -> RunResult:
    """`modx-train` on a task created beforehand (as the widget would have saved it)."""
    from modx_widgets.store import Workspace

    run_dir = wl.fresh_dir(f"ours_{label}")
    values = {**values, "output_dir": str(run_dir / "out")}
    ws = Workspace(run_dir / "workspace")
    ws.create_task("bench", "sft", None, "cpu", values, temporary=True)
    task_json = ws.task_dir("bench") / "task.json"
    result = run_probed("modx_widgets", [str(our_cli()), str(task_json)], run_dir)
    _require_adapter(run_dir / "out", values, result)
    return result


def run_lf(wl: Workload, values: dict[str, Any], label: str, *, gradient_checkpointing: bool | None,
           same_order: bool = True, extra: dict[str, Any] | None = None) -> RunResult:
    """`llamafactory-cli train cfg.yaml` with the same hyperparameters (and our batch order if same_order)."""
    run_dir = wl.fresh_dir(f"lf_{label}")
    cfg = lf_train_config(values, model_dir=wl.model_dir, dataset_dir=wl.lf_dataset_dir, dataset=wl.lf_dataset,
                          output_dir=run_dir / "out", gradient_checkpointing=gradient_checkpointing,
                          same_order=same_order, extra=extra)
    cfg_path = write_config(cfg, run_dir / "train.yaml")
    cmd = [str(ensure_lf_venv()), "train", str(cfg_path)]
    result = run_probed("llamafactory", cmd, run_dir, env_extra={"DISABLE_VERSION_CHECK": "1"})
    _require_adapter(run_dir / "out", values, result)
    return result


def _require_adapter(out: Path, values: dict[str, Any], result: RunResult) -> None:
    want = "adapter_model.safetensors" if values.get("use_lora") else "model.safetensors"
    if not (out / want).exists():
        raise RunFailed(f"{result.tool}: no {want} in {out}; see {result.log_path}")


def interleave(repeats: int, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[list, list]:
    """Run repeated pairs, alternating who goes first so drift on a shared machine hits both."""
    a, b = [], []
    for i in range(repeats):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
        print(f"  pair {i + 1}/{repeats} done", flush=True)
    return a, b


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def section_user(wl: Workload, repeats: int) -> dict[str, Any]:
    """(a) defaults of each tool, gradient checkpointing on in both: command -> saved adapter."""
    values = wl.values()
    if not values["gradient_checkpointing"]:
        raise SystemExit("section 'user' expects our default gradient_checkpointing to be on")
    # LLaMA-Factory's defaults: its own gradient checkpointing and its own (random) batch order;
    # ours: length-grouped batches (group_by_length is on by default).
    ours, lf = interleave(repeats, lambda: run_ours(wl, values, "user"),
                          lambda: run_lf(wl, values, "user", gradient_checkpointing=None, same_order=False))
    ratios = [b.wall_s / a.wall_s for a, b in zip(ours, lf)]
    return {
        "what": "whole process, command -> saved adapter; defaults (GC on both)",
        "ratio_name": "LLaMA-Factory wall / ours",
        "ratios": ratios,
        "target": TARGETS["user"],
        "ours": [asdict(r) for r in ours],
        "lf": [asdict(r) for r in lf],
        "rows": [
            ("wall time, s", [r.wall_s for r in ours], [r.wall_s for r in lf]),
            ("command -> first step, s", [r.first_step_s for r in ours], [r.first_step_s for r in lf]),
            ("training loop, s", [r.train_s for r in ours], [r.train_s for r in lf]),
            ("real tokens/s (loop)", [r.tokens_per_s for r in ours], [r.tokens_per_s for r in lf]),
        ],
    }


def section_matched(wl: Workload, repeats: int) -> dict[str, Any]:
    """(b) gradient checkpointing off on both, logging every step: steady real tokens/s + losses."""
    values = wl.values(gradient_checkpointing=False, logging_steps=1)
    ours, lf = interleave(repeats, lambda: run_ours(wl, values, "matched"),
                          lambda: run_lf(wl, values, "matched", gradient_checkpointing=False))
    ratios = [a.steady_tokens_per_s / b.steady_tokens_per_s for a, b in zip(ours, lf)]
    quiet = [a.quiet_tokens_per_s / b.quiet_tokens_per_s for a, b in zip(ours, lf)]
    cpu = [a.cpu_tokens_per_s / b.cpu_tokens_per_s for a, b in zip(ours, lf)]
    loss = compare_losses(ours[0].losses, lf[0].losses)
    return {
        "what": "matched settings, GC off both, logging_steps=1; real tokens/s of steps 2..N",
        "ratio_name": "ours tokens/s / LLaMA-Factory tokens/s",
        "ratios": ratios,
        "quiet_ratios": quiet,
        "cpu_ratios": cpu,
        "target": TARGETS["matched"],
        "loss": loss,
        "tokens": {"ours": [ours[0].real_tokens, ours[0].label_tokens], "lf": [lf[0].real_tokens, lf[0].label_tokens]},
        "ours": [asdict(r) for r in ours],
        "lf": [asdict(r) for r in lf],
        "rows": [
            ("real tokens/s (steps 2..N)", [r.steady_tokens_per_s for r in ours], [r.steady_tokens_per_s for r in lf]),
            ("real tokens/s (whole loop)", [r.tokens_per_s for r in ours], [r.tokens_per_s for r in lf]),
            ("real tokens/s (quietest quarter of steps)", [r.quiet_tokens_per_s for r in ours],
             [r.quiet_tokens_per_s for r in lf]),
            ("real tokens per CPU-second (steps 2..N)", [r.cpu_tokens_per_s for r in ours],
             [r.cpu_tokens_per_s for r in lf]),
            ("wall time, s", [r.wall_s for r in ours], [r.wall_s for r in lf]),
            ("final loss (last quarter)", [loss.get("final_a", float("nan"))], [loss.get("final_b", float("nan"))]),
        ],
    }


OURS_PREP = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from transformers import AutoTokenizer
    from modx_widgets.data.tokenize import tokenize_conversations
    train_file, model_dir, max_len, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tok = AutoTokenizer.from_pretrained(model_dir)
    t1 = time.perf_counter()
    with open(train_file, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    t2 = time.perf_counter()
    data = tokenize_conversations(records, tok, max_len)
    t3 = time.perf_counter()
    json.dump({"import_s": t1 - t0, "read_s": t2 - t1, "tokenize_s": t3 - t2, "examples": len(data),
               "real_tokens": int(len(data.input_ids)), "label_tokens": data.supervised_tokens()}, open(out, "w"))
    """
)

OURS_LOAD = textwrap.dedent(
    """
    import json, sys, time
    import datasets, pyarrow  # imported before the clock, as LLaMA-Factory's are before its own
    from transformers import AutoTokenizer
    from modx_widgets.data import load_datasets
    values = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    tok = AutoTokenizer.from_pretrained(values["model_path"])
    t0 = time.perf_counter()
    data = load_datasets(values, "sft", tok)
    t1 = time.perf_counter()
    json.dump({"load_s": t1 - t0, "examples": len(data.train)}, open(out, "w"))
    """
)


def _python_json(python: Path | str, code_or_script: list[str], run_dir: Path, tag: str,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    out = run_dir / f"{tag}.json"
    log = run_dir / f"{tag}.log"
    full_env = {**os.environ, **OFFLINE_ENV, "HF_DATASETS_CACHE": str(run_dir / f"{tag}_cache"), **(env or {})}
    full_env.pop("PYTHONPATH", None)
    with log.open("w") as f:
        proc = subprocess.run([str(python), *code_or_script, str(out)], stdout=f, stderr=subprocess.STDOUT,
                              env=full_env, cwd=str(run_dir))
    if proc.returncode != 0 or not out.exists():
        raise RunFailed(f"{tag} failed ({proc.returncode}); see {log}")
    return json.loads(out.read_text())


def section_data(wl: Workload, repeats: int, n: int) -> dict[str, Any]:
    """Tokenization throughput of n conversations, ours vs LLaMA-Factory, single process, cold."""
    from modx_widgets.testing import make_sft_data

    root = WORK / f"data_{n}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    data_file = make_sft_data(root / "train.jsonl", n=n, seed=1)
    conv = convert_jsonl(data_file, root / "lf_data")
    values = wl.values(train_file=str(data_file), output_dir=str(root / "unused"))
    lf_cfg = lf_train_config(values, model_dir=wl.model_dir, dataset_dir=conv.dataset_dir, dataset=conv.dataset,
                             output_dir=root / "lf_out")
    lf_python = ensure_lf_venv().parent / "python"
    values_file = root / "values.json"
    values_file.write_text(json.dumps(values))
    runs = {"ours_tokenize": [], "ours_load": [], "lf": []}

    def ours() -> None:
        d = Path(tempfile_dir(root, "ours"))
        r = _python_json(sys.executable, ["-c", OURS_PREP, str(data_file), str(wl.model_dir),
                                          str(values["max_seq_length"])], d, "prep")
        r2 = _python_json(sys.executable, ["-c", OURS_LOAD, str(values_file)], d, "load")
        runs["ours_tokenize"].append(r)
        runs["ours_load"].append(r2)

    def lf() -> None:
        d = Path(tempfile_dir(root, "lf"))
        cfg = write_config({**lf_cfg, "output_dir": str(d / "out")}, d / "train.yaml")
        runs["lf"].append(_python_json(lf_python, [str(BENCH / "llamafactory" / "lf_preprocess.py"), str(cfg)], d,
                                       "prep", env={"DISABLE_VERSION_CHECK": "1"}))

    interleave(repeats, ours, lf)
    ours_rate = [n / r["load_s"] for r in runs["ours_load"]]
    tok_rate = [n / (r["read_s"] + r["tokenize_s"]) for r in runs["ours_tokenize"]]
    lf_rate = [n / r["preprocess_s"] for r in runs["lf"]]
    return {
        "what": f"{n} conversations, single process, cold caches",
        "ratio_name": "ours conversations/s (load_datasets) / LLaMA-Factory (get_dataset)",
        "ratios": [a / b for a, b in zip(ours_rate, lf_rate)],
        "target": None,
        "runs": runs,
        "rows": [
            ("conversations/s, end to end", ours_rate, lf_rate),
            ("conversations/s, read + tokenize only", tok_rate, []),
            ("real tokens", [runs["ours_tokenize"][0]["real_tokens"]], [runs["lf"][0]["real_tokens"]]),
            ("label tokens", [runs["ours_tokenize"][0]["label_tokens"]], [runs["lf"][0]["label_tokens"]]),
        ],
    }


def tempfile_dir(root: Path, tag: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=f"{tag}_", dir=root)


WARM_START = textwrap.dedent(
    """
    import json, sys, threading, time
    from modx_widgets.store import Workspace
    from modx_widgets.run import TrainingRun, warmup_imports
    root, out, mode = sys.argv[1], sys.argv[-1], sys.argv[2]
    if mode == "warm":
        warmup_imports().join()
    first = threading.Event()
    def listener(event):
        if getattr(event, "kind", "") in ("progress", "log") and getattr(event, "step", 0) >= 1:
            first.set()
    run = TrainingRun(Workspace(root), "bench", listeners=[listener])
    t0 = time.perf_counter()
    run.start()
    first.wait(600)
    t1 = time.perf_counter()
    state = run.wait()
    json.dump({"start_to_first_step_s": t1 - t0, "state": state}, open(out, "w"))
    """
)


def section_start(wl: Workload, repeats: int, user: dict[str, Any] | None) -> dict[str, Any]:
    """Command -> first optimizer step (fresh process), and start() -> first step in a kernel."""
    from modx_widgets.store import Workspace

    values = wl.values(logging_steps=1, max_steps=3)
    if user:
        ours_cold = [r["first_step_s"] for r in user["ours"]]
        lf_cold = [r["first_step_s"] for r in user["lf"]]
    else:
        ours_runs, lf_runs = interleave(repeats, lambda: run_ours(wl, values, "start"),
                                        lambda: run_lf(wl, values, "start", gradient_checkpointing=None))
        ours_cold = [r.first_step_s for r in ours_runs]
        lf_cold = [r.first_step_s for r in lf_runs]
    kernel = {"cold": [], "warm": []}
    for mode in ("cold", "warm"):
        for _ in range(repeats):
            d = wl.fresh_dir(f"kernel_{mode}")
            Workspace(d / "ws").create_task("bench", "sft", None, "cpu", {**values, "output_dir": str(d / "out")},
                                            temporary=True)
            r = _python_json(sys.executable, ["-c", WARM_START, str(d / "ws"), mode], d, "start")
            if r["state"] != "Completed":
                raise RunFailed(f"kernel start run ended {r['state']}; see {d}")
            kernel[mode].append(r["start_to_first_step_s"])
    return {
        "what": "seconds to the end of the first optimizer step",
        "ratio_name": "LLaMA-Factory / ours (command -> first step)",
        "ratios": [b / a for a, b in zip(ours_cold, lf_cold)],
        "target": None,
        "rows": [
            ("command -> first step (fresh process), s", ours_cold, lf_cold),
            ("start() -> first step, cold kernel, s", kernel["cold"], []),
            ("start() -> first step, warmed kernel, s", kernel["warm"], []),
        ],
    }


def section_memory(wl: Workload, repeats: int) -> dict[str, Any]:
    """Peak RSS of LoRA vs full fine-tuning (10 optimizer steps, GC at each tool's default)."""
    steps = 6
    lora_v = wl.values(max_steps=steps)
    full_v = wl.values(max_steps=steps, use_lora=False)
    rows = {}
    for label, v in (("LoRA", lora_v), ("full", full_v)):
        ours, lf = interleave(repeats, lambda: run_ours(wl, v, f"mem_{label}"),
                              lambda: run_lf(wl, v, f"mem_{label}", gradient_checkpointing=None))
        rows[label] = ([r.peak_rss_mb for r in ours], [r.peak_rss_mb for r in lf])
    return {
        "what": f"peak RSS of the whole process, {steps} steps, {wl.model_name} model",
        "ratio_name": "ours full / ours LoRA",
        "ratios": [f / l for f, l in zip(rows["full"][0], rows["LoRA"][0])],
        "target": None,
        "rows": [(f"peak RSS {k}, MB", *rows[k]) for k in ("LoRA", "full")],
    }


# ---------------------------------------------------------------------------------------------
# Token-level check and report
# ---------------------------------------------------------------------------------------------


def check_same_tokens(wl: Workload) -> dict[str, Any]:
    """Prove both tools train on the same input tokens in the same order.

    LLaMA-Factory's preprocessing output (its template, its truncation) is compared example by
    example with what our engine's load_datasets feeds the Trainer.
    """
    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets

    values = wl.values()
    d = wl.fresh_dir("token_check")
    cfg = write_config(lf_train_config(values, model_dir=wl.model_dir, dataset_dir=wl.lf_dataset_dir,
                                       dataset=wl.lf_dataset, output_dir=d / "out"), d / "train.yaml")
    lf = _python_json(ensure_lf_venv().parent / "python",
                      [str(BENCH / "llamafactory" / "lf_preprocess.py"), str(cfg), "--dump", str(wl.conversations)],
                      d, "dump", env={"DISABLE_VERSION_CHECK": "1"})
    ours = load_datasets(values, "sft", AutoTokenizer.from_pretrained(wl.model_dir)).train
    same = sum(a == b["input_ids"] for a, b in zip(ours["input_ids"], lf["dump"]))
    ours_labels = sum(sum(1 for t in row if t != -100) for row in ours["labels"])
    return {
        "template": DEFAULT_TEMPLATE,
        "examples": [len(ours), lf["examples"]],
        "identical_input_ids": same,
        "real_tokens": [sum(len(r) for r in ours["input_ids"]), lf["real_tokens"]],
        "label_tokens": [ours_labels, lf["label_tokens"]],
    }


def verdict(ratios: list[float], target: float | None) -> str:
    if target is None or not ratios:
        return ""
    lo, med, _ = spread(ratios)
    if lo >= target:
        return f"target >= {target}: met in every pair"
    if med >= target:
        return f"target >= {target}: met at the median, not in every pair"
    return f"target >= {target}: NOT met"


def report(results: dict[str, Any]) -> str:
    lines = []
    meta = results["meta"]
    lines.append(f"modx_widgets vs LLaMA-Factory -- {meta['model']} model, {meta['conversations']} conversations, "
                 f"max_seq_length {meta['max_seq_length']}, {meta['repeats']} interleaved pair(s)")
    lines.append(f"machine: {meta['machine']}; median [min..max] over pairs")
    if "tokens" in results:
        t = results["tokens"]
        lines.append(f"same input tokens: {t['identical_input_ids']}/{t['examples'][0]} conversations identical "
                     f"(template {t['template']}); label tokens ours {t['label_tokens'][0]} vs "
                     f"LLaMA-Factory {t['label_tokens'][1]}")
    for name in SECTIONS:
        sec = results.get(name)
        if not sec:
            continue
        lines.append("")
        lines.append(f"[{name}] {sec['what']}")
        for label, ours, lf in sec["rows"]:
            right = fmt_spread(lf) if lf else "-"
            lines.append(f"  {label:44} ours {fmt_spread(ours):>26}   LLaMA-Factory {right:>26}")
        if sec["ratios"]:
            lines.append(f"  ratio {sec['ratio_name']}: {fmt_spread(sec['ratios'])}  {verdict(sec['ratios'], sec['target'])}")
        if sec.get("quiet_ratios"):
            lines.append(f"  same ratio on the quietest quarter of steps: {fmt_spread(sec['quiet_ratios'])}")
        if sec.get("cpu_ratios"):
            lines.append(f"  same ratio per CPU-second (robust to a busy machine): {fmt_spread(sec['cpu_ratios'])}")
        if "loss" in sec and sec["loss"].get("steps"):
            ls = sec["loss"]
            lines.append(f"  loss curves over {ls['steps']} steps: first-step |diff| {ls['first_abs_diff']:.4f}, "
                         f"mean |diff| {ls['mean_abs_diff']:.4f}, max {ls['max_abs_diff']:.4f}; "
                         f"last-quarter mean ours {ls['final_a']:.4f} vs LLaMA-Factory {ls['final_b']:.4f} "
                         f"({100 * ls['final_rel_diff']:.1f}% apart)")
    lines.append("")
    lines.extend(result_lines(results))
    return "\n".join(lines)


RESULT_NAMES = {
    "user": "lf_wall_over_ours_defaults",
    "matched": "ours_over_lf_tokens_per_s_matched",
    "data": "ours_over_lf_data_prep",
    "start": "lf_over_ours_first_step",
    "memory": "ours_full_over_lora_rss",
}


def result_lines(results: dict[str, Any]) -> list[str]:
    """Machine-readable summary lines collected by bench/run_all.sh (format in bench/README.md)."""
    out = []
    for name, metric in RESULT_NAMES.items():
        sec = results.get(name)
        if not sec or not sec["ratios"]:
            continue
        target = sec.get("target") or None
        out.append(result_line(metric, sec["ratios"], target))
        if sec.get("cpu_ratios"):
            out.append(result_line(f"{metric}_per_cpu_second", sec["cpu_ratios"], target))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", choices=("tiny", "small"), default="small")
    ap.add_argument("--conversations", type=int, default=128, help="training conversations (1 epoch)")
    ap.add_argument("--max-seq-length", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved pairs per measurement")
    ap.add_argument("--prep-conversations", type=int, default=100_000, help="conversations for the data section")
    ap.add_argument("--data-repeats", type=int, default=2, help="pairs for the data section")
    ap.add_argument("--memory-repeats", type=int, default=1, help="pairs for the memory section (RSS is stable)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true", help="tiny model, 48 conversations, 1 pair, 2,000 for data")
    ap.add_argument("--json", type=Path, default=None, help="where to write the raw results (default bench/results/)")
    ns = ap.parse_args(argv)
    if ns.quick:
        ns.model, ns.conversations, ns.repeats, ns.prep_conversations = "tiny", 48, 1, 2000
    wanted = [s.strip() for s in ns.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if ns.repeats < 1 or ns.conversations < 8:
        ap.error("--repeats must be >= 1 and --conversations >= 8")

    our_cli()
    ensure_lf_venv()
    t0 = time.perf_counter()
    wl = Workload(ns.model, ns.conversations, ns.max_seq_length)
    results: dict[str, Any] = {"meta": {
        "model": ns.model, "conversations": ns.conversations, "max_seq_length": ns.max_seq_length,
        "repeats": ns.repeats, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}",
        "versions": _versions(),
    }}
    out = ns.json or RESULTS / f"compare_llamafactory_{ns.model}.json"
    results["tokens"] = check_same_tokens(wl)
    print(f"[tokens] {results['tokens']}", flush=True)
    for name in wanted:
        print(f"[{name}] running ...", flush=True)
        if name == "user":
            results[name] = section_user(wl, ns.repeats)
        elif name == "matched":
            results[name] = section_matched(wl, ns.repeats)
        elif name == "data":
            results[name] = section_data(wl, min(ns.repeats, ns.data_repeats), ns.prep_conversations)
        elif name == "start":
            results[name] = section_start(wl, ns.repeats, results.get("user"))
        elif name == "memory":
            results[name] = section_memory(wl, min(ns.repeats, ns.memory_repeats))
        save(results, out)  # partial results survive a later failure
    results["meta"]["total_s"] = time.perf_counter() - t0
    text = report(results)
    print("\n" + text)
    save({**results, "report": text}, out)
    print(f"\nraw results: {out}")
    return 0


def save(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    ours = {p: md.version(p) for p in ("torch", "transformers", "peft") if _has(p)}
    lf_py = LF_VENV / "bin" / "python"
    lf = {}
    if lf_py.exists():
        code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
                "('llamafactory', 'torch', 'transformers', 'peft')}))")
        proc = subprocess.run([str(lf_py), "-c", code], capture_output=True, text=True)
        if proc.returncode == 0:
            lf = json.loads(proc.stdout)
    return {"ours": ours, "llamafactory": lf}


def _has(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
