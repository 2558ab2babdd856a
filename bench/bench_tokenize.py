"""Data-preparation throughput: conversations per second for N generated SFT conversations.

Measures, with min/median/max over repeats:
- modx `tokenize_conversations` (render + batched fast tokenizer + vectorised labels);
- modx `load_datasets` from a JSONL file without cache (check + parse + tokenize + split);
- modx `load_datasets` on a warm cache (what a second Start costs);
- a naive reference: `apply_chat_template(..., return_assistant_tokens_mask=True)` one
  conversation at a time (how a hand-written script usually does it), on a subset.

The LLaMA-Factory side of the comparison lives in the benchmark suite; it can call
`tokenize_conversations(records, tokenizer, max_seq_length)` on the same records.

Each repeat measures every path once (in reverse order on odd repeats, so drift hits all
alike); the ratios ours / naive are taken per repeat (pairs) and printed as median [min..max],
and as RESULT lines for bench/run_all.sh.

Usage: python bench/bench_tokenize.py [--n 100000] [--max-seq-length 1024] [--repeats 3]
       python bench/bench_tokenize.py --quick   # 2,000 conversations, 500 naive, 2 repeats (~10 s)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR / "llamafactory"))

from harness import result_line  # noqa: E402  (shared RESULT format)


def _spread(times: list[float], n: int) -> str:
    rates = sorted(n / t for t in times)
    return f"{rates[0]:>10.0f} {statistics.median(rates):>10.0f} {rates[-1]:>10.0f}"


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, all threads) for one call of fn.

    CPU time is the steadier figure on a shared machine: it ignores time spent waiting for a core."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="conversations (default 100000)")
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-n", type=int, default=5_000, help="conversations for the naive reference")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: --n 2000 --naive-n 500 --repeats 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.naive_n, args.repeats = 2_000, 500, 2

    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets, tokenize_conversations
    from modx_widgets.testing import generate_conversations, make_sft_data, make_tiny_model

    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def measure(name: str, n: int, fn: Callable[[], object]) -> None:
        w, c = _timed(fn)
        wall.setdefault(name, []).append(w)
        cpu.setdefault(name, []).append(c)
        counts[name] = n

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = AutoTokenizer.from_pretrained(make_tiny_model(root / "model"))
        data_file = make_sft_data(root / "sft.jsonl", n=args.n, seed=0)
        records = list(generate_conversations(args.n, seed=0))
        values = {"train_file": str(data_file), "max_seq_length": args.max_seq_length}
        naive = records[: args.naive_n]

        def naive_loop() -> None:
            for rec in naive:
                enc = tok.apply_chat_template(rec["messages"], return_dict=True, return_assistant_tokens_mask=True)
                ids = enc["input_ids"][: args.max_seq_length]
                _ = [i if m else -100 for i, m in zip(ids, enc["assistant_masks"])]

        out = tokenize_conversations(records[:100], tok, args.max_seq_length)  # compile the template once
        load_datasets({**values, "max_samples": 10}, "sft", tok)  # import datasets once, outside the timings
        for r in range(args.repeats):
            cache = root / f"cache{r}"
            load_datasets(values, "sft", tok, cache_dir=cache)  # fill the cache, untimed
            steps: list[tuple[str, int, Callable[[], object]]] = [
                ("tokenize", args.n, lambda: tokenize_conversations(records, tok, args.max_seq_length)),
                ("load (no cache)", args.n, lambda: load_datasets(values, "sft", tok)),
                ("load (warm cache)", args.n, lambda: load_datasets(values, "sft", tok, cache_dir=cache)),
                ("naive apply_chat_template", len(naive), naive_loop),
            ]
            for name, n, fn in steps if r % 2 == 0 else reversed(steps):
                measure(name, n, fn)
        out = tokenize_conversations(records, tok, args.max_seq_length)

    print(f"{args.n} conversations, {int(out.lengths.sum())} tokens after truncation at {args.max_seq_length}")
    print(f"{'conversations/s (wall)':<28} {'min':>10} {'median':>10} {'max':>10}   per CPU-second (median)")
    for name in wall:
        per_cpu = counts[name] / statistics.median(cpu[name])
        note = f"  (on {counts[name]})" if counts[name] != args.n else ""
        print(f"{name:<28} {_spread(wall[name], counts[name])}   {per_cpu:>10.0f}{note}")
    medians = {name: counts[name] / statistics.median(times) for name, times in wall.items()}
    naive_key = "naive apply_chat_template"

    def pair_ratios(name: str, clock: dict[str, list[float]]) -> list[float]:
        """Ours / naive conversations per second, repeat by repeat (same repeat: same machine load)."""
        return [(counts[name] / ours) / (counts[naive_key] / ref) for ours, ref in zip(clock[name], clock[naive_key])]

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):.2f}x [{min(xs):.2f}..{max(xs):.2f}]"

    tok_wall, tok_cpu = pair_ratios("tokenize", wall), pair_ratios("tokenize", cpu)
    load_wall = pair_ratios("load (no cache)", wall)
    print(f"ratio tokenize / naive (median [min..max] over {args.repeats} repeats): wall {fmt(tok_wall)}, "
          f"CPU {fmt(tok_cpu)}; load (no cache) / naive, wall {fmt(load_wall)}")
    print(result_line("tokenize_over_naive_conv_per_s", tok_wall))
    print(result_line("tokenize_over_naive_conv_per_cpu_s", tok_cpu))
    print(result_line("load_nocache_over_naive_conv_per_s", load_wall))
    return medians


if __name__ == "__main__":
    main()
