"""validate(): per-field rules generated from the schema, cross-field rules, and path checks on real files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modx_widgets.config.validate import GGUF_MESSAGE, check_values, validate
from modx_widgets.schema.spec import load_schema

SCHEMA = load_schema()
PARAMS = SCHEMA.params
NUMERIC = [k for k, p in PARAMS.items() if p.type in ("int", "float")]
BOOLS = [k for k, p in PARAMS.items() if p.type == "bool"]
CHOICES = [k for k, p in PARAMS.items() if p.type == "choice"]
PATHS = [k for k, p in PARAMS.items() if p.is_path]
FILLED = {"train_file": "train.jsonl", "output_dir": "out", "model_path": "model"}  # required paths, unchecked


def fields(values: dict, training_type: str = "sft") -> dict[str, str]:
    return check_values(values, training_type).errors


def rules(values: dict, training_type: str = "sft"):
    """Everything except the file system."""
    return validate({**FILLED, **values}, training_type, check_paths=False)


def warned(result, key: str) -> list[str]:
    return [m for k, m in result.warnings if k == key]


def _fmt(x: float) -> str:
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def outside(p) -> tuple[float, float]:
    """The nearest values just below the minimum and just above the maximum."""
    if p.type == "int":
        return p.minimum - 1, p.maximum + 1
    delta = p.step or max(abs(p.minimum) * 0.01, 1e-9)
    return p.minimum - delta, p.maximum + (p.step or max(abs(p.maximum) * 0.01, 1e-9))


# -- per-field rules, generated from the schema ------------------------------------------


@pytest.mark.parametrize("key", NUMERIC)
def test_range_bounds_are_accepted_and_values_just_outside_refused(key: str) -> None:
    p = PARAMS[key]
    for bound in (p.minimum, p.maximum):
        assert key not in fields({key: bound}), bound
    for bad in outside(p):
        message = fields({key: bad})[key]
        assert message.startswith(f"must be between {_fmt(p.minimum)} and {_fmt(p.maximum)}"), message
        assert rules({key: bad}).errors[key] == message


@pytest.mark.parametrize("key", NUMERIC)
def test_numeric_text_from_input_boxes_is_coerced(key: str) -> None:
    p = PARAMS[key]
    result = check_values({key: f" {p.default} "})
    assert result.errors == {} and result.values[key] == p.default
    assert type(result.values[key]) is (int if p.type == "int" else float)


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("bad", [True, False, "abc", "", None, [1], "nan", float("inf")], ids=repr)
def test_numbers_refuse_bools_text_blanks_and_non_finite(key: str, bad) -> None:
    assert key in fields({key: bad})


@pytest.mark.parametrize("key", [k for k in NUMERIC if PARAMS[k].type == "int"])
def test_whole_numbers_accept_integral_floats_and_refuse_fractions(key: str) -> None:
    p = PARAMS[key]
    assert check_values({key: float(p.default)}).values[key] == p.default
    assert "whole number" in fields({key: p.default + 0.5})[key]


@pytest.mark.parametrize("key", BOOLS)
def test_booleans_accept_true_false_words_and_refuse_the_rest(key: str) -> None:
    for text, value in (("true", True), ("False", False), ("on", True), ("0", False)):
        assert check_values({key: text}).values[key] is value
    for bad in (1, "maybe", None):
        assert "true or false" in fields({key: bad})[key]


@pytest.mark.parametrize("key", CHOICES)
def test_choices_accept_every_option_and_refuse_others(key: str) -> None:
    p = PARAMS[key]
    for option in p.options:
        assert key not in fields({key: option})
    message = fields({key: "bogus"})[key]
    assert all(option in message for option in p.options)
    assert key in fields({key: p.options[0].upper()})


def test_multichoice_accepts_a_list_or_comma_text_and_refuses_unknown_modules() -> None:
    p = PARAMS["lora_target_modules"]
    assert check_values({p.key: list(p.options)}).values[p.key] == list(p.options)
    assert check_values({p.key: f"{p.options[1]}, {p.options[0]},{p.options[1]}"}).values[p.key] == [
        p.options[1],
        p.options[0],
    ]
    assert "not one of" in fields({p.key: ["attention"]})[p.key]
    assert p.key in fields({p.key: 3})


@pytest.mark.parametrize("key", PATHS)
def test_paths_turn_blank_into_none_and_refuse_non_text(key: str, tmp_path: Path) -> None:
    context = {"attach_lora": True}  # makes lora_adapter_path visible
    for blank in ("", "   ", None):
        assert check_values({**context, key: blank}).values[key] is None
    assert check_values({**context, key: tmp_path}).values[key] == str(tmp_path)
    assert check_values({**context, key: "~/x"}).values[key] == os.path.expanduser("~/x")
    assert "NUL" in fields({**context, key: "a\x00b"})[key]
    assert key in fields({**context, key: 5})


@pytest.mark.parametrize("key", [k for k, p in PARAMS.items() if p.required])
def test_required_parameters_must_be_filled(key: str) -> None:
    p = PARAMS[key]
    message = validate({**FILLED, key: ""}, "sft", check_paths=False).errors[key]
    expected = "required" if p.is_path else "needs a value" if p.type in ("int", "float") else "must be"
    assert message.startswith(expected), message
    assert key not in validate({**FILLED}, "sft", check_paths=False).errors


def test_missing_keys_get_schema_defaults_in_schema_order() -> None:
    result = rules({"seed": 7})
    assert list(result.values) == list(PARAMS)
    assert result.values == {**SCHEMA.defaults(), **FILLED, "seed": 7}


def test_unknown_and_basic_keys_are_errors_under_their_own_key() -> None:
    errors = rules({"lora_rank": 8, "training_type": "sft"}).errors
    assert "unknown parameter" in errors["lora_rank"]
    assert "basic setting" in errors["training_type"]
    assert "training_type" in rules({}, training_type="rlhf").errors


def test_step_rules_multiple_of_8_and_a_001_grid_with_float_tolerance() -> None:
    assert "multiple of 8" in fields({"max_seq_length": 130})["max_seq_length"]
    assert "nearest 128 or 136" in fields({"max_seq_length": 130})["max_seq_length"]
    assert check_values({"max_seq_length": "136"}).values["max_seq_length"] == 136
    assert "multiple of 0.01" in fields({"eval_split_ratio": 0.125})["eval_split_ratio"]
    snapped = check_values({"eval_split_ratio": 0.1 + 0.2}).values["eval_split_ratio"]
    assert snapped == 0.3


def test_lora_parameters_are_not_judged_for_pretraining() -> None:
    bad_lora = {"lora_r": 0, "lora_dropout": 2, "lora_target_modules": [], "attach_lora": True}
    assert set(rules(bad_lora, "sft").errors) >= {"lora_r", "lora_dropout", "lora_target_modules", "lora_adapter_path"}
    assert rules(bad_lora, "pretrain").errors == {}
    result = rules({"lora_r": "abc"}, "pretrain")
    assert result.ok and result.values["lora_r"] == PARAMS["lora_r"].default and warned(result, "lora_r")


# -- cross-field rules: each with a good and a bad case ---------------------------------


def test_fp16_and_bf16_cannot_both_be_on() -> None:
    assert "FP16 and BF16" in rules({"fp16": True, "bf16": True}).errors["bf16"]
    assert rules({"fp16": False, "bf16": True}).ok


def test_evaluation_strategy_needs_evaluation_data() -> None:
    assert "needs data" in rules({"eval_strategy": "steps"}).errors["eval_strategy"]
    assert rules({"eval_strategy": "steps", "eval_split_ratio": 0.1}).ok
    assert rules({"eval_strategy": "epoch", "eval_file": "eval.jsonl"}).ok


def test_eval_file_and_sampling_ratio_are_exclusive() -> None:
    assert "one source" in rules({"eval_file": "e.jsonl", "eval_split_ratio": 0.2}).errors["eval_split_ratio"]
    assert rules({"eval_file": "e.jsonl", "eval_split_ratio": 0}).ok


def test_early_stopping_needs_evaluation_strategy_and_data() -> None:
    message = rules({"early_stopping_patience": 3}).errors["early_stopping_patience"]
    assert "evaluation strategy" in message and "evaluation data" in message
    only_data = rules({"early_stopping_patience": 3, "eval_split_ratio": 0.1}).errors["early_stopping_patience"]
    assert "evaluation strategy" in only_data and "evaluation data" not in only_data
    assert rules({"early_stopping_patience": 3, "eval_strategy": "steps", "eval_split_ratio": 0.1}).ok


def test_early_stopping_with_step_saves_needs_save_steps_multiple_of_eval_steps() -> None:
    base = {"early_stopping_patience": 2, "eval_strategy": "steps", "eval_split_ratio": 0.1, "save_strategy": "steps"}
    message = rules({**base, "save_steps": 150, "eval_steps": 100}).errors["save_steps"]
    assert "multiple of the evaluation steps (100)" in message and "best checkpoint" in message and "200" in message
    assert rules({**base, "save_steps": 300, "eval_steps": 100}).ok
    assert rules({**base, "early_stopping_patience": 0, "save_steps": 150, "eval_steps": 100}).ok


def test_early_stopping_with_mismatched_save_strategy_warns_the_best_model_is_not_reloaded() -> None:
    result = rules({"early_stopping_patience": 2, "eval_strategy": "epoch", "eval_split_ratio": 0.1})
    assert result.ok and "last weights" in warned(result, "save_strategy")[0]
    aligned = rules({"early_stopping_patience": 2, "eval_strategy": "epoch", "eval_split_ratio": 0.1, "save_strategy": "epoch"})
    assert not warned(aligned, "save_strategy")


def test_warmup_steps_and_max_steps_override_with_a_warning() -> None:
    result = rules({"warmup_steps": 10, "max_steps": 50})
    assert result.ok
    assert "Warmup steps (10)" in warned(result, "warmup_ratio")[0]
    assert "Max training steps (50)" in warned(result, "num_train_epochs")[0]
    assert rules({}).warnings == []


def test_lr_cycles_only_matter_for_cosine_with_restarts() -> None:
    changed = PARAMS["lr_num_cycles"].default + 1
    assert "cosine_with_restarts" in warned(rules({"lr_num_cycles": changed, "lr_scheduler_type": "linear"}), "lr_num_cycles")[0]
    assert not rules({"lr_num_cycles": changed, "lr_scheduler_type": "cosine_with_restarts"}).warnings
    assert not rules({"lr_scheduler_type": "linear"}).warnings


def test_lora_switched_on_for_pretraining_is_a_warning_not_an_error() -> None:
    result = rules({"use_lora": True}, "pretrain")
    assert result.ok and "pre-training" in warned(result, "use_lora")[0]
    assert not warned(rules({"use_lora": False}, "pretrain"), "use_lora")
    assert not warned(rules({"use_lora": True}, "sft"), "use_lora")


def test_attach_lora_needs_an_adapter_path() -> None:
    assert "Attach LoRA" in rules({"attach_lora": True}).errors["lora_adapter_path"]
    assert rules({"attach_lora": True, "lora_adapter_path": "adapter"}).ok
    assert rules({"attach_lora": False}).ok


def test_lora_needs_at_least_one_target_module() -> None:
    assert "at least one" in rules({"lora_target_modules": []}).errors["lora_target_modules"]
    assert rules({"lora_target_modules": [], "use_lora": False}).ok


# -- paths on real files -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    """A tiny Hugging Face model, a LoRA adapter saved by peft, and a checkpoint's trainer_state.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerState

    from modx_widgets.testing import make_tiny_model

    root = tmp_path_factory.mktemp("real")
    model = make_tiny_model(root / "model")
    adapter = root / "adapter"
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), lora).save_pretrained(adapter)
    checkpoint = root / "out" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    TrainerState(global_step=5).save_to_json(str(checkpoint / "trainer_state.json"))
    train = root / "train.jsonl"
    train.write_text('{"messages": []}\n')
    return {"model": model, "adapter": adapter, "checkpoint": checkpoint, "train": train, "root": root}


def real_values(real, **extra) -> dict:
    return {"train_file": real["train"], "output_dir": real["root"] / "new" / "out", "model_path": real["model"], **extra}


def test_real_model_adapter_and_checkpoint_pass_every_path_check(real) -> None:
    values = real_values(
        real,
        tokenizer_path=real["model"],
        resume_from_checkpoint=real["checkpoint"],
        attach_lora=True,
        lora_adapter_path=real["adapter"],
        peft_config_path=real["adapter"] / "adapter_config.json",
        eval_file=real["train"],
    )
    result = validate(values, "sft")
    assert result.errors == {} and result.warnings == []


def test_check_paths_false_skips_the_file_system(tmp_path: Path) -> None:
    values = {"train_file": tmp_path / "nope", "output_dir": tmp_path / "o", "model_path": tmp_path / "nope"}
    assert validate(values, "sft", check_paths=False).ok
    errors = validate(values, "sft").errors
    assert errors["train_file"].startswith("not found") and errors["model_path"].startswith("not found")


def test_gguf_file_or_gguf_only_folder_is_refused_as_an_inference_format(real, tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert validate(real_values(real, model_path=gguf)).errors["model_path"] == GGUF_MESSAGE
    folder = tmp_path / "gguf_model"
    folder.mkdir()
    (folder / "model-q4.gguf").write_bytes(b"GGUF")
    assert GGUF_MESSAGE in validate(real_values(real, model_path=folder)).errors["model_path"]


def copy_model(real, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    target = tmp_path / "model_copy"
    target.mkdir()
    for item in real["model"].iterdir():
        if item.name not in drop:
            (target / item.name).write_bytes(item.read_bytes())
    return target


def test_model_folder_without_config_json_is_refused(real, tmp_path: Path) -> None:
    folder = copy_model(real, tmp_path, drop=("config.json",))
    assert "no config.json" in validate(real_values(real, model_path=folder)).errors["model_path"]


def test_model_folder_with_broken_config_json_is_refused(real, tmp_path: Path) -> None:
    folder = copy_model(real, tmp_path)
    (folder / "config.json").write_text('{"model_type": "llama",')
    assert "not valid JSON" in validate(real_values(real, model_path=folder)).errors["model_path"]


def test_model_folder_without_weights_is_refused(real, tmp_path: Path) -> None:
    folder = copy_model(real, tmp_path, drop=("model.safetensors",))
    assert "no *.safetensors" in validate(real_values(real, model_path=folder)).errors["model_path"]


def test_model_folder_with_only_bin_weights_is_a_warning(real, tmp_path: Path) -> None:
    folder = copy_model(real, tmp_path, drop=("model.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"\x80")
    result = validate(real_values(real, model_path=folder))
    assert "model_path" not in result.errors and ".bin" in warned(result, "model_path")[0]


def test_model_path_that_is_a_plain_file_is_refused(real) -> None:
    assert "is a file" in validate(real_values(real, model_path=real["train"])).errors["model_path"]


def test_output_dir_that_is_a_file_or_under_a_file_is_refused(real) -> None:
    assert "is a file" in validate(real_values(real, output_dir=real["train"])).errors["output_dir"]
    under = validate(real_values(real, output_dir=real["train"] / "sub")).errors["output_dir"]
    assert "cannot be created" in under


def test_data_files_must_exist_and_be_files(real) -> None:
    assert validate(real_values(real, train_file=real["root"])).errors["train_file"].startswith("is a folder")
    missing = validate(real_values(real, eval_file=real["root"] / "eval.jsonl")).errors["eval_file"]
    assert missing.startswith("not found")


def test_tokenizer_folder_needs_tokenizer_files(real, tmp_path: Path) -> None:
    assert "no tokenizer files" in validate(real_values(real, tokenizer_path=tmp_path)).errors["tokenizer_path"]


def test_peft_config_must_be_a_lora_config(real, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix.json"
    prefix.write_text(json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8}))
    assert "only LoRA" in validate(real_values(real, peft_config_path=prefix)).errors["peft_config_path"]
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "not valid JSON" in validate(real_values(real, peft_config_path=broken)).errors["peft_config_path"]
    no_type = tmp_path / "plain.json"
    no_type.write_text("{}")
    assert "no peft_type" in validate(real_values(real, peft_config_path=no_type)).errors["peft_config_path"]
    assert "is a folder" in validate(real_values(real, peft_config_path=real["adapter"])).errors["peft_config_path"]


def test_resume_path_must_be_a_checkpoint_and_the_newest_one_is_suggested(real, tmp_path: Path) -> None:
    out = real["checkpoint"].parent
    message = validate(real_values(real, resume_from_checkpoint=out)).errors["resume_from_checkpoint"]
    assert "not a checkpoint" in message and "checkpoint-5" in message
    torn = tmp_path / "checkpoint-9"
    torn.mkdir()
    (torn / "trainer_state.json").write_text('{"global_step": ')
    assert "incomplete" in validate(real_values(real, resume_from_checkpoint=torn)).errors["resume_from_checkpoint"]


def test_attached_adapter_folder_must_hold_a_lora_adapter(real, tmp_path: Path) -> None:
    errors = validate(real_values(real, attach_lora=True, lora_adapter_path=tmp_path)).errors
    assert "adapter_config.json" in errors["lora_adapter_path"]


def test_validate_imports_no_ml_library(real) -> None:
    code = (
        "import sys\nfrom modx_widgets.config import validate\n"
        f"r = validate({{'model_path': {str(real['model'])!r}, 'train_file': 'x'}}, 'sft')\n"
        "assert 'model_path' not in r.errors, r.errors\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_numeric_outside_value_is_really_outside() -> None:
    """Guard for the generator above: 'just outside' must not round back inside the range."""
    for key in NUMERIC:
        low, high = outside(PARAMS[key])
        assert low < PARAMS[key].minimum and high > PARAMS[key].maximum
        assert math.isfinite(low) and math.isfinite(high)
