""""Copy as code": a task as one standalone Python training script.

The script needs torch, transformers (5.x), peft, datasets and numpy, not modx_widgets: its
body is `_standalone.py` (read as text, never imported here), and in front of it go two
literals generated from the task -- CONFIG (data, model and adapter settings) and
TRAINING_ARGS (the exact keyword arguments the engine gives `TrainingArguments`, from
`config.build.argument_kwargs`).  Run with the same seed, it logs the same losses as the
widget's run of the task.
"""

from __future__ import annotations

import pprint
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ._common import ExportError, clean_values, unpack_task

__all__ = ["to_python_script"]

_DROPPED_LORA_KEYS = ("peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping")


_ORDER_SLOT = "# <modx_widgets.data.order>\n"


def _code(package: str, filename: str) -> str:
    """A module's text from its first import on (its notes and `from __future__` dropped)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("import "))
    return "".join(lines[start:])


def _body() -> str:
    """_standalone.py with the data room's ordering code pasted in, so the two cannot drift."""
    body = _code(__package__, "_standalone.py")
    if _ORDER_SLOT not in body:
        raise RuntimeError("_standalone.py lost its slot for modx_widgets.data.order")
    return body.replace(_ORDER_SLOT, _code("modx_widgets.data", "order.py"))


def _plain(value: Any) -> Any:
    """JSON-like data for a Python literal: sets become sorted lists, enums their value."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
        return value.value
    return value


def _lora_kwargs(values: dict[str, Any], training_type: str) -> dict[str, Any] | None:
    """The LoraConfig the engine builds (`build.lora_config`), reduced to the fields that differ
    from peft's defaults so the script stays readable; None when no new adapter is created."""
    if training_type != "sft" or not values["use_lora"] or values["attach_lora"]:
        return None
    from peft import LoraConfig

    from ..config.build import BuildError, lora_config

    try:
        config = lora_config(values, training_type=training_type)
    except BuildError as exc:
        raise ExportError(str(exc)) from None
    defaults = _plain(LoraConfig().to_dict())
    out = {}
    for key, value in _plain(config.to_dict()).items():
        keep = key in ("r", "lora_alpha", "lora_dropout", "target_modules", "task_type")
        if key not in _DROPPED_LORA_KEYS and (keep or value != defaults.get(key)):
            out[key] = value
    return out


def _config(values: dict[str, Any], training_type: str, device: str, task_name: str | None) -> dict[str, Any]:
    from ..config.build import length_grouping, padding_free

    attach = training_type == "sft" and values["use_lora"] and values["attach_lora"]
    return {
        "task_name": task_name,
        "training_type": training_type,
        "device": device,
        "model_path": values["model_path"],
        "tokenizer_path": values["tokenizer_path"],
        "train_file": values["train_file"],
        "eval_file": values["eval_file"],
        "max_seq_length": values["max_seq_length"],
        "max_samples": values["max_samples"],
        "eval_split_ratio": values["eval_split_ratio"],
        "seed": values["seed"],
        "lora": _lora_kwargs(values, training_type),
        "attach_lora_path": values["lora_adapter_path"] if attach else None,
        "gradient_checkpointing": values["gradient_checkpointing"],
        "length_grouped_step_examples": (
            values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
            if not values["reshuffle"] and length_grouping(values, training_type)
            else 0
        ),
        "padding_free": padding_free(values, training_type),
        "merge_lora": bool(training_type == "sft" and values["use_lora"] and values["merge_lora"]),
        "resume_from_checkpoint": values["resume_from_checkpoint"],
        "save_interval_minutes": values["save_interval_minutes"],
        "early_stopping_patience": values["early_stopping_patience"],
        "early_stopping_threshold": values["early_stopping_threshold"],
    }


def _training_args(values: dict[str, Any], training_type: str, device: str) -> dict[str, Any]:
    """`argument_kwargs` as the engine computes them for a GPU; the script drops what a CPU cannot do."""
    from ..config.build import BuildError, argument_kwargs, parse_device, plan_precision

    try:
        kind, _ = parse_device(device)
        on_cpu = kind == "cpu"
        precision = plan_precision(values, on_gpu=not on_cpu)
        return argument_kwargs(
            values, training_type, output_dir=values["output_dir"], precision=precision, use_cpu=on_cpu
        )
    except BuildError as exc:
        raise ExportError(str(exc)) from None


def _literal(name: str, value: dict[str, Any]) -> str:
    """`NAME = {` with one key per line, so a reader can find and edit a setting."""
    lines = [f"{name} = {{"]
    for key, item in _plain(value).items():
        lines.append(f"    {key!r}: {pprint.pformat(item, width=90, sort_dicts=False)},")
    return "\n".join(lines) + "\n}\n"


def to_python_script(task_record_or_values: Any, training_type: str | None = None) -> str:
    """The task as a standalone training script (text).  `training_type` is needed for plain values.

    Paths are written as they are in the task; `--output-dir` and `--max-steps` on the script's
    command line override the output folder and the number of steps.
    """
    raw, kind, device, name = unpack_task(task_record_or_values, training_type)
    values = clean_values(raw, kind)
    if values.get("peft_config_path") and kind == "sft" and values["use_lora"]:
        path = Path(str(values["peft_config_path"])).expanduser()
        if not (path / "adapter_config.json" if path.is_dir() else path).is_file():
            raise ExportError(f"peft_config_path {path} does not exist; its LoRA settings go into the script")
    title = f"task {name!r}" if name else "a modx_widgets task"
    header = (
        "#!/usr/bin/env python3\n"
        f'"""Train {title} ({kind}) the way modx_widgets does, without modx_widgets.\n\n'
        f"Exported by modx_widgets {__version__}.  Needs torch, transformers 5.x, peft, datasets and numpy.\n"
        "Usage: python THIS_FILE.py [--output-dir DIR] [--max-steps N]\n"
        "Several GPUs: torchrun --nproc_per_node=N THIS_FILE.py (the Trainer runs data-parallel).\n"
        "The losses of each logging step are also written to <output_dir>/log_history.json.\n"
        '"""\n\n'
        "# Data, model and adapter settings of the task.\n"
        + _literal("CONFIG", _config(values, kind, device, name))
        + "\n# Keyword arguments for transformers.TrainingArguments, as modx_widgets builds them.\n"
        + _literal("TRAINING_ARGS", _training_args(values, kind, device))
        + "\n"
    )
    return header + _body()

