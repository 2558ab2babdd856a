"""The LLaMA-Factory config carries our hyperparameters, read from the schema, not retyped."""

import subprocess
from pathlib import Path

import pytest
import yaml
from lf_config import lf_train_config, write_config

from modx_widgets.config.validate import validate

LF_PYTHON = Path(__file__).resolve().parents[2] / "_work" / "lf-venv" / "bin" / "python"


def _values(**overrides):
    result = validate({"train_file": "t.jsonl", "model_path": "m", "output_dir": "o", **overrides}, "sft",
                      check_paths=False)
    assert not result.errors, result.errors
    return result.values


def _config(values, **kw):
    return lf_train_config(values, model_dir="/m", dataset_dir="/d", dataset="ds", output_dir="/o", **kw)


def test_hyperparameters_follow_the_task_values():
    values = _values(learning_rate=3e-4, lora_r=8, lora_alpha=32, lora_dropout=0.05, max_seq_length=384,
                     per_device_train_batch_size=4, gradient_accumulation_steps=2, seed=7,
                     lora_target_modules=["q_proj", "k_proj"], lr_scheduler_type="linear", warmup_steps=3)
    cfg = _config(values)
    assert cfg["learning_rate"] == 3e-4 and cfg["lr_scheduler_type"] == "linear"
    assert (cfg["lora_rank"], cfg["lora_alpha"], cfg["lora_dropout"]) == (8, 32, 0.05)
    assert cfg["lora_target"] == "q_proj,k_proj"
    assert cfg["cutoff_len"] == 384
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (4, 2)
    assert cfg["seed"] == 7 and cfg["warmup_steps"] == 3


def test_defaults_come_from_the_schema():
    values = _values()
    cfg = _config(values)
    assert cfg["learning_rate"] == values["learning_rate"]
    assert cfg["lora_rank"] == values["lora_r"]
    assert cfg["weight_decay"] == values["weight_decay"]
    assert cfg["warmup_steps"] == pytest.approx(values["warmup_ratio"])  # a float < 1 is a ratio


@pytest.mark.parametrize("gc, expected", [
    (None, {}),
    (False, {"disable_gradient_checkpointing": True}),
    (True, {"disable_gradient_checkpointing": False, "use_reentrant_gc": False}),
])
def test_gradient_checkpointing_is_default_off_or_non_reentrant(gc, expected):
    cfg = _config(_values(), gradient_checkpointing=gc)
    got = {k: cfg[k] for k in ("disable_gradient_checkpointing", "use_reentrant_gc") if k in cfg}
    assert got == expected


def test_fixed_order_when_reshuffle_is_off_and_random_when_on():
    assert _config(_values(reshuffle=False))["disable_shuffling"] is True
    assert "disable_shuffling" not in _config(_values(reshuffle=True))


def test_fp16_is_not_passed_on_cpu_because_ours_trains_fp32_there():
    cfg = _config(_values(fp16=True))
    assert cfg["fp16"] is False and cfg["bf16"] is False


def test_lora_off_means_full_fine_tuning_without_lora_keys():
    cfg = _config(_values(use_lora=False))
    assert cfg["finetuning_type"] == "full"
    assert not [k for k in cfg if k.startswith("lora_")]
    assert _config(_values())["finetuning_type"] == "lora"


def test_written_yaml_round_trips(tmp_path):
    cfg = _config(_values())
    path = write_config(cfg, tmp_path / "x" / "train.yaml")
    assert yaml.safe_load(path.read_text()) == cfg


@pytest.mark.allow_skip(reason="needs the LLaMA-Factory venv, which only the benchmark builds")
@pytest.mark.skipif(not LF_PYTHON.exists(), reason="LLaMA-Factory venv not built (bash bench/llamafactory/setup.sh)")
def test_llamafactory_accepts_every_key_we_write(tmp_path):
    """Parse our config with LLaMA-Factory's own argument parser (strict: unknown keys fail)."""
    path = write_config(_config(_values()), tmp_path / "train.yaml")
    code = (
        "import sys, yaml\n"
        "from llamafactory.hparams.parser import _TRAIN_ARGS, HfArgumentParser\n"
        "HfArgumentParser(_TRAIN_ARGS).parse_dict(yaml.safe_load(open(sys.argv[1])), allow_extra_keys=False)\n"
        "print('parsed')\n"
    )
    proc = subprocess.run([str(LF_PYTHON), "-c", code, str(path)], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "parsed" in proc.stdout, proc.stderr[-2000:]
