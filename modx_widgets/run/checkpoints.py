"""Which checkpoint folders can be resumed, and does one fit the model we are about to train?

The Trainer writes `trainer_state.json` after the weights, optimizer, scheduler and RNG state,
so a folder without it (a save killed half-way) is never offered or accepted for resume.
A checkpoint fits a model when its config and the tensor shapes in its safetensors headers
match the model's.  Pure file inspection: no ML import.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
            "adapter_model.bin", "pytorch_model.bin")


def is_complete(path: str | Path) -> bool:
    """A finished checkpoint: trainer state readable as JSON and weights present."""
    p = Path(path)
    state = p / STATE_FILE
    if not state.is_file() or not any((p / w).is_file() for w in _WEIGHTS):
        return False
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def step_of(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete `checkpoint-N` folders under output_dir, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(step_of(p), p) for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


_SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "n_embd", "n_layer")


def expected_lora(values: dict[str, Any], training_type: str) -> tuple[Any, list[str]] | None:
    """(r, target modules) of the adapter this task will train, read from files only; None without LoRA."""
    if training_type != "sft" or not values.get("use_lora"):
        return None
    source = None
    if values.get("attach_lora") and values.get("lora_adapter_path"):
        source = Path(str(values["lora_adapter_path"])) / "adapter_config.json"
    elif values.get("peft_config_path"):
        source = Path(str(values["peft_config_path"]))
        source = source / "adapter_config.json" if source.is_dir() else source
    if source is not None:
        doc = _read_json(source) or {}
        return doc.get("r"), sorted(doc.get("target_modules") or [])
    return values.get("lora_r"), sorted(values.get("lora_target_modules") or [])


# A LoRA matrix's name -> (its dimension that must match the adapted weight, that weight's dimension).
# Linear weights are (out, in): A is (r, in), B is (out, r).  Embeddings are (num, dim): A is
# (r, num), B is (dim, r).
_LORA_FIT = {"lora_A": (1, 1), "lora_B": (0, 0), "lora_embedding_A": (1, 0), "lora_embedding_B": (0, 1)}
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")
_PEFT_PREFIX = "base_model.model."


def weights_misfit(checkpoint: str | Path, model_dir: str | Path | None) -> str:
    """'' when every tensor saved in `checkpoint` fits the model in `model_dir` (or we cannot
    tell: no safetensors, an unreadable header); else which tensor does not fit and why.

    Compares safetensors headers only: adapter matrices against the layer they adapt, full
    weights against the same-named weight.  A LoRA checkpoint made on another model of the
    same family has the same config keys but different layer sizes, and would otherwise fail
    minutes later inside the Trainer.
    """
    from .shapes import folder_shapes

    if model_dir is None:
        return ""
    saved, model = folder_shapes(checkpoint), folder_shapes(model_dir)
    if not saved or not model:
        return ""
    for name, shape in sorted(saved.items()):
        key = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
        lora = _LORA_KEY.match(key)
        if lora is None:
            if key in model and model[key] != shape:
                return f"{key} is {list(shape)} there but {list(model[key])} in model_path"
            continue
        target = lora.group("module") + ".weight"
        if target not in model:
            return f"it adapts {lora.group('module')}, which model_path does not have"
        mine, theirs = _LORA_FIT[lora.group("part")]
        base = model[target]
        if len(shape) != 2 or len(base) != 2 or shape[mine] != base[theirs]:
            return (
                f"its LoRA weights for {lora.group('module')} ({lora.group('part')} {list(shape)}) do not fit "
                f"that layer ({list(base)} in model_path)"
            )
    return ""


def resume_problem(
    path: str | Path,
    *,
    model_config: dict[str, Any] | None,
    lora: tuple[Any, list[str]] | None,
    model_dir: str | Path | None = None,
) -> str:
    """'' when `path` is a complete checkpoint that fits this model and LoRA setup, else why not.

    `lora` is `expected_lora(...)`; `model_config` the model's config.json as a dict;
    `model_dir` the model folder, whose weight shapes the checkpoint's must fit.
    """
    p = Path(path)
    if not p.is_dir():
        return f"resume_from_checkpoint {p} is not a folder"
    if not (p / STATE_FILE).is_file():
        return (
            f"resume_from_checkpoint {p} is not a complete checkpoint (no {STATE_FILE}; a save may have "
            "been interrupted). Pick an earlier checkpoint-N folder."
        )
    if not is_complete(p):
        return f"resume_from_checkpoint {p} is incomplete or damaged (weights or {STATE_FILE} unreadable)"
    adapter = _read_json(p / "adapter_config.json") if (p / "adapter_config.json").is_file() else None
    if lora is None and adapter is not None:
        return f"resume_from_checkpoint {p} holds a LoRA adapter, but this task trains without LoRA"
    if lora is not None:
        if adapter is None:
            return f"resume_from_checkpoint {p} holds full model weights, but this task trains a LoRA adapter"
        theirs = (adapter.get("r"), sorted(adapter.get("target_modules") or []))
        ours = (lora[0], sorted(lora[1]))
        if theirs != ours:
            return (
                f"resume_from_checkpoint {p} was made with LoRA r={theirs[0]} on {theirs[1]}, "
                f"this task uses r={ours[0]} on {ours[1]}: use the same LoRA settings to resume"
            )
    saved = _read_json(p / "config.json")
    if saved and model_config:
        for key in _SHAPE_KEYS:
            if key in saved and key in model_config and saved[key] != model_config[key]:
                return (
                    f"resume_from_checkpoint {p} belongs to another model ({key} {saved[key]} there, "
                    f"{model_config[key]} in model_path)"
                )
    if not (model_config or {}).get("quantization_config"):  # packed quantized weights have other shapes
        misfit = weights_misfit(p, model_dir)
        if misfit:
            return f"resume_from_checkpoint {p} belongs to another model: {misfit}"
    return ""
