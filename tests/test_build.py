"""The parameter -> TrainingArguments / LoraConfig mapping (config/build.py)."""

from __future__ import annotations

import json

import pytest

from modx_widgets.config import build
from modx_widgets.config.validate import validate
from modx_widgets.schema.spec import load_schema


def clean(training_type: str = "sft", **overrides):
    """Schema defaults plus overrides, run through the real validation (paths not checked)."""
    values = {"output_dir": "/tmp/modx-build-test", "train_file": "/tmp/t.jsonl", "model_path": "/tmp/m", **overrides}
    result = validate(values, training_type, check_paths=False)
    assert not result.errors, result.errors
    return result.values


def test_every_schema_parameter_has_a_documented_destination():
    assert set(build.PARAM_MAP) == set(load_schema().params)


def test_every_parameter_is_in_the_engine_doc_table():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "engine.md").read_text(encoding="utf-8")
    missing = [k for k in load_schema().params if f"`{k}`" not in doc]
    assert not missing


def test_warmup_steps_above_zero_wins_over_the_ratio():
    args = build.training_arguments(clean(warmup_steps=7, warmup_ratio=0.5), device="cpu")
    assert args.warmup_steps == 7
    assert args.get_warmup_steps(1000) == 7


def test_warmup_ratio_is_used_when_warmup_steps_is_zero():
    args = build.training_arguments(clean(warmup_steps=0, warmup_ratio=0.25), device="cpu")
    assert args.get_warmup_steps(40) == 10


def test_a_warmup_ratio_of_one_warms_up_over_every_step_not_one():
    args = build.training_arguments(clean(warmup_steps=0, warmup_ratio=1.0), device="cpu")
    assert args.get_warmup_steps(40) == 40


def test_max_steps_above_zero_wins_over_epochs_and_minus_one_means_epochs():
    assert build.training_arguments(clean(max_steps=12, num_train_epochs=5), device="cpu").max_steps == 12
    args = build.training_arguments(clean(max_steps=-1, num_train_epochs=5), device="cpu")
    assert args.max_steps == -1 and args.num_train_epochs == 5


def test_lr_num_cycles_reaches_cosine_with_restarts_only():
    args = build.training_arguments(clean(lr_scheduler_type="cosine_with_restarts", lr_num_cycles=3), device="cpu")
    assert args.lr_scheduler_kwargs == {"num_cycles": 3}
    assert not build.training_arguments(clean(lr_scheduler_type="cosine", lr_num_cycles=3), device="cpu").lr_scheduler_kwargs


@pytest.mark.parametrize("optim", load_schema().param("optim").options)
def test_each_optimizer_name_is_accepted_by_transformers(optim):
    args = build.training_arguments(clean(optim=optim), device="cpu")
    assert args.optim.value == optim


def test_fp16_and_tf32_on_cpu_become_fp32_with_a_note_and_bf16_stays():
    plan = build.plan_precision({"fp16": True, "bf16": False, "tf32": True}, on_gpu=False)
    assert (plan.fp16, plan.tf32) == (False, False)
    assert any("fp16" in n for n in plan.notes) and any("tf32" in n for n in plan.notes)
    args = build.training_arguments(clean(fp16=True, tf32=True), device="cpu")
    assert not args.fp16 and not args.tf32
    bf = build.training_arguments(clean(fp16=False, bf16=True), device="cpu")
    assert bf.bf16 and bf.use_cpu


def test_fp16_on_a_gpu_is_kept_without_notes():
    plan = build.plan_precision({"fp16": True, "bf16": False, "tf32": True}, on_gpu=True)
    assert plan.fp16 and plan.tf32 and not plan.notes


def test_fp16_with_bf16_is_refused():
    with pytest.raises(build.BuildError, match="choose one"):
        build.plan_precision({"fp16": True, "bf16": True}, on_gpu=True)


def test_gradient_checkpointing_is_non_reentrant_activation_checkpointing():
    args = build.training_arguments(clean(gradient_checkpointing=True), device="cpu")
    assert args.activation_checkpointing is True
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert not build.training_arguments(clean(gradient_checkpointing=False), device="cpu").activation_checkpointing


def test_reshuffle_selects_per_epoch_sampling_and_off_selects_the_data_rooms_fixed_order():
    def strategy(training_type="sft", **overrides):
        return build.training_arguments(clean(training_type, **overrides), training_type, device="cpu").train_sampling_strategy

    assert strategy(reshuffle=True, group_by_length=False) == "random"
    assert strategy(reshuffle=True) == "group_by_length"  # the default groups lengths
    assert strategy(reshuffle=False) == strategy(reshuffle=False, group_by_length=False) == "sequential"


@pytest.mark.parametrize(
    "overrides",
    [dict(per_device_train_batch_size=1), dict(padding_free=True), dict(group_by_length=False)],
    ids=["batch-of-one", "padding-free", "switched-off"],
)
def test_length_grouping_only_where_batches_are_padded(overrides):
    assert build.length_grouping(clean(), "sft")
    assert not build.length_grouping(clean(**overrides), "sft")
    assert not build.length_grouping(clean("pretrain"), "pretrain")  # blocks are all the same length
    assert build.training_arguments(clean(reshuffle=True, **overrides), device="cpu").train_sampling_strategy == "random"


def test_progress_and_reporting_belong_to_us():
    args = build.training_arguments(clean(), device="cpu")
    assert args.report_to == [] and args.disable_tqdm
    assert not args.logging_nan_inf_filter  # it would sync the GPU with the host at every micro-batch
    assert args.save_only_model is False  # optimizer state is kept for resume


def test_early_stopping_watches_eval_loss_and_loads_the_best_model_when_saves_align():
    values = clean(
        eval_split_ratio=0.1, eval_strategy="steps", eval_steps=5, save_strategy="steps", save_steps=10,
        early_stopping_patience=2,
    )
    args = build.training_arguments(values, device="cpu")
    assert args.metric_for_best_model == "eval_loss" and args.greater_is_better is False
    assert args.load_best_model_at_end is True


def test_early_stopping_without_checkpoints_keeps_last_weights_and_says_why():
    values = clean(eval_split_ratio=0.1, eval_strategy="steps", save_strategy="no", early_stopping_patience=2)
    load_best, note = build.early_stopping_plan(values)
    assert load_best is False and "save_strategy" in note
    assert build.training_arguments(values, device="cpu").load_best_model_at_end is False


def test_cuda_devices_are_refused_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(build.BuildError, match="CUDA"):
        build.training_arguments(clean(), device="cuda:0")


@pytest.mark.parametrize("text,expected", [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda:3", ("cuda", 3)),
                                           ("all", ("all", None)), ("cuda", ("cuda", 0))])
def test_device_strings_are_parsed(text, expected):
    assert build.parse_device(text) == expected


def test_an_unknown_device_string_is_an_actionable_error():
    with pytest.raises(build.BuildError, match="cuda:N"):
        build.parse_device("gpu7")


def test_overrides_replace_single_arguments():
    assert build.training_arguments(clean(), device="cpu", logging_steps=3).logging_steps == 3


# -- LoRA ----------------------------------------------------------------------------------


def test_lora_config_follows_the_form_values():
    cfg = build.lora_config(clean(lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_target_modules=["q_proj", "o_proj"]))
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 8, 0.1)
    assert set(cfg.target_modules) == {"q_proj", "o_proj"}


def test_no_lora_for_pretraining_or_when_switched_off():
    assert build.lora_config(clean("pretrain"), training_type="pretrain") is None
    assert build.lora_config(clean(use_lora=False)) is None


def test_peft_config_file_replaces_the_form_lora_values(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"peft_type": "LORA", "r": 3, "lora_alpha": 6, "target_modules": ["k_proj"],
                                "base_model_name_or_path": "elsewhere", "some_future_key": 1}))
    cfg = build.lora_config(clean(lora_r=16, peft_config_path=str(path)))
    assert cfg.r == 3 and cfg.lora_alpha == 6 and set(cfg.target_modules) == {"k_proj"}


def test_a_non_lora_peft_config_is_refused(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"peft_type": "IA3", "target_modules": ["k_proj"]}))
    with pytest.raises(build.BuildError, match="IA3"):
        build.lora_config(clean(peft_config_path=str(path)))


@pytest.fixture(scope="module")
def gpt2_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from modx_widgets.testing import make_tiny_model

    return AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("m") / "gpt2", arch="gpt2"))


def test_a_target_module_the_model_lacks_is_an_error_listing_the_ones_it_has(gpt2_model):
    with pytest.raises(build.BuildError) as info:
        build.lora_config(clean(lora_target_modules=["q_proj", "v_proj"]), gpt2_model)
    text = str(info.value)
    assert "q_proj" in text and "c_attn" in text and "c_fc" in text
