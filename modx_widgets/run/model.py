"""Model side of a run: check the model folder, load tokenizer and model, add LoRA, merge.

Problems a user can fix (a GGUF file, a folder without config.json or weights, a LoRA
target the model lacks) raise `ModelError` with a message that says what to do; they are
found before the Trainer is built.  Heavy imports happen inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..config.build import BuildError, lora_config
from .shapes import folder_shapes

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class ModelError(ValueError):
    """The model, tokenizer or adapter cannot be used; the message says why and what to do."""


_GGUF = (
    "{path} is a GGUF file. GGUF holds quantized weights for inference (llama.cpp, Ollama) and "
    "cannot be trained. Point model_path at the Hugging Face folder of the same model "
    "(config.json + *.safetensors)."
)


def check_model_dir(path: Any, what: str = "model_path") -> Path:
    """Refuse anything that is not a trainable Hugging Face model folder, before loading it."""
    if not path:
        raise ModelError(f"{what} is empty: choose a Hugging Face model folder")
    p = Path(str(path)).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            raise ModelError(_GGUF.format(path=p))
        raise ModelError(f"{what} {p} is a file; it must be a folder with config.json and *.safetensors weights")
    if not p.is_dir():
        raise ModelError(f"{what} {p} does not exist")
    config = p / "config.json"
    if not config.is_file():
        if any(p.glob("*.gguf")):
            raise ModelError(_GGUF.format(path=next(p.glob("*.gguf"))))
        raise ModelError(f"{what} {p} has no config.json: it is not a Hugging Face model folder")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON ({exc}); re-download the model") from None
    if not any(next(p.glob(pat), None) for pat in WEIGHT_PATTERNS):
        raise ModelError(f"{what} {p} has config.json but no weights (*.safetensors); re-download the model")
    return p


def weight_layers(model_dir: Any) -> dict[str, int] | None:
    """Short layer names -> weight rank, read from the safetensors headers (no ML import).

    Lets a LoRA target the model lacks be refused before anything is loaded.  None when the
    weights are not safetensors or a header cannot be read (the check after loading remains).
    """
    shapes = folder_shapes(Path(str(model_dir)))
    if shapes is None:
        return None
    layers: dict[str, int] = {}
    for name, shape in shapes.items():
        parts = name.split(".")
        if len(parts) >= 2:
            layers[parts[-2]] = max(layers.get(parts[-2], 0), len(shape))
    return layers


def missing_lora_targets(model_dir: Any, targets: list[str]) -> str:
    """'' when every target names a layer of the model (or we cannot tell), else the message."""
    layers = weight_layers(model_dir)
    if layers is None or not targets:
        return ""
    missing = sorted(t for t in targets if t not in layers)
    if not missing:
        return ""
    have = sorted(name for name, rank in layers.items() if rank >= 2 and not name.isdigit())
    return (
        f"LoRA target module(s) {', '.join(missing)} not found in this model. "
        f"Its adaptable layers are: {', '.join(have)}. Choose lora_target_modules among these."
    )


def has_chat_template(folder: Any) -> bool:
    """Does the tokenizer folder ship a chat template (file check only, no tokenizer load)?"""
    p = Path(str(folder))
    if (p / "chat_template.jinja").is_file() or (p / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


def load_tokenizer(values: Mapping[str, Any]) -> Any:
    """Tokenizer from tokenizer_path (or model_path); a missing pad token falls back to eos."""
    from transformers import AutoTokenizer

    source = values.get("tokenizer_path") or values.get("model_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as exc:
        key = "tokenizer_path" if values.get("tokenizer_path") else "model_path"
        raise ModelError(f"cannot load a tokenizer from {key} {source}: {exc}") from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"the tokenizer in {source} has neither a pad nor an eos token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(values: Mapping[str, Any]) -> Any:
    """The base causal LM in fp32 (mixed precision is autocast by the Trainer)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = check_model_dir(values.get("model_path"))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/transformers raise many types here
        raise ModelError(
            f"cannot load the model in {path} ({type(exc).__name__}: {exc}); its files may be damaged or "
            "incomplete: download the model folder again"
        ) from exc
    model.config.use_cache = False  # no KV cache while training (and required by checkpointing)
    return model


def add_adapter(model: Any, values: Mapping[str, Any], training_type: str) -> Any:
    """Wrap `model` for training: a new LoRA adapter, an attached trainable one, or all weights.

    Call `set_seed(seed)` right before this so the adapter's random init is reproducible.
    """
    if training_type != "sft" or not values.get("use_lora"):
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if values.get("attach_lora"):
        return _attach_adapter(model, values.get("lora_adapter_path"))
    from .logs import quiet_import_noise

    quiet_import_noise()
    from peft import get_peft_model

    try:
        config = lora_config(values, model, training_type=training_type)
    except BuildError as exc:
        raise ModelError(str(exc)) from None
    # Checkpointing is non-reentrant (see build), so frozen embeddings need no input-grad hook.
    return get_peft_model(model, config)


def _attach_adapter(model: Any, path: Any) -> Any:
    from peft import PeftModel

    if not path:
        raise ModelError("attach_lora is on but lora_adapter_path is empty: choose the adapter folder to continue")
    p = Path(str(path)).expanduser()
    if not (p / "adapter_config.json").is_file():
        raise ModelError(f"lora_adapter_path {p} has no adapter_config.json: it is not a PEFT adapter folder")
    try:
        return PeftModel.from_pretrained(model, str(p), is_trainable=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot attach the adapter in {p} to this model: {exc}") from None


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def save_merged(model: Any, tokenizer: Any, target: Path) -> Path:
    """Merge the LoRA weights into the base model and save it as safetensors.

    Merges in place (no second copy of the weights in memory): call it last, after the
    adapter itself has been saved.
    """
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # restored for inference
    target.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    return target
