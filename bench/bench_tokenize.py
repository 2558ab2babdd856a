"""Data-preparation throughput: conversations per second for N generated SFT conversations.

Measures, with min/median/max over repeats:
- modx `tokenize_conversations` (render + batched fast tokenizer + vectorised labels);
- modx `load_datasets` from a JSONL file without cache (check + parse + tokenize + split);
- modx `load_datasets` on a warm cache (what a second Start costs);
- a naive reference: `apply_chat_template(..., return_assistant_tokens_mask=True)` one
  conversation at a time (how a hand-written script usually does it), on a subset.

The LLaMA-Factory side of the comparison lives in the benchmark suite; it can call
`tokenize_conversations(records, tokenizer, max_seq_length)` on the same records.

Usage: python bench/bench_tokenize.py [--n 100000] [--max-seq-length 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _spread(times: list[float], n: int) -> str:
    rates = sorted(n / t for t in times)
    return f"{rates[0]:>10.0f} {statistics.median(rates):>10.0f} {rates[-1]:>10.0f}"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="conversations (default 100000)")
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-n", type=int, default=5_000, help="conversations for the naive reference")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets, tokenize_conversations
    from modx_widgets.testing import generate_conversations, make_sft_data, make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = AutoTokenizer.from_pretrained(make_tiny_model(root / "model"))
        data_file = make_sft_data(root / "sft.jsonl", n=args.n, seed=0)
        records = list(generate_conversations(args.n, seed=0))
        values = {"train_file": str(data_file), "max_seq_length": args.max_seq_length}

        tokenize_conversations(records[:100], tok, args.max_seq_length)  # compile the template once
        results: dict[str, list[float]] = {"tokenize": [], "load (no cache)": [], "load (warm cache)": []}
        for r in range(args.repeats):
            t = time.perf_counter()
            out = tokenize_conversations(records, tok, args.max_seq_length)
            results["tokenize"].append(time.perf_counter() - t)
            t = time.perf_counter()
            load_datasets(values, "sft", tok)
            results["load (no cache)"].append(time.perf_counter() - t)
            cache = root / f"cache{r}"
            load_datasets(values, "sft", tok, cache_dir=cache)
            t = time.perf_counter()
            load_datasets(values, "sft", tok, cache_dir=cache)
            results["load (warm cache)"].append(time.perf_counter() - t)

        naive = records[: args.naive_n]
        naive_times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for rec in naive:
                enc = tok.apply_chat_template(rec["messages"], return_dict=True, return_assistant_tokens_mask=True)
                ids = enc["input_ids"][: args.max_seq_length]
                _ = [i if m else -100 for i, m in zip(ids, enc["assistant_masks"])]
            naive_times.append(time.perf_counter() - t)

    tokens = int(out.lengths.sum())
    print(f"{args.n} conversations, {tokens} tokens after truncation at {args.max_seq_length}")
    print(f"{'conversations/s':<24} {'min':>10} {'median':>10} {'max':>10}")
    for name, times in results.items():
        print(f"{name:<24} {_spread(times, args.n)}")
    print(f"{'naive apply_chat_template':<24} {_spread(naive_times, len(naive))}  (on {len(naive)})")
    medians = {name: args.n / statistics.median(times) for name, times in results.items()}
    medians["naive"] = len(naive) / statistics.median(naive_times)
    print(f"ratio tokenize / naive (median): {medians['tokenize'] / medians['naive']:.2f}x")
    return medians


if __name__ == "__main__":
    main()
