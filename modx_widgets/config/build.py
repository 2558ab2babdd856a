"""Clean parameter values -> Hugging Face objects (`TrainingArguments`, `LoraConfig`).

This is the one place that knows how a form parameter becomes a Trainer setting, so the
rest of the engine never spells an argument name twice.  The mapping is pure: the same
values always give the same arguments, and `argument_kwargs` (no ML import) lets tests and
docs inspect it without building anything.  transformers and peft are imported inside the
functions that need them, never at module import.

Targets the transformers 5.x API: `warmup_ratio` is gone (a float `warmup_steps` below 1 is a
ratio), `group_by_length` became `train_sampling_strategy`, `gradient_checkpointing` is an
alias of `activation_checkpointing`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover - typing only
    from peft import LoraConfig
    from transformers import TrainingArguments

__all__ = [
    "PARAM_MAP",
    "BuildError",
    "Precision",
    "plan_precision",
    "argument_kwargs",
    "training_arguments",
    "lora_config",
    "lora_target_problem",
    "early_stopping_plan",
    "length_grouping",
    "padding_free",
    "sampling_strategy",
    "parse_device",
]

# Where each parameter goes.  Checked against the schema by the tests (every parameter must be
# listed), and rendered as the table in docs/engine.md.
PARAM_MAP: dict[str, str] = {
    "train_file": "data: load_datasets -> Trainer(train_dataset)",
    "eval_file": "data: load_datasets -> Trainer(eval_dataset)",
    "output_dir": "TrainingArguments.output_dir; final adapter/model + tokenizer saved there",
    "model_path": "AutoModelForCausalLM.from_pretrained",
    "tokenizer_path": "AutoTokenizer.from_pretrained (falls back to model_path)",
    "resume_from_checkpoint": "Trainer.train(resume_from_checkpoint=...)",
    "attach_lora": "PeftModel.from_pretrained(..., is_trainable=True) instead of a fresh adapter",
    "lora_adapter_path": "the adapter directory loaded by attach_lora",
    "max_samples": "data: keep the first N usable records",
    "eval_split_ratio": "data: seeded train/eval split",
    "reshuffle": "TrainingArguments.train_sampling_strategy ('random' or 'group_by_length' if on, 'sequential' if off)",
    "group_by_length": "data: length-grouped order (reshuffle off) / train_sampling_strategy='group_by_length' (on)",
    "dataloader_num_workers": "TrainingArguments.dataloader_num_workers",
    "dataloader_pin_memory": "TrainingArguments.dataloader_pin_memory",
    "per_device_train_batch_size": "TrainingArguments.per_device_train_batch_size (and per_device_eval_batch_size)",
    "gradient_accumulation_steps": "TrainingArguments.gradient_accumulation_steps",
    "max_seq_length": "data: truncation (SFT) / block size (pretrain)",
    "learning_rate": "TrainingArguments.learning_rate",
    "optim": "TrainingArguments.optim (adamw_8bit/paged_adamw_8bit -> bitsandbytes)",
    "lr_scheduler_type": "TrainingArguments.lr_scheduler_type",
    "num_train_epochs": "TrainingArguments.num_train_epochs (ignored when max_steps > 0)",
    "weight_decay": "TrainingArguments.weight_decay",
    "warmup_ratio": "TrainingArguments.warmup_steps as a float ratio < 1 (when warmup_steps is 0)",
    "warmup_steps": "TrainingArguments.warmup_steps as an int (wins when > 0)",
    "max_grad_norm": "TrainingArguments.max_grad_norm",
    "max_steps": "TrainingArguments.max_steps (> 0 wins over epochs; -1 = use epochs)",
    "lr_num_cycles": "TrainingArguments.lr_scheduler_kwargs['num_cycles'] (cosine_with_restarts only)",
    "save_strategy": "TrainingArguments.save_strategy",
    "save_steps": "TrainingArguments.save_steps",
    "eval_strategy": "TrainingArguments.eval_strategy",
    "eval_steps": "TrainingArguments.eval_steps",
    "save_total_limit": "TrainingArguments.save_total_limit",
    "save_interval_minutes": "IntervalSaveCallback sets control.should_save (unless save_strategy is 'no')",
    "early_stopping_patience": "EarlyStoppingCallback + metric_for_best_model='eval_loss', greater_is_better=False",
    "early_stopping_threshold": "EarlyStoppingCallback(early_stopping_threshold)",
    "use_lora": "peft.get_peft_model(model, LoraConfig) (SFT only)",
    "lora_r": "LoraConfig.r",
    "lora_alpha": "LoraConfig.lora_alpha",
    "lora_dropout": "LoraConfig.lora_dropout",
    "lora_target_modules": "LoraConfig.target_modules (checked against the model's modules)",
    "merge_lora": "merge_and_unload() -> output_dir/merged (safetensors, use_cache=True)",
    "peft_config_path": "LoraConfig from an adapter_config.json, replacing the LoRA form values",
    "fp16": "TrainingArguments.fp16 (CUDA only; fp32 with a warning on CPU)",
    "bf16": "TrainingArguments.bf16 (CUDA or CPU)",
    "tf32": "TrainingArguments.tf32 (Ampere+ CUDA only; off with a warning otherwise)",
    "padding_free": "data: DataCollatorWithFlattening instead of the padding collator (SFT only)",
    "gradient_checkpointing": "TrainingArguments.activation_checkpointing (use_reentrant=False)",
    "log_level": "TrainingArguments.log_level",
    "logging_steps": "TrainingArguments.logging_steps -> Log events",
    "seed": "TrainingArguments.seed/data_seed and set_seed() before the adapter is created",
}

# A warmup ratio of exactly 1.0 would read as "1 step" to transformers (floats >= 1 are step
# counts), so the ratio is kept just below 1; ceil(n * RATIO_CAP) is still n for any real n.
RATIO_CAP = 1.0 - 1e-9


class BuildError(ValueError):
    """The values cannot be turned into a Trainer configuration (message says what to change)."""


@dataclass(frozen=True)
class Precision:
    """The numeric formats a run will really use, and why they may differ from the form."""

    fp16: bool
    bf16: bool
    tf32: bool
    notes: tuple[str, ...] = field(default=())


def plan_precision(
    values: Mapping[str, Any], on_gpu: bool, *, bf16_gpu_ok: bool = True, tf32_ok: bool = True
) -> Precision:
    """Decide fp16/bf16/tf32 for the hardware; every change from the form gets a note.

    fp16 is a silent no-op on CPU and tf32 raises there, so neither is passed through: the run
    uses fp32 and the user is told.  bf16 autocast works on CPU and is kept.
    """
    fp16, bf16, tf32 = bool(values.get("fp16")), bool(values.get("bf16")), bool(values.get("tf32"))
    if fp16 and bf16:
        raise BuildError("fp16 and bf16 are both on: choose one mixed-precision format")
    notes: list[str] = []
    if fp16 and not on_gpu:
        fp16 = False
        notes.append("fp16 needs a CUDA GPU; on CPU this run trains in fp32")
    if bf16 and on_gpu and not bf16_gpu_ok:
        bf16 = False
        notes.append("this GPU does not support bf16; the run trains in fp32")
    if tf32 and not (on_gpu and tf32_ok):
        tf32 = False
        notes.append("tf32 needs an Ampere or newer NVIDIA GPU; it is off for this run")
    return Precision(fp16, bf16, tf32, tuple(notes))


def parse_device(device: str) -> tuple[str, int | None]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'all' | 'mps' -> (kind, index); kind in auto/cpu/cuda/all/mps."""
    text = (device or "auto").strip().lower()
    if text in ("auto", "cpu", "all", "mps"):
        return text, None
    if text in ("cuda", "gpu"):
        return "cuda", 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise BuildError(f"device {device!r} is not understood: use auto, cpu, cuda:N (e.g. cuda:0), all or mps")


def early_stopping_plan(values: Mapping[str, Any]) -> tuple[bool, str]:
    """(load_best_model_at_end, note).  Early stopping itself works either way.

    Loading the best model at the end needs a checkpoint at every evaluation: same save and
    eval strategy and save_steps a multiple of eval_steps.  When that does not hold, the run
    still stops early but keeps the last weights, and the note says so.
    """
    if int(values.get("early_stopping_patience") or 0) <= 0:
        return False, ""
    save, ev = values.get("save_strategy"), values.get("eval_strategy")
    if save == ev and save != "no":
        if save == "epoch" or int(values["save_steps"]) % int(values["eval_steps"]) == 0:
            return True, ""
        why = f"save_steps ({values['save_steps']}) is not a multiple of eval_steps ({values['eval_steps']})"
    else:
        why = f"save_strategy ({save}) differs from eval_strategy ({ev})"
    return False, (
        f"early stopping keeps the last weights, not the best evaluated ones, because {why}; "
        "align them to get the best model at the end"
    )


def padding_free(values: Mapping[str, Any], training_type: str) -> bool:
    """Whether SFT batches are flattened into one pad-free row (pre-training blocks never pad)."""
    return training_type == "sft" and bool(values.get("padding_free"))


def length_grouping(values: Mapping[str, Any], training_type: str) -> bool:
    """Whether the train order groups similar lengths: only where batches are padded at all."""
    return (
        training_type == "sft"
        and bool(values.get("group_by_length"))
        and int(values.get("per_device_train_batch_size") or 1) > 1
        and not padding_free(values, training_type)
    )


def sampling_strategy(values: Mapping[str, Any], training_type: str) -> str:
    """The Trainer's sampler. reshuffle off: the data room already fixed one (maybe grouped) order."""
    if not values.get("reshuffle"):
        return "sequential"
    return "group_by_length" if length_grouping(values, training_type) else "random"


def _warmup(values: Mapping[str, Any]) -> int | float:
    steps = int(values.get("warmup_steps") or 0)
    if steps > 0:
        return steps
    ratio = float(values.get("warmup_ratio") or 0.0)
    return min(ratio, RATIO_CAP) if ratio > 0 else 0


def argument_kwargs(
    values: Mapping[str, Any],
    training_type: str = "sft",
    *,
    output_dir: str | Path | None = None,
    precision: Precision | None = None,
    use_cpu: bool = False,
) -> dict[str, Any]:
    """The keyword arguments for `TrainingArguments`, as plain data (imports nothing heavy)."""
    if training_type not in ("sft", "pretrain"):
        raise BuildError(f"training_type must be 'sft' or 'pretrain', got {training_type!r}")
    out = output_dir if output_dir is not None else values.get("output_dir")
    if not out:
        raise BuildError("output_dir is empty: choose a folder for checkpoints and the final model")
    if precision is None:
        precision = plan_precision(values, on_gpu=not use_cpu)
    batch = int(values["per_device_train_batch_size"])
    kwargs: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=int(values["gradient_accumulation_steps"]),
        learning_rate=float(values["learning_rate"]),
        optim=values["optim"],
        lr_scheduler_type=values["lr_scheduler_type"],
        num_train_epochs=float(values["num_train_epochs"]),
        max_steps=int(values["max_steps"]) if int(values.get("max_steps") or -1) > 0 else -1,
        weight_decay=float(values["weight_decay"]),
        warmup_steps=_warmup(values),
        max_grad_norm=float(values["max_grad_norm"]),
        save_strategy=values["save_strategy"],
        save_steps=int(values["save_steps"]),
        save_total_limit=int(values["save_total_limit"]),
        eval_strategy=values["eval_strategy"],
        eval_steps=int(values["eval_steps"]),
        train_sampling_strategy=sampling_strategy(values, training_type),
        dataloader_num_workers=int(values["dataloader_num_workers"]),
        dataloader_pin_memory=bool(values["dataloader_pin_memory"]) and not use_cpu,
        fp16=precision.fp16,
        bf16=precision.bf16,
        activation_checkpointing=bool(values["gradient_checkpointing"]),
        log_level=values["log_level"],
        logging_strategy="steps",
        logging_steps=int(values["logging_steps"]),
        # The filter tests every micro-batch's loss for NaN in Python: a GPU->host sync per
        # micro-batch. Off, a NaN/inf loss reaches the log, where the engine warns about it.
        logging_nan_inf_filter=False,
        seed=int(values["seed"]),
        data_seed=int(values["seed"]),
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="no",  # ours counts real tokens without a host sync per batch
        save_only_model=False,  # optimizer, scheduler and RNG state are needed to resume exactly
        use_cpu=use_cpu,
    )
    if precision.tf32:
        kwargs["tf32"] = True
    if kwargs["activation_checkpointing"]:
        kwargs["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    if values["lr_scheduler_type"] == "cosine_with_restarts":
        kwargs["lr_scheduler_kwargs"] = {"num_cycles": int(values["lr_num_cycles"])}
    if int(values.get("early_stopping_patience") or 0) > 0:
        if values.get("eval_strategy") == "no":
            raise BuildError("early stopping needs evaluation: set eval_strategy to steps or epoch")
        load_best, _ = early_stopping_plan(values)
        kwargs.update(
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            load_best_model_at_end=load_best,
            restore_callback_states_from_checkpoint=True,  # patience counter survives a resume
        )
    return kwargs


def _cuda_facts() -> tuple[bool, bool, bool]:
    """(cuda available, bf16 on GPU ok, tf32 ok) -- imports torch, so only at build time."""
    import torch

    if not torch.cuda.is_available():
        return False, False, False
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_tf32_available

    return True, bool(is_torch_bf16_gpu_available()), bool(is_torch_tf32_available())


def training_arguments(
    values: Mapping[str, Any],
    training_type: str = "sft",
    *,
    output_dir: str | Path | None = None,
    device: str = "auto",
    **overrides: Any,
) -> "TrainingArguments":
    """Build `TrainingArguments` for clean (validated) values on `device`.

    `overrides` replace single arguments (tests and the benchmark use this); precision notes
    are available separately through `plan_precision` so the run can show them.
    """
    kind, index = parse_device(device)
    cuda, bf16_ok, tf32_ok = _cuda_facts()
    if kind in ("cuda", "all") and not cuda:
        raise BuildError(f"device {device!r} needs a CUDA GPU, and none is available: choose cpu or auto")
    if kind == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise BuildError("device 'mps' needs an Apple-silicon GPU, and none is available: choose cpu or auto")
    use_cpu = kind == "cpu" or (not cuda and kind != "mps")
    precision = plan_precision(values, on_gpu=not use_cpu, bf16_gpu_ok=bf16_ok, tf32_ok=tf32_ok)
    kwargs = argument_kwargs(values, training_type, output_dir=output_dir, precision=precision, use_cpu=use_cpu)
    kwargs.update(overrides)
    if kind == "cuda" and cuda:
        return _single_gpu_arguments(index or 0, kwargs)
    from transformers import TrainingArguments

    return TrainingArguments(**kwargs)


def _one_gpu_class() -> type:
    """A TrainingArguments subclass pinned to one GPU, created once and kept as a module global.

    Plain transformers takes cuda:0 and, in one process, every GPU (DataParallel).  The class
    lives at module level so the Trainer can pickle the arguments into training_args.bin.
    """
    cls = globals().get("OneGpuArguments")
    if cls is not None:
        return cls
    import torch
    from transformers import TrainingArguments

    class OneGpuArguments(TrainingArguments):
        @property
        def device(self) -> "torch.device":
            super().device  # let transformers/accelerate set up their state first
            torch.cuda.set_device(self._gpu_index)
            return torch.device("cuda", self._gpu_index)

        @property
        def n_gpu(self) -> int:
            super().n_gpu
            return 1

    OneGpuArguments.__module__ = __name__
    OneGpuArguments.__qualname__ = "OneGpuArguments"
    globals()["OneGpuArguments"] = OneGpuArguments
    return OneGpuArguments


def _single_gpu_arguments(index: int, kwargs: dict[str, Any]) -> "TrainingArguments":
    import torch

    if index >= torch.cuda.device_count():
        raise BuildError(f"cuda:{index} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    cls = _one_gpu_class()
    args = cls.__new__(cls)
    args._gpu_index = index  # read by .device during __post_init__
    args.__init__(**kwargs)
    return args


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def _lora_kwargs_from_file(path: str | Path) -> dict[str, Any]:
    """Read a PEFT adapter_config.json and keep what LoraConfig understands."""
    from dataclasses import fields as dc_fields

    from peft import LoraConfig

    p = Path(path)
    if p.is_dir():
        p = p / "adapter_config.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"peft_config_path: {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuildError(f"peft_config_path: {p} is not a JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise BuildError(f"peft_config_path: {p} must hold a JSON object (a PEFT adapter_config.json)")
    kind = str(raw.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise BuildError(f"peft_config_path: {p} is a {kind} config; only LoRA adapters are supported")
    known = {f.name for f in dc_fields(LoraConfig)}
    kwargs = {k: v for k, v in raw.items() if k in known and k not in ("peft_type", "base_model_name_or_path", "revision")}
    kwargs["task_type"] = "CAUSAL_LM"
    kwargs.pop("inference_mode", None)
    return kwargs


def lora_config(
    values: Mapping[str, Any], model: Any = None, *, training_type: str = "sft"
) -> "LoraConfig | None":
    """The LoRA adapter to create, or None (LoRA off, or pre-training which trains all weights).

    peft_config_path, when set, replaces r/alpha/dropout/targets from the form.  With `model`
    given, target modules the model does not have are an error that lists the ones it has.
    """
    if training_type != "sft" or not values.get("use_lora"):
        return None
    from peft import LoraConfig

    if values.get("peft_config_path"):
        kwargs = _lora_kwargs_from_file(values["peft_config_path"])
    else:
        targets = list(values.get("lora_target_modules") or [])
        if not targets:
            raise BuildError("lora_target_modules is empty: pick at least one module (e.g. q_proj, v_proj)")
        kwargs = dict(
            r=int(values["lora_r"]),
            lora_alpha=int(values["lora_alpha"]),
            lora_dropout=float(values["lora_dropout"]),
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
    try:
        config = LoraConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BuildError(f"the LoRA settings are not valid: {exc}") from None
    if model is not None:
        problem = lora_target_problem(config, model)
        if problem:
            raise BuildError(problem)
    return config


def _adaptable_names(model: Any) -> list[str]:
    """Short names of the model's layers LoRA can wrap (Linear, Embedding, GPT-2 Conv1D)."""
    names: set[str] = set()
    for full, module in model.named_modules():
        kind = type(module).__name__
        if full and kind in ("Linear", "Embedding", "Conv1D", "Conv2d", "Conv1d"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def lora_target_problem(config: Any, model: Any) -> str:
    """'' when every target module exists in `model`, else an actionable message."""
    targets = config.target_modules
    if targets is None or isinstance(targets, str):  # a regex or "all-linear": PEFT checks it
        return ""
    have = _adaptable_names(model)
    missing = sorted(t for t in targets if t not in have)
    if not missing:
        return ""
    return (
        f"LoRA target module(s) {', '.join(missing)} not found in this model. "
        f"Its adaptable layers are: {', '.join(have)}. Choose lora_target_modules among these."
    )
