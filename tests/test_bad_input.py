"""Bad input, end to end: every case is refused through a public entry point (`TrainingRun.start`,
`PrepareWidget.start`/`load_template`, the `modx-train` CLI) with a message that names the field,
the file and the line, before anything is trained, and with the whole test folder (workspace,
model, data, output) byte-for-byte unchanged.

The unit-level checks live with their rooms (tests/test_validate.py, test_store.py,
test_data.py); this file proves that each of them is wired into every way a run can start.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from test_faults_support import changes, snapshot, write_json
from test_run_support import make_task, run_task, update_task

from modx_widgets.config.validate import validate
from modx_widgets.run import TaskInvalid, TrainingRun, active_run
from modx_widgets.schema.spec import load_schema
from modx_widgets.store import StoreError, Workspace

SCHEMA = load_schema()
PARAMS = SCHEMA.params
GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def jsonl(*records: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# ----------------------------------------------------------------------------------------------
# Real checkpoints and a second model, made once for the resume cases
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A LoRA checkpoint and a full-model checkpoint of the tiny Llama, and a differently shaped Llama."""
    root = tmp_path_factory.mktemp("shared")
    ws, lora, values = make_task(root, "lora", max_steps=1, save_strategy="steps", save_steps=1)
    assert run_task(ws, lora)[0] == "Completed"
    ws, pre, pvalues = make_task(root, "pre", "pretrain", max_steps=1, save_strategy="steps", save_steps=1)
    assert run_task(ws, pre)[0] == "Completed"
    return {
        "root": root,
        "lora_ckpt": Path(values["output_dir"]) / "checkpoint-1",
        "full_ckpt": Path(pvalues["output_dir"]) / "checkpoint-1",
        "other_model": narrow_llama(Path(values["model_path"]), root / "other-model"),
    }


def narrow_llama(tiny: Path, target: Path) -> Path:
    """A Llama with the same tokenizer and module names as `tiny` but half its width."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(tiny, target)
    cfg = json.loads((tiny / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"] // 2, intermediate_size=64,
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(target)
    return target


# ----------------------------------------------------------------------------------------------
# The catalogue: one task per case, refused by TrainingRun.start() with nothing changed
# ----------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    tmp: Path
    values: dict[str, Any]
    shared: dict[str, Path]

    def file(self, name: str, content: str | bytes) -> str:
        p = self.tmp / "bad" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return str(p)

    def folder(self, name: str) -> Path:
        p = self.tmp / "bad" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        p = self.tmp / "bad" / name
        shutil.copytree(self.values["model_path"], p)
        for pattern in drop:
            for f in p.glob(pattern):
                f.unlink()
        return p

    def data(self, index: int, record: Any) -> str:
        """The training file with line `index` (0-based) replaced by `record`."""
        lines = Path(self.values["train_file"]).read_text().splitlines()
        lines[index] = record if isinstance(record, str) else json.dumps(record)
        return self.file("train.jsonl", "\n".join(lines) + "\n")


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], dict[str, Any]]
    key: str
    fragments: tuple[str, ...]
    training_type: str = "sft"
    base: dict[str, Any] = field(default_factory=dict)


def _gguf_folder(c: Ctx) -> dict:
    folder = c.folder("gguf-model")
    (folder / "model-Q4_K_M.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    return {"model_path": str(folder)}


def _model_with(c: Ctx, name: str, **files: bytes) -> dict:
    folder = c.model_copy(name)
    for fname, content in files.items():
        (folder / fname.replace("__", ".")).write_bytes(content)
    return {"model_path": str(folder)}


def _resume_damaged(c: Ctx) -> dict:
    ckpt = c.tmp / "bad" / "out" / "checkpoint-3"
    shutil.copytree(c.shared["lora_ckpt"], ckpt)
    state = (ckpt / "trainer_state.json").read_text()
    (ckpt / "trainer_state.json").write_text(state[: len(state) // 2])  # killed while writing it
    return {"resume_from_checkpoint": str(ckpt)}


def _resume_partial(c: Ctx) -> dict:
    ckpt = c.tmp / "bad" / "out" / "checkpoint-3"
    shutil.copytree(c.shared["lora_ckpt"], ckpt)
    for name in ("trainer_state.json", "rng_state.pth", "scheduler.pt"):
        (ckpt / name).unlink()  # killed after the weights and the optimizer
    return {"resume_from_checkpoint": str(ckpt)}


CASES = [
    # -- the training data file --------------------------------------------------------------
    Case("data-missing", lambda c: {"train_file": str(c.tmp / "bad" / "nope.jsonl")}, "train_file",
         ("not found", "nope.jsonl")),
    Case("data-is-a-folder", lambda c: {"train_file": str(c.folder("data-dir"))}, "train_file",
         ("is a folder", "data-dir")),
    Case("data-empty", lambda c: {"train_file": c.file("empty.jsonl", "")}, "train_file", ("empty", "empty.jsonl")),
    Case("data-blank-lines-only", lambda c: {"train_file": c.file("blank.jsonl", "\n  \n\r\n")}, "train_file",
         ("only blank lines", "blank.jsonl")),
    Case("data-binary", lambda c: {"train_file": c.file("bin.jsonl", jsonl(GOOD).encode() + b"\x00\x01\x02\xff\n")},
         "train_file", ("binary", "line 2", "bin.jsonl")),
    Case("data-not-utf8", lambda c: {"train_file": c.file("latin1.jsonl", jsonl(GOOD).encode()
                                                          + '{"messages": "caf\xe9"}\n'.encode("latin-1"))},
         "train_file", ("not valid UTF-8", "line 2", "latin1.jsonl")),
    Case("data-json-array", lambda c: {"train_file": c.file("array.json", json.dumps([GOOD, GOOD], indent=2))},
         "train_file", ("JSON array", "one object per line", "array.json")),
    Case("data-json-array-one-line", lambda c: {"train_file": c.file("array1.jsonl", json.dumps([GOOD, GOOD]))},
         "train_file", ("JSON array",)),
    Case("data-huge-line-not-json", lambda c: {"train_file": c.data(4, "x" * 3_000_000)}, "train_file",
         ("line 5", "not valid JSON")),
    Case("data-line-without-messages", lambda c: {"train_file": c.data(2, {"conversation": GOOD["messages"]})},
         "train_file", ("line 3", 'no "messages"')),
    Case("data-unknown-role", lambda c: {"train_file": c.data(
        6, {"messages": [{"role": "human", "content": "x"}, {"role": "assistant", "content": "y"}]})},
         "train_file", ("line 7", 'role "human"')),
    Case("data-no-assistant-turn", lambda c: {"train_file": c.data(
        0, {"messages": [{"role": "user", "content": "only a question"}]})},
         "train_file", ("line 1", "no assistant turn")),
    Case("data-non-string-content", lambda c: {"train_file": c.data(
        9, {"messages": [{"role": "user", "content": ["a", "b"]}, {"role": "assistant", "content": "y"}]})},
         "train_file", ("line 10", '"content" must be a string')),
    Case("data-not-json-line", lambda c: {"train_file": c.data(11, "{'single': 'quotes'}")}, "train_file",
         ("line 12", "not valid JSON", "1 bad line(s)")),
    Case("eval-file-bad-line", lambda c: {"eval_file": c.file("eval.jsonl", jsonl(GOOD, GOOD, {"messages": []})),
                                          "eval_strategy": "steps", "eval_steps": 2},
         "eval_file", ("line 3", '"messages" is empty', "eval.jsonl")),
    Case("pretrain-jsonl-without-text", lambda c: {"train_file": c.file("docs.jsonl", jsonl(
        {"text": "a document"}, {"body": "no text key"}, {"text": "another"}))},
         "train_file", ("line 2", 'no "text"'), training_type="pretrain"),
    # -- the model folder ----------------------------------------------------------------------
    Case("model-missing", lambda c: {"model_path": str(c.tmp / "bad" / "no-model")}, "model_path",
         ("not found", "no-model")),
    Case("model-is-a-file", lambda c: {"model_path": str(Path(c.values["model_path"]) / "config.json")},
         "model_path", ("is a file",)),
    Case("model-is-a-gguf-file", lambda c: {"model_path": c.file("llama-7b.Q4_K_M.gguf", b"GGUF\x03\x00")},
         "model_path", ("GGUF", "inference")),
    Case("model-folder-of-gguf", _gguf_folder, "model_path", ("GGUF",)),
    Case("model-without-config", lambda c: {"model_path": str(c.model_copy("noconf", ("config.json",)))},
         "model_path", ("no config.json",)),
    Case("model-config-not-json", lambda c: _model_with(c, "badconf", config__json=b'{"model_type": "llama",'),
         "model_path", ("config.json is not valid JSON",)),
    Case("model-config-not-an-object", lambda c: _model_with(c, "listconf", config__json=b"[1, 2]"),
         "model_path", ("not a JSON object",)),
    Case("model-without-weights", lambda c: {"model_path": str(c.model_copy("noweights", ("*.safetensors",)))},
         "model_path", ("no *.safetensors",)),
    Case("lora-target-the-model-lacks", lambda c: {}, "lora_target_modules", ("q_proj", "c_attn"),
         base={"arch": "gpt2", "lora_target_modules": ["q_proj", "v_proj"]}),
    Case("tokenizer-folder-without-tokenizer", lambda c: {"tokenizer_path": str(c.folder("tok"))}, "tokenizer_path",
         ("no tokenizer files",)),
    # -- LoRA / PEFT files -----------------------------------------------------------------------
    Case("peft-config-not-lora", lambda c: {"peft_config_path": c.file("adapter_config.json", json.dumps(
        {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20}))},
         "peft_config_path", ("PREFIX_TUNING", "only LoRA")),
    Case("peft-config-not-json", lambda c: {"peft_config_path": c.file("peft.json", "r: 8\nalpha: 16\n")},
         "peft_config_path", ("peft.json is not valid JSON",)),
    Case("peft-config-without-peft-type", lambda c: {"peft_config_path": c.file("cfg.json", '{"r": 8}')},
         "peft_config_path", ("no peft_type",)),
    Case("peft-config-is-a-folder", lambda c: {"peft_config_path": str(c.folder("peft-dir"))},
         "peft_config_path", ("is a folder",)),
    Case("attach-lora-without-folder", lambda c: {"attach_lora": True}, "lora_adapter_path", ("required",)),
    Case("attach-lora-folder-without-adapter", lambda c: {"attach_lora": True,
                                                          "lora_adapter_path": str(c.folder("adapter"))},
         "lora_adapter_path", ("adapter_config.json",)),
    Case("attach-adapter-of-another-model", lambda c: {
        "attach_lora": True, "lora_adapter_path": str(c.shared["lora_ckpt"]),
        "model_path": str(c.shared["other_model"])},
         "lora_adapter_path", ("trained on another model", "k_proj")),
    Case("lora-without-target-modules", lambda c: {"lora_target_modules": []}, "lora_target_modules",
         ("at least one",)),
    # -- the resume checkpoint -------------------------------------------------------------------
    Case("resume-missing", lambda c: {"resume_from_checkpoint": str(c.tmp / "bad" / "checkpoint-7")},
         "resume_from_checkpoint", ("not found", "checkpoint-7")),
    Case("resume-not-a-checkpoint", lambda c: {"resume_from_checkpoint": str(c.folder("some-folder"))},
         "resume_from_checkpoint", ("not a checkpoint", "trainer_state.json")),
    Case("resume-output-dir-instead-of-checkpoint",
         lambda c: {"resume_from_checkpoint": str(c.shared["lora_ckpt"].parent)},
         "resume_from_checkpoint", ("not a checkpoint", "checkpoint-1")),
    Case("resume-partial-checkpoint", _resume_partial, "resume_from_checkpoint", ("trainer_state.json",)),
    Case("resume-damaged-trainer-state", _resume_damaged, "resume_from_checkpoint",
         ("trainer_state.json is not valid JSON", "incomplete")),
    Case("resume-other-lora-rank", lambda c: {"resume_from_checkpoint": str(c.shared["lora_ckpt"]), "lora_r": 8},
         "resume_from_checkpoint", ("r=4", "r=8")),
    Case("resume-other-lora-targets", lambda c: {"resume_from_checkpoint": str(c.shared["lora_ckpt"]),
                                                 "lora_target_modules": ["q_proj", "v_proj"]},
         "resume_from_checkpoint", ("k_proj", "same LoRA settings")),
    Case("resume-lora-checkpoint-of-another-model",
         lambda c: {"resume_from_checkpoint": str(c.shared["lora_ckpt"]), "model_path": str(c.shared["other_model"])},
         "resume_from_checkpoint", ("another model",)),
    Case("resume-full-checkpoint-of-another-model",
         lambda c: {"resume_from_checkpoint": str(c.shared["full_ckpt"]), "model_path": str(c.shared["other_model"])},
         "resume_from_checkpoint", ("another model", "hidden_size"), training_type="pretrain"),
    Case("resume-lora-checkpoint-without-lora", lambda c: {"resume_from_checkpoint": str(c.shared["lora_ckpt"])},
         "resume_from_checkpoint", ("LoRA adapter", "without LoRA"), training_type="pretrain"),
    Case("resume-full-checkpoint-with-lora", lambda c: {"resume_from_checkpoint": str(c.shared["full_ckpt"])},
         "resume_from_checkpoint", ("full model weights", "LoRA")),
    # -- required values and the rules between parameters ------------------------------------------
    Case("train-file-empty", lambda c: {"train_file": "  "}, "train_file", ("required",)),
    Case("model-path-empty", lambda c: {"model_path": ""}, "model_path", ("required",)),
    Case("output-dir-empty", lambda c: {"output_dir": None}, "output_dir", ("required",)),
    Case("output-dir-is-a-file", lambda c: {"output_dir": c.file("out.txt", "x")}, "output_dir", ("is a file",)),
    Case("output-dir-under-a-file", lambda c: {"output_dir": c.file("plain", "x") + "/out"}, "output_dir",
         ("cannot be created", "is a file")),
    Case("output-dir-is-the-model-folder", lambda c: {"output_dir": c.values["model_path"]}, "output_dir",
         ("Training model path folder", "overwrite")),
    Case("output-dir-inside-the-model-folder", lambda c: {"output_dir": c.values["model_path"] + "/run"},
         "output_dir", ("inside the Training model path folder",)),
    Case("output-dir-is-the-adapter-to-attach", lambda c: {
        "attach_lora": True, "lora_adapter_path": str(c.shared["lora_ckpt"]), "output_dir": str(c.shared["lora_ckpt"])},
         "output_dir", ("overwrite",)),
    Case("fp16-with-bf16", lambda c: {"fp16": True, "bf16": True}, "bf16", ("FP16 and BF16",)),
    Case("eval-strategy-without-eval-data", lambda c: {"eval_strategy": "steps"}, "eval_strategy",
         ("evaluation needs data",)),
    Case("early-stopping-without-evaluation", lambda c: {"early_stopping_patience": 2}, "early_stopping_patience",
         ("early stopping needs",)),
    Case("early-stopping-without-eval-data", lambda c: {"early_stopping_patience": 2, "eval_strategy": "epoch"},
         "early_stopping_patience", ("evaluation data",)),
    Case("eval-file-and-eval-ratio", lambda c: {"eval_file": c.values["train_file"], "eval_split_ratio": 0.1},
         "eval_split_ratio", ("one source of evaluation data",)),
    Case("early-stopping-saves-off-the-eval-grid", lambda c: {
        "early_stopping_patience": 2, "eval_strategy": "steps", "save_strategy": "steps", "eval_split_ratio": 0.2,
        "eval_steps": 3, "save_steps": 4}, "save_steps", ("multiple of the evaluation steps", "try 6")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_by_training_run_start_naming_the_field_and_changing_nothing(tmp_path, shared, case):
    ws, name, values = make_task(tmp_path, training_type=case.training_type, **case.base)
    overrides = case.setup(Ctx(tmp_path, values, shared))
    if overrides:
        update_task(ws, name, **overrides)
    before = snapshot(tmp_path, shared["root"])
    with pytest.raises(TaskInvalid) as info:
        TrainingRun(ws, name).start()
    assert changes(before, snapshot(tmp_path, shared["root"])) == []
    problems = info.value.problems
    assert case.key in problems, problems
    for fragment in case.fragments:
        assert fragment in problems[case.key], (fragment, problems[case.key])
    assert active_run(ws.root, name) is None and ws.read_status(name).state == "Pending"
    assert len(str(info.value)) < 4000  # a huge bad line is not echoed back


# ----------------------------------------------------------------------------------------------
# Accepted oddities: a BOM, CRLF line ends and blank lines train like a clean file
# ----------------------------------------------------------------------------------------------


def test_bom_crlf_blank_lines_and_a_huge_line_are_accepted_and_train(tmp_path):
    ws, name, values = make_task(tmp_path, max_steps=1)
    clean = Path(values["train_file"]).read_text(encoding="utf-8").splitlines()
    story = {"messages": [{"role": "user", "content": "Tell me a long story."},
                          {"role": "assistant", "content": "apple river stone " * 40_000}]}  # ~700 KB
    clean[3] = json.dumps(story)
    odd = tmp_path / "windows.jsonl"
    odd.write_bytes("\ufeff".encode() + "\r\n\r\n".join(clean).encode() + b"\r\n")
    update_task(ws, name, train_file=str(odd))
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert any(f"{len(clean)} usable record(s)" in m for m in rec.messages("info"))
    assert any(f"{len(clean)} training" in m for m in rec.messages("info"))  # the huge one is kept, truncated


# ----------------------------------------------------------------------------------------------
# Task and template files: the same checks as the form, whatever their origin
# ----------------------------------------------------------------------------------------------


def outside(key: str) -> list[float]:
    """Values just below the minimum and just above the maximum of a numeric parameter."""
    p = PARAMS[key]
    delta = 1 if p.type == "int" else (p.step or abs(p.minimum or p.maximum) * 0.01 or 1e-9)
    return [p.minimum - delta, p.maximum + delta]


OUT_OF_RANGE = [(k, v) for k, p in PARAMS.items() if p.type in ("int", "float") for v in outside(k)]
WRONG_TYPES = [("per_device_train_batch_size", "two"), ("learning_rate", True), ("fp16", "maybe"),
               ("optim", "adamw_9bit"), ("lora_target_modules", "q_proj, qkv"), ("train_file", 42),
               ("max_seq_length", 130), ("eval_split_ratio", 0.005), ("lora_r", 2.5)]


def shown_message(widget) -> str:
    """The text under the task list, as the user reads it."""
    return html.unescape(widget._panel.message.value)


def hand_written_task(tmp_path: Path, values: dict[str, Any]) -> tuple[Workspace, Path]:
    """A workspace whose task `t` has a task.json written by hand (or by another tool)."""
    ws = Workspace(tmp_path / "ws")
    ws.create_task("t", "sft", None, "cpu", {})
    path = ws.task_dir("t") / "task.json"
    doc = json.loads(path.read_text())
    doc["values"].update(values)
    path.write_text(json.dumps(doc))
    return ws, path


FROM_FILES = OUT_OF_RANGE + WRONG_TYPES


@pytest.mark.parametrize("key,bad", FROM_FILES, ids=[f"{k}={v!r}" for k, v in FROM_FILES])
def test_a_task_file_value_the_form_refuses_is_refused_at_start_with_the_forms_message(tmp_path, key, bad):
    form_message = validate({key: bad}, "sft", check_paths=False).errors[key]
    ws, path = hand_written_task(tmp_path, {key: bad})
    before = snapshot(tmp_path)
    with pytest.raises(StoreError) as info:
        TrainingRun(ws, "t").start()
    text = str(info.value)
    assert str(path) in text and f"{key}: {form_message}" in text
    assert changes(before, snapshot(tmp_path)) == []


@pytest.mark.parametrize("key,bad", OUT_OF_RANGE[::4] + WRONG_TYPES[:3], ids=[
    f"{k}={v!r}" for k, v in OUT_OF_RANGE[::4] + WRONG_TYPES[:3]])
def test_a_template_value_the_form_refuses_is_refused_on_load_with_the_forms_message(tmp_path, key, bad):
    from modx_widgets.ui.prepare import PrepareWidget

    form_message = validate({key: bad}, "sft", check_paths=False).errors[key]
    ws = Workspace(tmp_path / "ws")
    path = write_json(ws.templates_root / "mine.json",
                      {"schema_version": 1, "training_type": "sft", "values": {key: bad}})
    widget = PrepareWidget(workspace=ws)
    shown = widget.values
    before = snapshot(tmp_path)
    with pytest.raises(StoreError) as info:
        widget.load_template("mine")
    assert str(path) in str(info.value) and f"{key}: {form_message}" in str(info.value)
    assert form_message in shown_message(widget) and widget.values == shown
    assert changes(before, snapshot(tmp_path)) == []
    widget.settle(30)


TASK_FILE_DAMAGE = {
    "truncated": lambda text: text[: len(text) // 3],
    "corrupt": lambda text: text.replace('"values"', '"values" "'),
    "newer-schema": lambda text: text.replace('"schema_version": 1', '"schema_version": 7'),
    "unknown-key": lambda text: text.replace('{"schema_version"', '{"owner": "bob", "schema_version"'),
    "unknown-parameter": lambda text: text.replace('"values": {', '"values": {"lora_rank": 8, '),
    "empty": lambda text: "",
}
TASK_FILE_MESSAGE = {
    "truncated": "not valid JSON", "corrupt": "not valid JSON", "newer-schema": "newer modx_widgets",
    "unknown-key": "unknown keys 'owner'", "unknown-parameter": "lora_rank", "empty": "is empty",
}


@pytest.mark.parametrize("damage", sorted(TASK_FILE_DAMAGE))
def test_a_damaged_task_file_is_refused_at_start_and_by_the_widget_and_others_still_run(tmp_path, damage):
    from modx_widgets.ui.prepare import PrepareWidget

    ws, path = hand_written_task(tmp_path, {})
    path.write_text(TASK_FILE_DAMAGE[damage](json.dumps(json.loads(path.read_text()))))
    ws.create_task("other", "sft", None, "cpu", {})
    before = snapshot(tmp_path)
    with pytest.raises(StoreError) as info:
        TrainingRun(ws, "t").start()
    assert str(path) in str(info.value) and TASK_FILE_MESSAGE[damage] in str(info.value)
    widget = PrepareWidget(workspace=ws)
    assert sorted(dict(widget.tasks)) == ["other", "t"]
    assert {t.name: t.problem is None for t in ws.list_tasks()} == {"other": True, "t": False}
    with pytest.raises(StoreError):
        widget.select_task("t")
    assert TASK_FILE_MESSAGE[damage] in shown_message(widget)
    widget.select_task("other")  # the widget stays usable
    assert widget.task_name == "other"
    widget.settle(30)
    assert changes(before, snapshot(tmp_path)) == []


TEMPLATE_DAMAGE = {
    "truncated": (b'{"schema_version": 1, "training_type": "sft", "val', "not valid JSON"),
    "newer-schema": (b'{"schema_version": 9, "training_type": "sft", "values": {}}', "newer modx_widgets"),
    "unknown-key": (b'{"schema_version": 1, "training_type": "sft", "values": {}, "x": 1}', "unknown keys 'x'"),
    "not-an-object": (b"[]", "not an object"),
    "unknown-training-type": (b'{"schema_version": 1, "training_type": "dpo", "values": {}}', "training type"),
}


@pytest.mark.parametrize("damage", sorted(TEMPLATE_DAMAGE))
def test_a_damaged_template_is_refused_by_the_widget_which_keeps_its_values(tmp_path, damage):
    from modx_widgets.ui.prepare import PrepareWidget

    content, message = TEMPLATE_DAMAGE[damage]
    ws = Workspace(tmp_path / "ws")
    ws.templates_root.mkdir(parents=True)
    (ws.templates_root / "mine.json").write_bytes(content)
    widget = PrepareWidget(workspace=ws)
    widget.set_values({"seed": 5})
    before = snapshot(tmp_path)
    with pytest.raises(StoreError):
        widget.load_template("mine")
    assert message in shown_message(widget) and widget.values["seed"] == 5
    widget.load_template("SFT")  # presets still load
    widget.settle(30)
    assert changes(before, snapshot(tmp_path)) == []


# ----------------------------------------------------------------------------------------------
# The widget: names and form problems are refused before anything is written
# ----------------------------------------------------------------------------------------------

HOSTILE_NAMES = ["../x", "/abs", "a/b", "..", "", "   ", "a\x00b", "x" * 300, "CON", "lpt1.txt",
                 "\u0455ft_1", "tab\tname", ".hidden", "C:evil", "a\\b"]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_hostile_task_name_is_refused_by_the_widget_before_anything_is_written(tmp_path, name):
    from modx_widgets.ui.prepare import PrepareWidget, StartRefused

    ws = Workspace(tmp_path / "ws")
    widget = PrepareWidget(workspace=ws)
    widget.set_values({"train_file": str(tmp_path / "missing.jsonl")})
    widget.task_name = name
    before = snapshot(tmp_path)
    with pytest.raises(StartRefused) as info:
        widget.start()
    assert "task_name" in info.value.errors and "train_file" in info.value.errors
    assert not ws.root.exists() and changes(before, snapshot(tmp_path)) == []
    widget.settle(30)


def test_the_widget_refuses_deep_problems_leaving_only_the_saved_pending_task(tmp_path):
    """Bad data lines need the saved task to be found: the task stays Pending, nothing else is written."""
    from modx_widgets.ui.prepare import PrepareWidget, StartRefused

    _, _, values = make_task(tmp_path)
    data = Path(values["train_file"])
    data.write_text(data.read_text() + "not json\n")
    ws = Workspace(tmp_path / "ws2")
    widget = PrepareWidget(workspace=ws)
    widget.set_values({k: v for k, v in values.items() if k in PARAMS})
    widget.device = "cpu"
    before = snapshot(tmp_path)
    with pytest.raises(StartRefused) as info:
        widget.start()
    assert "line 25" in info.value.errors["train_file"]
    assert "saved as Pending" in widget._message.value
    name = widget.task_name
    after = snapshot(tmp_path)
    assert [p for p in before if before[p] != after[p] and p != str(tmp_path)] == []  # only new entries
    new = {Path(p).relative_to(tmp_path).as_posix() for p in after.keys() - before.keys()}
    assert new == {"ws2", "ws2/tasks", f"ws2/tasks/{name}", f"ws2/tasks/{name}/task.json",
                   f"ws2/tasks/{name}/status.json"}
    assert ws.read_status(name).state == "Pending" and not Path(values["output_dir"]).exists()
    widget.settle(30)


# ----------------------------------------------------------------------------------------------
# The CLI: the same refusals, exit code 2, nothing written
# ----------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modx_widgets.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_the_cli_refuses_a_hand_edited_out_of_range_value_with_the_forms_message(tmp_path):
    ws, path = hand_written_task(tmp_path, {"gradient_accumulation_steps": 0})
    before = snapshot(tmp_path)
    done = cli(str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    message = validate({"gradient_accumulation_steps": 0}, "sft", check_paths=False).errors
    assert str(path) in done.stderr and message["gradient_accumulation_steps"] in done.stderr
    assert changes(before, snapshot(tmp_path)) == []


def test_the_cli_lists_every_deep_problem_at_once_and_writes_nothing(tmp_path):
    ws, name, values = make_task(tmp_path)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    lines = Path(values["train_file"]).read_text().splitlines()
    lines[3] = json.dumps({"messages": [{"role": "user", "content": "?"}]})
    Path(values["train_file"]).write_text("\n".join(lines) + "\n")
    update_task(ws, name, model_path=str(gguf), fp16=True, bf16=True)
    before = snapshot(tmp_path)
    done = cli(name, "--workspace", str(ws.root))
    assert done.returncode == 2, done.stdout + done.stderr
    for fragment in ("model_path: GGUF", "train_file:", "line 4: no assistant turn", "bf16: FP16 and BF16"):
        assert fragment in done.stderr, done.stderr
    assert changes(before, snapshot(tmp_path)) == []
