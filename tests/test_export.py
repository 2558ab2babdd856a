"""Export and import: the standalone script trains like the engine, the command lines run the
task, the LLaMA-Factory YAML round-trips the shared settings, TrainingArguments come out as JSON."""

from __future__ import annotations

import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from modx_widgets.config.validate import validate
from modx_widgets.export import (
    ExportError,
    from_llamafactory_yaml,
    to_cli_command,
    to_llamafactory_yaml,
    to_python_script,
    training_arguments_json,
)
from modx_widgets.schema.spec import load_schema
from modx_widgets.store import Workspace
from modx_widgets.testing import CHAT_TEMPLATE, make_pretrain_data, make_sft_data, make_tiny_model

# Our parameters LLaMA-Factory has no key for; everything else must survive a round trip.
NOT_IN_LLAMAFACTORY = {
    "tokenizer_path", "merge_lora", "peft_config_path", "save_interval_minutes", "early_stopping_threshold",
}
BLOCK_MODX = "import sys, runpy; sys.modules['modx_widgets'] = None; sys.argv = sys.argv[1:]; " \
             "runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def _task_values(root: Path, model: Path, training_type: str, **extra) -> dict:
    if training_type == "sft":
        data = make_sft_data(root / "train.jsonl", n=40, seed=3)
    else:
        data = make_pretrain_data(root / "train.txt", n=80, seed=3)
    values = dict(
        model_path=str(model), train_file=str(data), output_dir=str(root / "out_engine"), seed=7,
        max_steps=5, logging_steps=1, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        learning_rate=1e-3, max_seq_length=128, save_strategy="no", dataloader_num_workers=0,
    )
    values.update(extra)
    return values


def _script_namespace(script: str, tmp_path: Path) -> dict:
    path = tmp_path / "exported.py"
    path.write_text(script)
    return runpy.run_path(str(path), run_name="exported_for_test")


# ------------------------------------------------------------------------------------ the script


def _engine_logs(workspace: Workspace, name: str) -> tuple[list[float], list[float]]:
    events = workspace.read_events(name)
    return ([e.loss for e in events if e.kind == "log"], [e.eval_loss for e in events if e.kind == "eval"])


def _script_logs(output_dir: Path) -> tuple[list[float], list[float]]:
    history = json.loads((output_dir / "log_history.json").read_text())
    return ([h["loss"] for h in history if "loss" in h], [h["eval_loss"] for h in history if "eval_loss" in h])


def _run(command: list[str], cwd: Path) -> None:
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (command, out.stdout[-3000:], out.stderr[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize(
    "training_type, device, launcher, extra",
    [
        ("sft", "auto", "modx-train", dict(eval_split_ratio=0.1, eval_strategy="steps", eval_steps=2)),
        ("pretrain", "cpu", "accelerate", dict(max_samples=60)),
    ],
    ids=["sft-lora-eval-via-modx-train", "pretrain-via-accelerate"],
)
def test_exported_script_logs_the_same_losses_as_the_engine(tiny, tmp_path, training_type, device, launcher, extra):
    workspace = Workspace(tmp_path / "ws")
    record = workspace.create_task(
        "task1", training_type, None, device, _task_values(tmp_path, tiny, training_type, **extra)
    )
    # the engine, started by the exported command line
    command = shlex.split(to_cli_command(record, workspace.root, launcher=launcher))
    command[0] = str(Path(sys.executable).parent / command[0])  # the venv's modx-train / accelerate
    _run(command, tmp_path)
    assert workspace.read_status("task1").state == "Completed"
    engine_loss, engine_eval = _engine_logs(workspace, "task1")

    # the script, where modx_widgets cannot be imported
    script = tmp_path / "train_task1.py"
    script.write_text(to_python_script(workspace.load_task("task1")))
    assert not re.search(r"^\s*(import|from)\s+modx_widgets", script.read_text(), re.MULTILINE)
    _run([sys.executable, "-c", BLOCK_MODX, str(script), "--output-dir", str(tmp_path / "out_script")], tmp_path)
    script_loss, script_eval = _script_logs(tmp_path / "out_script")

    assert len(engine_loss) == 5 and len(script_loss) == 5
    assert script_loss == pytest.approx(engine_loss, abs=1e-5)
    assert script_eval == pytest.approx(engine_eval, abs=1e-5)
    assert bool(engine_eval) == ("eval_strategy" in extra)
    assert (tmp_path / "out_script" / ("adapter_config.json" if training_type == "sft" else "config.json")).is_file()


@pytest.mark.parametrize(
    "training_type, extra",
    [
        ("sft", dict(eval_split_ratio=0.2, max_samples=30)),
        ("sft", dict(max_seq_length=128)),
        ("pretrain", dict(eval_split_ratio=0.1, max_samples=50)),
    ],
)
def test_script_builds_the_same_examples_as_the_engine(tiny, tmp_path, training_type, extra):
    from modx_widgets.data import load_datasets
    from modx_widgets.run.model import load_tokenizer

    values = validate(_task_values(tmp_path, tiny, training_type, **extra), training_type, check_paths=False).values
    ns = _script_namespace(to_python_script(values, training_type), tmp_path)
    tokenizer = ns["load_tokenizer"](ns["CONFIG"])
    script_train, script_eval = ns["build_datasets"](ns["CONFIG"], tokenizer)
    engine = load_datasets(values, training_type, load_tokenizer(values))
    for ours, theirs in ((script_train, engine.train), (script_eval, engine.eval)):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours["input_ids"] == theirs["input_ids"]
            assert ours["labels"] == theirs["labels"]
    if training_type == "sft":
        assert any(-100 in row for row in script_train["labels"])  # prompts are masked


def test_script_labels_match_the_engine_for_a_template_without_generation_tags(tiny, tmp_path):
    from transformers import AutoTokenizer

    from modx_widgets.data import load_datasets
    from modx_widgets.run.model import load_tokenizer

    plain = tmp_path / "plain_tokenizer"
    tok = AutoTokenizer.from_pretrained(tiny)
    tok.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tok.save_pretrained(plain)
    values = validate(
        _task_values(tmp_path, tiny, "sft", tokenizer_path=str(plain)), "sft", check_paths=False
    ).values
    ns = _script_namespace(to_python_script(values, "sft"), tmp_path)
    script_train, _ = ns["build_datasets"](ns["CONFIG"], ns["load_tokenizer"](ns["CONFIG"]))
    engine = load_datasets(values, "sft", load_tokenizer(values))
    assert script_train["labels"] == engine.train["labels"]
    assert script_train["input_ids"] == engine.train["input_ids"]


def test_script_training_arguments_equal_the_engines(tiny, tmp_path):
    from transformers import TrainingArguments

    from modx_widgets.config.build import training_arguments

    extra = dict(lr_scheduler_type="cosine_with_restarts", lr_num_cycles=3, warmup_steps=4, reshuffle=True,
                 eval_split_ratio=0.1, eval_strategy="steps", eval_steps=10, save_steps=20, save_strategy="steps",
                 early_stopping_patience=2, gradient_checkpointing=False)
    values = validate(_task_values(tmp_path, tiny, "sft", **extra), "sft", check_paths=False).values
    ns = _script_namespace(to_python_script(values, "sft"), tmp_path)
    script_args = TrainingArguments(**ns["fit_arguments_to_hardware"](dict(ns["TRAINING_ARGS"]))).to_dict()
    engine_args = training_arguments(values, "sft").to_dict()
    assert script_args == engine_args


def test_script_carries_the_adapter_from_a_peft_config_file(tiny, tmp_path):
    adapter = tmp_path / "adapter_config.json"
    adapter.write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["o_proj"],
                                   "base_model_name_or_path": "somewhere"}))
    values = _task_values(tmp_path, tiny, "sft", peft_config_path=str(adapter))
    lora = _script_namespace(to_python_script(values, "sft"), tmp_path)["CONFIG"]["lora"]
    assert (lora["r"], lora["lora_alpha"], lora["target_modules"]) == (4, 8, ["o_proj"])
    assert "base_model_name_or_path" not in lora


def test_script_refuses_values_a_run_would_refuse(tiny, tmp_path):
    values = _task_values(tmp_path, tiny, "sft", fp16=True, bf16=True)
    with pytest.raises(ExportError, match="bf16"):
        to_python_script(values, "sft")
    with pytest.raises(ExportError, match="training_type"):
        to_python_script(values)
    with pytest.raises(ExportError, match="train_file"):
        to_python_script({"model_path": str(tiny)}, "sft")


# ------------------------------------------------------------------------------------ command lines


def test_command_lines_follow_the_task_device():
    task = lambda device: SimpleNamespace(name="sft_1", device=device)  # noqa: E731
    assert shlex.split(to_cli_command(task("auto"), "/ws")) == ["modx-train", "sft_1", "--workspace", "/ws"]
    cpu = shlex.split(to_cli_command(task("cpu"), "/ws", launcher="accelerate"))
    assert cpu[:2] == ["accelerate", "launch"] and "--cpu" in cpu and cpu[-5:] == [
        "-m", "modx_widgets.cli", "sft_1", "--workspace", "/ws"]
    pair = shlex.split(to_cli_command(task("cuda:0,cuda:2"), "/ws", launcher="accelerate"))
    assert "--multi_gpu" in pair and pair[pair.index("--gpu_ids") + 1] == "0,2"
    assert pair[pair.index("--num_processes") + 1] == "2"
    torchrun = to_cli_command(task("cuda:0,cuda:2"), "/ws", launcher="torchrun")
    assert torchrun.startswith("CUDA_VISIBLE_DEVICES=0,2 ") and "--nproc_per_node=2" in torchrun
    with pytest.raises(ExportError, match="launcher"):
        to_cli_command(task("auto"), "/ws", launcher="deepspeed")


# ------------------------------------------------------------------------------------ LLaMA-Factory


def _full_values(tmp_path: Path, **extra) -> dict:
    values = dict(
        train_file=str(tmp_path / "data" / "train.jsonl"), eval_file=str(tmp_path / "data" / "eval.jsonl"),
        model_path=str(tmp_path / "model"), output_dir=str(tmp_path / "out"),
        resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-10"),
        per_device_train_batch_size=4, gradient_accumulation_steps=8, max_seq_length=1024, learning_rate=3e-4,
        optim="adamw_8bit", lr_scheduler_type="cosine_with_restarts", lr_num_cycles=4, num_train_epochs=5,
        weight_decay=0.05, warmup_ratio=0.2, warmup_steps=7, max_grad_norm=0.5, max_steps=300,
        save_strategy="steps", save_steps=50, save_total_limit=3, eval_strategy="steps", eval_steps=25,
        early_stopping_patience=4, lora_r=32, lora_alpha=64, lora_dropout=0.05,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], fp16=False, bf16=True, tf32=True,
        gradient_checkpointing=False, log_level="warning", logging_steps=5, seed=1234, max_samples=500,
        reshuffle=True, dataloader_num_workers=4, dataloader_pin_memory=True,
    )
    values.update(extra)
    return values


@pytest.mark.parametrize(
    "training_type, extra",
    [
        ("sft", {}),
        ("sft", dict(use_lora=False, reshuffle=False, gradient_checkpointing=True, eval_file=None,
                     eval_split_ratio=0.15, lr_scheduler_type="linear", max_samples=0)),
        ("sft", dict(attach_lora=True, lora_adapter_path="/adapters/a1", early_stopping_patience=0)),
        ("pretrain", dict(eval_file=None, eval_strategy="no", early_stopping_patience=0, save_strategy="no")),
    ],
)
def test_yaml_round_trip_keeps_every_shared_value(tmp_path, training_type, extra):
    original = validate(_full_values(tmp_path, **extra), training_type, check_paths=False).values
    text, not_carried = to_llamafactory_yaml(original, training_type)
    imported, imported_type, import_notes = from_llamafactory_yaml(text)
    assert imported_type == training_type
    schema = load_schema()
    context = {**original, "training_type": training_type}
    shared = {k for k in schema.params if schema.visible(k, context)} - NOT_IN_LLAMAFACTORY
    # only written where they have an effect
    if original["lr_scheduler_type"] != "cosine_with_restarts":
        shared.discard("lr_num_cycles")
    if not original["use_lora"]:
        shared -= {"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}
    differing = {k: (original[k], imported[k]) for k in shared if original[k] != imported[k]}
    assert differing == {}
    assert import_notes == []


def test_yaml_export_lists_what_does_not_carry_over(tmp_path):
    values = _full_values(tmp_path, tokenizer_path="/tok", merge_lora=True, early_stopping_threshold=0.01,
                          eval_file=str(tmp_path / "elsewhere" / "eval.jsonl"))
    text, not_carried = to_llamafactory_yaml(values, "sft")
    for key in ("tokenizer_path", "merge_lora", "save_interval_minutes", "early_stopping_threshold", "eval_file"):
        assert any(note.startswith(key) for note in not_carried), key
    assert "\neval_dataset:" not in text
    assert "dataset_info.json" in text and '"formatting": "sharegpt"' in text


def test_yaml_import_uses_llamafactory_defaults_and_its_dataset_info(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps({"chats": {"file_name": "chats_v2.jsonl"}}))
    text = f"model_name_or_path: /m\nstage: sft\ndataset: chats\ndataset_dir: {data}\noutput_dir: /o\n" \
           "lora_rank: 12\nlora_target: all\n"
    values, training_type, notes = from_llamafactory_yaml(text)
    assert training_type == "sft" and values["use_lora"] is True
    assert values["train_file"] == str(data / "chats_v2.jsonl")
    assert values["lora_alpha"] == 2 * values["lora_r"] == 24  # LLaMA-Factory's default alpha
    options = load_schema().params["lora_target_modules"].options
    assert values["lora_target_modules"] == [o for o in options if o.endswith("_proj")]
    assert validate(values, training_type, check_paths=False).ok
    assert [n.split(":")[0] for n in notes] == ["save_total_limit"]  # LLaMA-Factory keeps every checkpoint


def test_yaml_import_reports_what_it_cannot_take(tmp_path):
    text = "model_name_or_path: /m\nstage: sft\ndataset: a,b\noutput_dir: /o\ncutoff_len: 100000\nuse_dora: true\n" \
           "lora_target: q_proj,mlp.fc1\ntemplate: qwen\n"
    values, _, notes = from_llamafactory_yaml(text)
    assert values["max_seq_length"] == load_schema().params["max_seq_length"].default
    for fragment in ("max_seq_length", "use_dora", "mlp.fc1", "template", "dataset"):
        assert any(fragment in n for n in notes), fragment
    assert values["lora_target_modules"] == ["q_proj"]
    with pytest.raises(ExportError, match="stage"):
        from_llamafactory_yaml("model_name_or_path: /m\nstage: dpo\n")
    with pytest.raises(ExportError, match="mapping"):
        from_llamafactory_yaml("- just\n- a list\n")


# ------------------------------------------------------------------------------------ TrainingArguments


def test_training_arguments_json_is_what_the_engine_builds(tiny, tmp_path):
    from modx_widgets.config.build import training_arguments

    values = _task_values(tmp_path, tiny, "pretrain", max_steps=42, learning_rate=3e-4)
    text = training_arguments_json(values, "pretrain")
    parsed = json.loads(text)
    assert parsed["max_steps"] == 42 and parsed["learning_rate"] == 3e-4
    clean = validate(values, "pretrain", check_paths=False).values
    expected = json.loads(json.dumps(training_arguments(clean, "pretrain").to_dict(), default=str))
    assert parsed == expected


def test_export_package_imports_nothing_heavy():
    code = "import sys, modx_widgets.export; print([m for m in ('torch', 'transformers', 'peft', 'yaml', " \
           "'datasets') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
