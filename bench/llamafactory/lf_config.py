"""Generate a LLaMA-Factory training config with the same hyperparameters as a modx_widgets task.

Why reuse `modx_widgets.config.build.argument_kwargs`: it is the one place that turns our form
values into Trainer arguments, so the LLaMA-Factory side follows any change there instead of
copying numbers. Only settings that change the optimisation are carried over; each tool keeps its
own defaults for everything else (logging output, progress bars, attention implementation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

# TrainingArguments that mean the same thing in both tools' transformers versions.
SHARED_ARGS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "optim",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "num_train_epochs",
    "max_steps",
    "weight_decay",
    "warmup_steps",
    "max_grad_norm",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "seed",
    "data_seed",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "fp16",
    "bf16",
)

# The LLaMA-Factory template that renders exactly what modx_widgets.testing's tokenizer renders:
# BOS, then ChatML turns. `check_template.py` proves it token by token (run by the benchmark).
DEFAULT_TEMPLATE = "cpm4"


def lf_train_config(
    values: Mapping[str, Any],
    *,
    model_dir: str | Path,
    dataset_dir: str | Path,
    dataset: str,
    output_dir: str | Path,
    template: str = DEFAULT_TEMPLATE,
    gradient_checkpointing: bool | None = None,
    same_order: bool = True,
    on_gpu: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config dict for `llamafactory-cli train` (SFT; LoRA, or full when use_lora is off).

    gradient_checkpointing: None keeps LLaMA-Factory's default (on, reentrant); True turns it on
    the way modx_widgets does (non-reentrant); False turns it off.
    same_order: True feeds the dataset file in its order when ours does (reshuffle off), so both
    tools see the same batches; False keeps LLaMA-Factory's default (a seeded random shuffle).
    """
    from modx_widgets.config.build import argument_kwargs

    ours = argument_kwargs(values, "sft", output_dir=str(output_dir), use_cpu=not on_gpu)
    cfg: dict[str, Any] = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
    }
    if values.get("use_lora", True):
        cfg.update({
            "finetuning_type": "lora",
            "lora_rank": int(values["lora_r"]),
            "lora_alpha": int(values["lora_alpha"]),
            "lora_dropout": float(values["lora_dropout"]),
            "lora_target": ",".join(values["lora_target_modules"]),
        })
    else:  # use_lora off in an SFT task: every weight trains, as in our engine
        cfg["finetuning_type"] = "full"
    cfg.update({
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": template,
        "cutoff_len": int(values["max_seq_length"]),
        "max_samples": int(values["max_samples"]) or None,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "report_to": "none",
    })
    cfg.update({k: ours[k] for k in SHARED_ARGS if k in ours})
    # Our "reshuffle off" means one fixed order; LLaMA-Factory spells that disable_shuffling.
    if same_order and ours.get("train_sampling_strategy") == "sequential":
        cfg["disable_shuffling"] = True
    if gradient_checkpointing is False:
        cfg["disable_gradient_checkpointing"] = True
    elif gradient_checkpointing is True:
        cfg["disable_gradient_checkpointing"] = False
        cfg["use_reentrant_gc"] = False
    if cfg["max_samples"] is None:
        del cfg["max_samples"]
    if extra:
        cfg.update(extra)
    return cfg


def write_config(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write `cfg` as YAML (JSON is valid YAML, the fallback when PyYAML is absent)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        import yaml

        text = yaml.safe_dump(dict(cfg), sort_keys=False)
    except ImportError:  # pragma: no cover - PyYAML ships with our environment
        text = json.dumps(dict(cfg), indent=2)
    p.write_text(text, encoding="utf-8")
    return p
