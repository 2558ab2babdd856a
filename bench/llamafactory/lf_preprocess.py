"""Time LLaMA-Factory's own SFT preprocessing; optionally dump what it produced.

Runs inside the LLaMA-Factory virtual environment (bench/_work/lf-venv), called by
bench/compare_llamafactory.py with a config file written by lf_config.py. It goes through the
same functions `llamafactory-cli train` uses (argument parsing, tokenizer + template, get_dataset),
so the time is what a user waits for before the first step, and the dumped examples are exactly
what the model is trained on (used to prove both tools feed identical tokens).

Usage: python lf_preprocess.py CONFIG.yaml OUT.json [--dump N]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--dump", type=int, default=0, help="write the first N tokenized examples")
    ns = ap.parse_args()

    t_import = time.perf_counter()
    import yaml  # LLaMA-Factory depends on PyYAML
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    t0 = time.perf_counter()
    with open(ns.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["overwrite_cache"] = True  # measure the work, never a cache hit
    model_args, data_args, training_args, _, _ = get_train_args(cfg)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    t1 = time.perf_counter()
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    t2 = time.perf_counter()

    train = module["train_dataset"]
    lengths = [len(x) for x in train["input_ids"]]
    label_tokens = sum(sum(1 for t in labels if t != -100) for labels in train["labels"])
    result = {
        "import_s": t0 - t_import,
        "setup_s": t1 - t0,
        "preprocess_s": t2 - t1,
        "examples": len(train),
        "real_tokens": sum(lengths),
        "label_tokens": label_tokens,
        "dump": [
            {"input_ids": train[i]["input_ids"], "labels": train[i]["labels"]}
            for i in range(min(ns.dump, len(train)))
        ],
    }
    with open(ns.out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
