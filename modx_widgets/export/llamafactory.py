"""A task as a LLaMA-Factory training YAML, and back.

Only the settings both tools share travel; each direction returns, as plain sentences, what
did not carry over, so nothing is dropped silently.  Two things need a person anyway:
LLaMA-Factory reads data through `dataset_info.json` (the YAML's header shows the entry to
add), and it formats conversations with its own named templates (none is set, so it falls back
to the tokenizer's chat template).

Importing fills what the YAML leaves out with LLaMA-Factory's (and the Trainer's) defaults,
not ours, so the task trains what `llamafactory-cli train` would.  Everything of ours that
LLaMA-Factory has no word for takes our schema default.  PyYAML is imported when needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import __version__
from ..schema.spec import load_schema
from ..config.build import length_grouping, padding_free
from ._common import ExportError, check_training_type, clean_values, unpack_task

__all__ = ["from_llamafactory_yaml", "llamafactory_dataset_info", "to_llamafactory_yaml"]

# Our key -> LLaMA-Factory key, where only the name differs or nothing at all.
_SAME_MEANING: dict[str, str] = {
    "model_path": "model_name_or_path",
    "output_dir": "output_dir",
    "resume_from_checkpoint": "resume_from_checkpoint",
    "max_seq_length": "cutoff_len",
    "eval_split_ratio": "val_size",
    "dataloader_num_workers": "dataloader_num_workers",
    "dataloader_pin_memory": "dataloader_pin_memory",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "optim": "optim",
    "lr_scheduler_type": "lr_scheduler_type",
    "num_train_epochs": "num_train_epochs",
    "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio",
    "warmup_steps": "warmup_steps",
    "max_grad_norm": "max_grad_norm",
    "max_steps": "max_steps",
    "save_strategy": "save_strategy",
    "save_steps": "save_steps",
    "eval_strategy": "eval_strategy",
    "eval_steps": "eval_steps",
    "save_total_limit": "save_total_limit",
    "fp16": "fp16",
    "bf16": "bf16",
    "tf32": "tf32",
    "logging_steps": "logging_steps",
    "log_level": "log_level",
    "seed": "seed",
}
_LORA_SAME = {"lora_r": "lora_rank", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"}

# What LLaMA-Factory (or the HF Trainer under it) uses when a key is absent from its YAML.
_LF_DEFAULTS: dict[str, Any] = {
    "cutoff_len": 2048,
    "val_size": 0.0,
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": True,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-5,
    "optim": "adamw_torch",
    "lr_scheduler_type": "linear",
    "num_train_epochs": 3,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
    "max_steps": -1,
    "save_strategy": "steps",
    "save_steps": 500,
    "eval_strategy": "no",
    "fp16": False,
    "bf16": False,
    "tf32": False,
    "logging_steps": 500,
    "seed": 42,
    "lora_rank": 8,
    "lora_dropout": 0.0,
    "lora_target": "all",
    "finetuning_type": "lora",
    "stage": "sft",
}
_STAGES = {"sft": "sft", "pretrain": "pt"}
_OPTIM_ALIASES = {"adamw_torch_fused": "adamw_torch", "adamw_bnb_8bit": "adamw_8bit"}
# LLaMA-Factory keys that change nothing about what is trained (or are consumed elsewhere).
_QUIET = {
    "do_train", "do_eval", "report_to", "overwrite_output_dir", "overwrite_cache", "plot_loss",
    "preprocessing_num_workers", "ddp_timeout", "logging_dir", "run_name", "dataset_dir", "trust_remote_code",
    "per_device_eval_batch_size", "save_only_model", "logging_strategy", "disable_tqdm",
}


def _yaml():
    try:
        import yaml
    except ImportError:
        raise ExportError("the LLaMA-Factory export needs PyYAML: pip install pyyaml") from None
    return yaml


def _linear_targets() -> list[str]:
    """Our LoRA target options that are projections (what LLaMA-Factory's `all` means for Llama models)."""
    options = load_schema().params["lora_target_modules"].options or ()
    return [o for o in options if o.endswith("_proj")]


def llamafactory_dataset_info(values: Mapping[str, Any], training_type: str) -> dict[str, Any]:
    """The `dataset_info.json` entries LLaMA-Factory needs to find the task's data files."""
    check_training_type(training_type)
    entries: dict[str, Any] = {}
    for key in ("train_file", "eval_file"):
        if not values.get(key):
            continue
        name = Path(str(values[key])).name
        if training_type == "sft":
            entries[name] = {
                "file_name": name,
                "formatting": "sharegpt",
                "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"},
            }
        else:
            entries[name] = {"file_name": name, "columns": {"prompt": "text"}}
    return entries


# ----------------------------------------------------------------------------------- export


def _export_sections(v: dict[str, Any], training_type: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    notes: list[str] = []
    sft = training_type == "sft"
    lora = sft and v["use_lora"]
    model: dict[str, Any] = {"model_name_or_path": v["model_path"]}
    if lora and v["attach_lora"] and v["lora_adapter_path"]:
        model["adapter_name_or_path"] = v["lora_adapter_path"]
    method: dict[str, Any] = {
        "stage": _STAGES[training_type], "do_train": True, "finetuning_type": "lora" if lora else "full",
    }
    if lora:
        method.update({lf: v[ours] for ours, lf in _LORA_SAME.items()})
        method["lora_target"] = ",".join(v["lora_target_modules"])
    train_file = Path(str(v["train_file"]))
    dataset: dict[str, Any] = {"dataset": train_file.name, "dataset_dir": str(train_file.parent)}
    if v["eval_file"]:
        eval_file = Path(str(v["eval_file"]))
        if eval_file.parent == train_file.parent:
            dataset["eval_dataset"] = eval_file.name
        else:
            notes.append(
                f"eval_file {eval_file}: LLaMA-Factory reads every data set from one dataset_dir "
                f"({train_file.parent}); copy the file there and set eval_dataset"
            )
    dataset["cutoff_len"] = v["max_seq_length"]
    if v["max_samples"] > 0:
        dataset["max_samples"] = v["max_samples"]
    if v["eval_split_ratio"] > 0:
        dataset["val_size"] = v["eval_split_ratio"]
    dataset["disable_shuffling"] = not v["reshuffle"]
    if not v["reshuffle"]:
        notes.append(
            "reshuffle=False: LLaMA-Factory's disable_shuffling keeps the file order, "
            "where modx_widgets shuffles once with the seed and keeps that order"
        )
    if length_grouping(v, training_type):
        notes.append(
            "group_by_length: LLaMA-Factory has no length-grouped order; its batches mix lengths at random, "
            "so it computes more padding tokens"
        )
    if padding_free(v, training_type):
        notes.append(
            "padding_free: not carried over; LLaMA-Factory's closest option is neat_packing, which packs "
            "examples into cutoff_len blocks rather than flattening each batch"
        )
    dataset["dataloader_num_workers"] = v["dataloader_num_workers"]
    dataset["dataloader_pin_memory"] = v["dataloader_pin_memory"]
    output = {"output_dir": v["output_dir"], "logging_steps": v["logging_steps"], "log_level": v["log_level"],
              "save_strategy": v["save_strategy"], "save_steps": v["save_steps"],
              "save_total_limit": v["save_total_limit"], "report_to": "none"}
    train_keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs",
                  "max_steps", "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm",
                  "optim", "fp16", "bf16", "tf32", "seed")
    train = {k: v[k] for k in train_keys}
    if v["lr_scheduler_type"] == "cosine_with_restarts":
        train["lr_scheduler_kwargs"] = {"num_cycles": v["lr_num_cycles"]}
    train["disable_gradient_checkpointing"] = not v["gradient_checkpointing"]
    if v["resume_from_checkpoint"]:
        train["resume_from_checkpoint"] = v["resume_from_checkpoint"]
    evaluation = {"eval_strategy": v["eval_strategy"], "eval_steps": v["eval_steps"],
                  "per_device_eval_batch_size": v["per_device_train_batch_size"]}
    if v["early_stopping_patience"] > 0:
        evaluation["early_stopping_steps"] = v["early_stopping_patience"]
        notes.append(
            f"early_stopping_threshold={v['early_stopping_threshold']}: LLaMA-Factory's early stopping "
            "counts any improvement (threshold 0)"
        )
    notes += _export_losses(v, training_type)
    sections = {"model": model, "method": method, "dataset": dataset, "output": output, "train": train,
                "eval": evaluation}
    return sections, notes


def _export_losses(v: dict[str, Any], training_type: str) -> list[str]:
    """Our settings LLaMA-Factory has no key for (only those that are set to something that matters)."""
    notes = []
    if v["tokenizer_path"]:
        notes.append(f"tokenizer_path {v['tokenizer_path']}: LLaMA-Factory loads the tokenizer from the model folder")
    if v["save_strategy"] != "no":
        notes.append(
            f"save_interval_minutes={v['save_interval_minutes']}: LLaMA-Factory saves by steps or epochs only"
        )
    if training_type == "sft" and v["use_lora"]:
        if v["merge_lora"]:
            notes.append(
                "merge_lora: merge afterwards with `llamafactory-cli export` (adapter_name_or_path, export_dir)"
            )
        if v["peft_config_path"]:
            notes.append(
                f"peft_config_path {v['peft_config_path']}: LLaMA-Factory takes LoRA settings only from the YAML; "
                "the form's lora_* values were written instead"
            )
        if v["attach_lora"] and not v["lora_adapter_path"]:
            notes.append("attach_lora is on but lora_adapter_path is empty")
    return notes


def to_llamafactory_yaml(values: Any, training_type: str | None = None) -> tuple[str, list[str]]:
    """(YAML text for `llamafactory-cli train`, what does not carry over) for a task's values.

    `values` is a dict of parameter values (or a TaskRecord); they are checked like a run would.
    """
    raw, kind, _, name = unpack_task(values, training_type)
    v = clean_values(raw, kind)
    sections, notes = _export_sections(v, kind)
    yaml = _yaml()
    entries = llamafactory_dataset_info(v, kind)
    info = [f"{json.dumps(k)}: {json.dumps(e)}," for k, e in entries.items()]
    header = [
        f"# LLaMA-Factory training config exported by modx_widgets {__version__}"
        + (f" from task {name!r}" if name else "") + ".",
        "# Run with: llamafactory-cli train THIS_FILE.yaml",
        f"# LLaMA-Factory finds data through {sections['dataset']['dataset_dir']}/dataset_info.json;",
        "# add these entries to its top-level object:",
        *[f"#   {line}" for line in info],
    ]
    if kind == "sft":
        header.append("# No `template` is set: LLaMA-Factory then uses the tokenizer's own chat template.")
    if notes:
        header.append("# Not carried over:")
        header += [f"#   - {n}" for n in notes]
    body = []
    for title, section in sections.items():
        body.append(f"\n### {title}")
        body.append(yaml.safe_dump(section, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip())
    return "\n".join(header) + "\n" + "\n".join(body) + "\n", notes


# ----------------------------------------------------------------------------------- import


def _dataset_file(name: str, dataset_dir: str) -> str:
    """The data file behind a LLaMA-Factory data set name: its dataset_info.json entry, else the name."""
    info_path = Path(dataset_dir).expanduser() / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        file_name = info[name]["file_name"]
    except (OSError, ValueError, KeyError, TypeError):
        file_name = name
    return str(Path(dataset_dir) / file_name)


def _converters(get: Callable[[str], Any], notes: list[str]) -> dict[str, Any]:
    """Our values from LLaMA-Factory keys that need more than a rename."""
    out: dict[str, Any] = {}
    max_samples = get("max_samples")
    out["max_samples"] = int(max_samples) if max_samples else 0
    out["reshuffle"] = not bool(get("disable_shuffling") or False)
    out["gradient_checkpointing"] = not bool(get("disable_gradient_checkpointing") or False)
    out["early_stopping_patience"] = int(get("early_stopping_steps") or 0)
    limit = get("save_total_limit")
    if limit is None:
        top = int(load_schema().params["save_total_limit"].maximum or 0)
        out["save_total_limit"] = top
        notes.append(f"save_total_limit: unlimited in LLaMA-Factory, imported as the largest allowed ({top})")
    eval_steps = get("eval_steps")
    out["eval_steps"] = eval_steps if eval_steps is not None else get("logging_steps")  # the Trainer's rule
    kwargs = get("lr_scheduler_kwargs")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except ValueError:
            kwargs = None
    if isinstance(kwargs, dict) and "num_cycles" in kwargs:
        out["lr_num_cycles"] = kwargs["num_cycles"]
        if set(kwargs) - {"num_cycles"}:
            notes.append(f"lr_scheduler_kwargs {kwargs}: only num_cycles carries over")
    elif kwargs:
        notes.append(f"lr_scheduler_kwargs {kwargs}: only num_cycles carries over")
    optim = get("optim")
    if optim in _OPTIM_ALIASES:
        notes.append(f"optim {optim} imported as {_OPTIM_ALIASES[optim]} (same algorithm)")
        optim = _OPTIM_ALIASES[optim]
    out["optim"] = optim
    epochs = get("num_train_epochs")
    out["num_train_epochs"] = int(epochs) if isinstance(epochs, float) and epochs.is_integer() else epochs
    return out


def from_llamafactory_yaml(text: str) -> tuple[dict[str, Any], str, list[str]]:
    """(complete values, training_type, what does not carry over) from a LLaMA-Factory training YAML.

    Keys the YAML leaves out take LLaMA-Factory's defaults; values outside our ranges or
    options are not imported (our default stays) and are listed.
    """
    yaml = _yaml()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExportError(f"not a readable YAML file: {exc}") from None
    if not isinstance(doc, dict):
        raise ExportError("a LLaMA-Factory config is a YAML mapping of key: value lines")
    notes: list[str] = []
    get = lambda key: doc.get(key, _LF_DEFAULTS.get(key))  # noqa: E731
    stage = get("stage")
    kinds = {lf: ours for ours, lf in _STAGES.items()}
    if stage not in kinds:
        raise ExportError(f"stage {stage!r} has no equivalent here: only sft and pt (pre-training) can be imported")
    training_type = kinds[stage]

    values: dict[str, Any] = {ours: get(lf) for ours, lf in _SAME_MEANING.items() if get(lf) is not None}
    values.update(_converters(get, notes))
    finetuning = get("finetuning_type")
    use_lora = training_type == "sft" and finetuning == "lora"
    if finetuning not in ("lora", "full"):
        notes.append(f"finetuning_type {finetuning}: imported as full fine-tuning (all weights)")
    if training_type == "pretrain" and finetuning == "lora":
        notes.append("finetuning_type lora: pre-training here trains all weights; the LoRA settings were dropped")
    values["use_lora"] = use_lora if training_type == "sft" else load_schema().params["use_lora"].default
    if use_lora:
        rank = get("lora_rank")
        values.update({"lora_r": rank, "lora_alpha": doc.get("lora_alpha") or 2 * int(rank),
                       "lora_dropout": get("lora_dropout")})
        values["lora_target_modules"] = _lora_targets(get("lora_target"), notes)
        if doc.get("adapter_name_or_path"):
            adapters = [a.strip() for a in str(doc["adapter_name_or_path"]).split(",")]
            values.update({"attach_lora": True, "lora_adapter_path": adapters[-1]})
            if len(adapters) > 1:
                notes.append(f"adapter_name_or_path: only the last adapter ({adapters[-1]}) is continued here")

    dataset_dir = str(doc.get("dataset_dir", "data"))
    for ours, lf in (("train_file", "dataset"), ("eval_file", "eval_dataset")):
        if doc.get(lf):
            names = [n.strip() for n in str(doc[lf]).split(",") if n.strip()]
            values[ours] = _dataset_file(names[0], dataset_dir)
            if len(names) > 1:
                notes.append(f"{lf}: only the first data set ({names[0]}) is used; here a task has one {ours}")
    if doc.get("template"):
        notes.append(f"template {doc['template']}: the tokenizer's own chat template is used here")
    if doc.get("per_device_eval_batch_size") not in (None, values.get("per_device_train_batch_size")):
        notes.append("per_device_eval_batch_size: evaluation uses the training batch size here")

    used = set(_SAME_MEANING.values()) | {
        "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target", "adapter_name_or_path",
        "dataset", "eval_dataset", "template", "max_samples", "disable_shuffling", "disable_gradient_checkpointing",
        "early_stopping_steps", "lr_scheduler_kwargs",
    }
    for key in doc:
        if key not in used and key not in _QUIET:
            notes.append(f"{key}: {doc[key]!r} has no equivalent here")
    return _keep_valid(values, training_type, notes), training_type, notes


def _lora_targets(target: Any, notes: list[str]) -> list[str]:
    names = [t.strip() for t in (target if isinstance(target, list) else str(target).split(",")) if t.strip()]
    if "all" in names:
        return _linear_targets()
    options = set(load_schema().params["lora_target_modules"].options or ())
    unknown = [n for n in names if n not in options]
    if unknown:
        notes.append(f"lora_target {', '.join(unknown)}: not a target module offered here")
    return [n for n in names if n in options]


def _keep_valid(values: dict[str, Any], training_type: str, notes: list[str]) -> dict[str, Any]:
    """Schema defaults plus every imported value the form could hold; the others are listed."""
    from ..config.validate import check_values

    schema = load_schema()
    result = check_values({k: v for k, v in values.items() if k in schema.params}, training_type)
    for key, message in result.errors.items():
        default = schema.params[key].default
        notes.append(f"{key} = {values.get(key)!r} not imported ({message}); the default {default!r} is used")
    return {k: (schema.params[k].default if k in result.errors else result.values[k]) for k in schema.params}
