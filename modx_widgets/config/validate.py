"""Pure validation of training parameters: the same rules for the form, templates, task files and the CLI.

Everything about a parameter (type, default, range, step, options, required, visibility)
comes from the schema; this module only knows *how* to check, plus the cross-field rules
that tie parameters together (the Trainer's own constraints, stated up front so a run never
fails minutes in).  Nothing here imports an ML library: path checks read a few small files.

`check_values` is the field-level subset (types, ranges, steps, options, unknown keys); the
store uses it so a half-filled task can be saved while a file holding values the form could
never hold is refused.  `validate` adds required fields, cross-field rules and path checks.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..schema.spec import ParamSpec, Schema, load_schema

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_STEP_TOLERANCE = 1e-6  # in units of the step: 0.1 + 0.2 must still count as on a 0.01 grid
_MAX_SMALL_JSON = 16 * 1024 * 1024
GGUF_MESSAGE = (
    "GGUF is an inference format and cannot be trained: choose the Hugging Face model folder "
    "(config.json + *.safetensors) instead"
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ValidationResult:
    """Complete, coerced `values`; `errors` by key (empty when ok); `warnings` as (key, message), key may be ""."""

    values: dict[str, Any]
    errors: dict[str, str]
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- formatting -------------------------------------------------------------------------


def _num(x: Any) -> str:
    """A number as a person would type it: 128, 0.5, 1e-06."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return _shown(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    short = f"{float(x):g}"
    return short if float(short) == float(x) else repr(float(x))


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


# -- coercion (one function per schema type) ---------------------------------------------


def _is_blank(raw: Any) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def _to_int(spec: ParamSpec, raw: Any) -> int:
    if isinstance(raw, bool):
        raise _Invalid(f"must be a whole number, not {str(raw).lower()}")
    if isinstance(raw, numbers.Integral):
        return int(raw)
    number: float | None = None
    if isinstance(raw, numbers.Real):
        number = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                pass
    if number is not None and math.isfinite(number) and number.is_integer():
        return int(number)
    raise _Invalid(f"must be a whole number (got {_shown(raw)})")


def _to_float(spec: ParamSpec, raw: Any) -> float:
    if isinstance(raw, bool):
        raise _Invalid(f"must be a number, not {str(raw).lower()}")
    number: float | None = None
    if isinstance(raw, numbers.Real):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            pass
    if number is None:
        raise _Invalid(f"must be a number (got {_shown(raw)})")
    if not math.isfinite(number):
        raise _Invalid(f"must be a finite number (got {_shown(raw)})")
    return number


def _to_bool(spec: ParamSpec, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Invalid(f"must be true or false (got {_shown(raw)})")


def _to_choice(spec: ParamSpec, raw: Any) -> str:
    options = spec.options or ()
    if isinstance(raw, str) and raw.strip() in options:
        return raw.strip()
    raise _Invalid(f"must be one of {', '.join(options)} (got {_shown(raw)})")


def _to_multichoice(spec: ParamSpec, raw: Any) -> list[str]:
    options = spec.options or ()
    if isinstance(raw, str):
        items: list[Any] = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise _Invalid(f"must be a list chosen from {', '.join(options)} (got {_shown(raw)})")
    bad = [item for item in items if not isinstance(item, str) or item not in options]
    if bad:
        raise _Invalid(f"{_shown(bad[0])} is not one of {', '.join(options)}")
    return list(dict.fromkeys(items))


def _to_path(spec: ParamSpec, raw: Any) -> str | None:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _Invalid(f"must be a path written as text (got {type(raw).__name__})")
    text = raw.strip()
    if not text:
        return None
    if "\x00" in text:
        raise _Invalid("contains a NUL character, which no path can hold")
    return os.path.expanduser(text)


def _to_str(spec: ParamSpec, raw: Any) -> str:
    if not isinstance(raw, str):
        raise _Invalid(f"must be text (got {type(raw).__name__})")
    return raw


_COERCE: dict[str, Callable[[ParamSpec, Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "choice": _to_choice,
    "multichoice": _to_multichoice,
    "file": _to_path,
    "dir": _to_path,
    "str": _to_str,
}


def _coerce(spec: ParamSpec, raw: Any) -> Any:
    if spec.type in ("int", "float") and _is_blank(raw):
        raise _Invalid(f"needs a value (the default is {_num(spec.default)})")
    return _COERCE[spec.type](spec, raw)


def _default(spec: ParamSpec) -> Any:
    return list(spec.default) if isinstance(spec.default, list) else spec.default


# -- range and step ------------------------------------------------------------------------


def _range_problem(spec: ParamSpec, value: Any) -> str | None:
    lo, hi = spec.minimum, spec.maximum
    if spec.type not in ("int", "float") or ((lo is None or value >= lo) and (hi is None or value <= hi)):
        return None
    if lo is not None and hi is not None:
        return f"must be between {_num(lo)} and {_num(hi)} (got {_num(value)})"
    if lo is not None:
        return f"must be at least {_num(lo)} (got {_num(value)})"
    return f"must be at most {_num(hi)} (got {_num(value)})"


def _decimals(step: float) -> int:
    text = repr(float(step))
    if "e" in text:
        return max(0, -math.floor(math.log10(step))) + 6
    return len(text.split(".")[1].rstrip("0"))


def _snap_to_step(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
    """Value on the schema's grid (floats rounded onto it), or a message when it is off the grid."""
    step = spec.step
    if not step or spec.type not in ("int", "float"):
        return value, None
    base = spec.minimum if spec.minimum is not None else 0
    aligned = base % step == 0
    if spec.type == "int":
        off = (value - base) % step
        if not off:
            return value, None
        below, above = value - off, value - off + step
        rule = f"a multiple of {_num(step)}" if aligned else f"{_num(base)} plus a multiple of {_num(step)}"
        return value, f"must be {rule} (got {_num(value)}; nearest {_num(below)} or {_num(above)})"
    units = (value - base) / step
    nearest = round(units)
    if abs(units - nearest) > _STEP_TOLERANCE:
        rule = f"a multiple of {_num(step)}" if aligned else f"{_num(base)} plus a multiple of {_num(step)}"
        return value, f"must be {rule} (got {_num(value)})"
    return round(base + nearest * step, _decimals(step)), None


# -- field-level pass --------------------------------------------------------------------


def _unknown_key_message(key: Any, schema: Schema) -> str:
    if key in {b.key for b in schema.basic}:
        return "is a basic setting (task name, template, training type, device), not a training parameter: pass it separately"
    return "unknown parameter: remove it or check its spelling"


@dataclass
class _Pass:
    """State shared by the checking steps of one call."""

    schema: Schema
    training_type: str
    values: dict[str, Any]
    errors: dict[str, str]
    warnings: list[tuple[str, str]]
    active: set[str]

    def error(self, key: str, message: str) -> None:
        self.errors.setdefault(key, message)

    def warn(self, key: str, message: str) -> None:
        self.warnings.append((key, message))

    def usable(self, *keys: str) -> bool:
        """All keys are in play for this training type and passed their own checks."""
        return all(k in self.active and k not in self.errors for k in keys)


def _field_pass(values: Mapping[str, Any], training_type: str) -> _Pass:
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping of parameter keys to values, not {type(values).__name__}")
    schema = load_schema()
    params = schema.params  # a property that builds a dict: read it once
    errors: dict[str, str] = {}
    warnings: list[tuple[str, str]] = []
    type_options = schema.basic_param("training_type").options or ()
    if training_type not in type_options:
        errors["training_type"] = f"must be one of {', '.join(type_options)} (got {_shown(training_type)})"
    for key in values:
        if key not in params:
            errors[str(key)] = _unknown_key_message(key, schema)

    clean: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for key, spec in params.items():
        if key not in values:
            clean[key] = _default(spec)
            continue
        try:
            clean[key] = _coerce(spec, values[key])
        except _Invalid as exc:
            clean[key] = values[key]
            failed[key] = exc.message

    context = {**clean, "training_type": training_type}
    visible_sections = {s.key for s in schema.sections if s.is_visible(context)}
    active = {key for key, spec in params.items() if spec.section in visible_sections and spec.is_visible(context)}
    for key, spec in params.items():
        if key not in active:
            if key in failed:  # ignored for this training type: keep the stored values well-typed
                clean[key] = _default(spec)
                warnings.append((key, f"not used here and reset to its default ({failed[key]})"))
            continue
        if key in failed:
            errors[key] = failed[key]
            continue
        problem = _range_problem(spec, clean[key])
        if problem is None:
            clean[key], problem = _snap_to_step(spec, clean[key])
        if problem:
            errors[key] = problem
    return _Pass(schema, training_type, clean, errors, warnings, active)


def check_values(values: Mapping[str, Any], training_type: str = "sft") -> ValidationResult:
    """Field-level checks only (type, range, step, options, unknown keys): what a stored file must satisfy."""
    state = _field_pass(values, training_type)
    return ValidationResult(state.values, state.errors, state.warnings)


# -- required and cross-field rules ---------------------------------------------------------


def _required(state: _Pass) -> None:
    for key, spec in state.schema.params.items():
        if spec.required and key in state.active and key not in state.errors and state.values[key] is None:
            what = {"file": "choose a file", "dir": "choose a folder"}.get(spec.type, "enter a value")
            state.error(key, f"required: {what}")


def _evaluation_rules(state: _Pass) -> None:
    v = state.values
    if not state.usable("eval_file", "eval_split_ratio", "eval_strategy", "early_stopping_patience"):
        return
    has_file, ratio = v["eval_file"] is not None, v["eval_split_ratio"]
    has_data = has_file or ratio > 0
    if has_file and ratio > 0:
        state.error(
            "eval_split_ratio",
            "an evaluation file is set, so the sampling ratio must be 0: use one source of evaluation data",
        )
    evaluating = v["eval_strategy"] != "no"
    if evaluating and not has_data:
        state.error(
            "eval_strategy",
            "evaluation needs data: set an evaluation file or a sampling ratio above 0, or choose 'no'",
        )
    patience = v["early_stopping_patience"]
    if patience > 0:
        missing = [
            text
            for text, absent in (
                ("an evaluation strategy (steps or epoch)", not evaluating),
                ("evaluation data (a file or a sampling ratio above 0)", not has_data),
            )
            if absent
        ]
        if missing:
            state.error(
                "early_stopping_patience",
                f"early stopping needs {' and '.join(missing)}; or set the patience to 0",
            )
        else:
            _best_checkpoint_rules(state)


def _best_checkpoint_rules(state: _Pass) -> None:
    """Early stopping reloads the best checkpoint at the end, so saves must line up with evaluations."""
    v = state.values
    if not state.usable("save_strategy", "save_steps", "eval_steps"):
        return
    if v["save_strategy"] != v["eval_strategy"]:
        state.warn(
            "save_strategy",
            f"early stopping will keep the last weights, not the best evaluated ones: the best checkpoint "
            f"can only be reloaded when checkpoints are saved at evaluations (save strategy "
            f"{v['eval_strategy']})",
        )
    elif v["eval_strategy"] == "steps" and v["save_steps"] % v["eval_steps"]:
        fit = -(-v["save_steps"] // v["eval_steps"]) * v["eval_steps"]
        state.error(
            "save_steps",
            f"with early stopping, save steps must be a multiple of the evaluation steps ({v['eval_steps']}): "
            f"the Trainer reloads the best checkpoint at the end and needs one saved at an evaluation; try {fit}",
        )


def _override_warnings(state: _Pass) -> None:
    v, params = state.values, state.schema.params
    if state.usable("warmup_steps", "warmup_ratio") and v["warmup_steps"] > 0 and v["warmup_ratio"] > 0:
        state.warn("warmup_ratio", f"ignored: Warmup steps ({v['warmup_steps']}) is above 0 and takes precedence")
    if state.usable("max_steps", "num_train_epochs") and v["max_steps"] > 0:
        state.warn("num_train_epochs", f"ignored: Max training steps ({v['max_steps']}) is above 0 and takes precedence")
    if (
        state.usable("lr_num_cycles", "lr_scheduler_type")
        and v["lr_scheduler_type"] != "cosine_with_restarts"
        and v["lr_num_cycles"] != params["lr_num_cycles"].default
    ):
        state.warn(
            "lr_num_cycles",
            f"only used by the cosine_with_restarts scheduler; ignored with {v['lr_scheduler_type']}",
        )


def _lora_rules(state: _Pass) -> None:
    v = state.values
    if state.training_type == "pretrain" and v.get("use_lora") is True:
        state.warn("use_lora", "LoRA is not used for pre-training: all weights are trained")
    if state.usable("attach_lora") and v["attach_lora"] and "lora_adapter_path" in state.active:
        if v["lora_adapter_path"] is None and "lora_adapter_path" not in state.errors:
            state.error(
                "lora_adapter_path",
                "required while Attach LoRA weights is on: choose the adapter folder, or turn Attach LoRA off",
            )
    if (
        state.usable("use_lora", "lora_target_modules", "peft_config_path")
        and v["use_lora"]
        and not v["lora_target_modules"]
        and v["peft_config_path"] is None
    ):
        state.error("lora_target_modules", "choose at least one module to receive LoRA adapters")


def _cross_field(state: _Pass) -> None:
    if state.usable("fp16", "bf16") and state.values["fp16"] and state.values["bf16"]:
        state.error("bf16", "FP16 and BF16 cannot both be on: turn one of them off")
    _evaluation_rules(state)
    _override_warnings(state)
    _lora_rules(state)


# -- paths -------------------------------------------------------------------------------

_PathCheck = Callable[[Path, str], tuple[str | None, str | None]]


def _must_exist(path: Path, shown: str, kind: str | None) -> str | None:
    if kind is None:
        return None
    if not path.exists():
        return f"not found: {shown}"
    if kind == "file" and not path.is_file():
        return f"is a folder, not a file: {shown}" if path.is_dir() else f"is not a regular file: {shown}"
    if kind == "dir" and not path.is_dir():
        return f"is a file, not a folder: {shown}"
    if not os.access(path, os.R_OK):
        return f"cannot be read (permission denied): {shown}"
    return None


def _small_json(path: Path) -> tuple[Any, str | None]:
    """Decode a small JSON file; the problem text says what is wrong, never raises."""
    try:
        if path.stat().st_size > _MAX_SMALL_JSON:
            return None, f"{path.name} is too large to be a settings file"
        return json.loads(path.read_text(encoding="utf-8-sig")), None
    except json.JSONDecodeError as exc:
        return None, f"{path.name} is not valid JSON (line {exc.lineno}: {exc.msg})"
    except UnicodeDecodeError:
        return None, f"{path.name} is not UTF-8 text"
    except (OSError, RecursionError) as exc:
        return None, f"{path.name} cannot be read ({exc})"


def _lora_config_problem(path: Path) -> str | None:
    doc, problem = _small_json(path)
    if problem:
        return problem
    if not isinstance(doc, dict) or not isinstance(doc.get("peft_type"), str):
        return f"{path.name} has no peft_type: it is not a PEFT adapter config"
    if doc["peft_type"].upper() != "LORA":
        return f"{path.name} is a {doc['peft_type']} config: only LoRA configs (peft_type LORA) are supported"
    return None


def _check_model_path(path: Path, shown: str) -> tuple[str | None, str | None]:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return GGUF_MESSAGE, None
        return "is a file: choose the model folder that holds config.json and *.safetensors", None
    problem = _must_exist(path, shown, "dir")
    if problem:
        return problem, None
    names = os.listdir(path)
    lower = [n.lower() for n in names]
    safetensors = any(n.endswith(".safetensors") for n in lower)
    bins = any(n.endswith(".bin") and n != "training_args.bin" for n in lower)
    if not safetensors and not bins and any(n.endswith(".gguf") for n in lower):
        return f"holds only GGUF files. {GGUF_MESSAGE}", None
    if "config.json" not in names:
        return "has no config.json: choose a Hugging Face model folder (config.json + *.safetensors)", None
    doc, problem = _small_json(path / "config.json")
    if problem or not isinstance(doc, dict):
        return f"{problem or 'config.json is not a JSON object'}: the model folder is damaged; download it again", None
    if not safetensors:
        if bins:
            return None, "weights are in the old PyTorch *.bin format: this works, but *.safetensors is faster and safer"
        return "has no *.safetensors weights: download the complete model folder", None
    return None, None


def _check_output_dir(path: Path, shown: str) -> tuple[str | None, str | None]:
    if path.exists():
        if not path.is_dir():
            return f"exists and is a file: choose a folder ({shown})", None
        if not os.access(path, os.W_OK | os.X_OK):
            return f"is not writable: choose a folder you can write to ({shown})", None
        return None, None
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created because {ancestor} is a file", None
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: no write permission in {ancestor}", None
    return None, None


def _check_peft_config(path: Path, shown: str) -> tuple[str | None, str | None]:
    if path.is_dir():
        return "is a folder: choose the adapter_config.json file inside it", None
    return _must_exist(path, shown, "file") or _lora_config_problem(path), None


def _check_adapter(path: Path, shown: str) -> tuple[str | None, str | None]:
    problem = _must_exist(path, shown, "dir")
    if problem:
        return problem, None
    if not (path / "adapter_config.json").is_file():
        return "has no adapter_config.json: choose a saved LoRA adapter folder", None
    problem = _lora_config_problem(path / "adapter_config.json")
    if problem:
        return problem, None
    if not any(n.startswith("adapter_model.") for n in os.listdir(path)):
        return "has no adapter weights (adapter_model.safetensors): the adapter folder is incomplete", None
    return None, None


def _checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _saved_state_problem(folder: Path) -> str | None:
    """Why `folder` is not a finished save: the Trainer writes trainer_state.json last, so a
    missing or unreadable one means the save was interrupted (or this is no checkpoint)."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    _, problem = _small_json(state)
    return problem


def _newest_saved(folder: Path, below: int | None = None) -> Path | None:
    """The checkpoint-<step> folder in `folder` with the highest step (under `below`) whose save finished."""
    try:
        found = [
            c for c in folder.glob("checkpoint-*")
            if _checkpoint_step(c) >= 0 and (below is None or _checkpoint_step(c) < below) and c.is_dir()
        ]
    except OSError:
        return None
    for candidate in sorted(found, key=_checkpoint_step, reverse=True):
        if _saved_state_problem(candidate) is None:
            return candidate
    return None


def _check_resume(path: Path, shown: str) -> tuple[str | None, str | None]:
    problem = _must_exist(path, shown, "dir")
    if problem:
        return problem, None
    problem = _saved_state_problem(path)
    if problem is None:
        return None, None
    step = _checkpoint_step(path)
    if step >= 0:  # a checkpoint folder whose save never finished: point at the one before it
        earlier = _newest_saved(path.parent, below=step)
        where = (
            f"pick {earlier.name} (the newest complete checkpoint before it)"
            if earlier
            else "no earlier complete checkpoint is next to it; clear this field to train from the start"
        )
        return f"{path.name} is incomplete ({problem}; its save was interrupted): {where}", None
    if (path / "trainer_state.json").is_file():
        return f"{problem}: this checkpoint is incomplete; pick an earlier one", None
    newest = _newest_saved(path)
    where = f"such as {newest.name} (the newest here)" if newest else "inside the output directory"
    return f"is not a checkpoint (no trainer_state.json): pick a checkpoint-<step> folder {where}", None


def _check_tokenizer(path: Path, shown: str) -> tuple[str | None, str | None]:
    problem = _must_exist(path, shown, "dir")
    if problem:
        return problem, None
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return "has no tokenizer files (tokenizer.json or tokenizer_config.json): choose a tokenizer folder", None
    return None, None


# Paths whose *content* matters get a dedicated check; the rest only have to exist (schema must_exist).
_PATH_CHECKS: dict[str, _PathCheck] = {
    "model_path": _check_model_path,
    "output_dir": _check_output_dir,
    "peft_config_path": _check_peft_config,
    "lora_adapter_path": _check_adapter,
    "resume_from_checkpoint": _check_resume,
    "tokenizer_path": _check_tokenizer,
}


def _paths(state: _Pass) -> None:
    for key, spec in state.schema.params.items():
        value = state.values[key]
        if not spec.is_path or value is None or not state.usable(key):
            continue
        path = Path(value)
        check = _PATH_CHECKS.get(key)
        try:
            if check is not None:
                problem, warning = check(path, value)
            else:
                problem, warning = _must_exist(path, value, spec.must_exist), None
        except OSError as exc:
            problem, warning = f"cannot be read ({exc.strerror or exc}): {value}", None
        if problem:
            state.error(key, problem)
        if warning:
            state.warn(key, warning)


# Folders a run reads from; writing the run's output into one of them would overwrite its files.
_READ_FOLDERS = ("model_path", "tokenizer_path", "lora_adapter_path")


def _output_overlaps(state: _Pass) -> None:
    """output_dir may not be (or lie inside) a folder the run reads: the final save writes
    config.json, weights and tokenizer files there and would replace the originals."""
    if not state.usable("output_dir") or state.values["output_dir"] is None:
        return
    try:
        out = Path(state.values["output_dir"]).resolve()
        for key in _READ_FOLDERS:
            if state.values.get(key) is None or not state.usable(key):
                continue
            source = Path(state.values[key]).resolve()
            if out == source or source in out.parents:
                label = state.schema.params[key].label
                state.error(
                    "output_dir",
                    f"is {'the' if out == source else 'inside the'} {label} folder ({state.values[key]}): the "
                    f"saved model would overwrite its files; choose a separate output folder",
                )
                return
    except (OSError, RuntimeError):  # an unresolvable path is reported by its own check
        return


# -- entry point -----------------------------------------------------------------------


def validate(values: Mapping[str, Any], training_type: str = "sft", *, check_paths: bool = True) -> ValidationResult:
    """Check every parameter and the rules between them; errors come back as data, never raised.

    `values` may be partial (missing keys get their defaults) and may hold text from input
    boxes ("3" for an int); parameters hidden for this training type (LoRA for pretrain) are
    not judged.  `check_paths=False` skips the file-system checks (templates, previews).
    """
    state = _field_pass(values, training_type)
    _required(state)
    _cross_field(state)
    if check_paths:
        _paths(state)
        _output_overlaps(state)
    return ValidationResult(state.values, state.errors, state.warnings)
