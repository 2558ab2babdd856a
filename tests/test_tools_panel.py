"""The Tools panel shows what `estimate_memory` and the exporters return, hands imported and
fixed values back through its callback, and never does the work on the caller's thread."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modx_widgets.estimate import estimate_memory
from modx_widgets.export import (
    from_llamafactory_yaml,
    to_cli_command,
    to_llamafactory_yaml,
    to_python_script,
    training_arguments_json,
)
from modx_widgets.store.records import TaskRecord
from modx_widgets.testing import make_pretrain_data, make_sft_data, make_tiny_model
from modx_widgets.ui.tools import EXPORTS, ToolsContext, ToolsPanel

WAIT_S = 60


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tools")
    return {
        "root": root,
        "model": make_tiny_model(root / "tiny"),
        "sft": make_sft_data(root / "train.jsonl", n=16),
        "pretrain": make_pretrain_data(root / "train.txt", n=16),
    }


class Harness:
    """A mutable stand-in for PrepareWidget: the context reads it, the import callback writes it."""

    def __init__(self, files: dict[str, Path], **values: Any) -> None:
        self.values: dict[str, Any] = {
            "model_path": str(files["model"]), "train_file": str(files["sft"]),
            "output_dir": str(files["root"] / "out"), **values,
        }
        self.training_type = "sft"
        self.task_name: str | None = "tools_task"
        self.device = "cpu"
        self.free: int | None = None
        self.root = files["root"] / "ws"
        self.received: list[tuple[dict[str, Any], str, list[str]]] = []
        self.context_threads: list[str] = []

    def context(self) -> ToolsContext:
        self.context_threads.append(threading.current_thread().name)
        return ToolsContext(
            values=dict(self.values), training_type=self.training_type, task_name=self.task_name,
            workspace_root=self.root, device=self.device, device_free_bytes=self.free,
        )

    def take(self, values: dict[str, Any], training_type: str, not_carried: list[str]) -> None:
        self.received.append((values, training_type, not_carried))
        self.training_type = training_type
        self.values.update(values)

    def panel(self) -> ToolsPanel:
        panel = ToolsPanel(self.context, debounce=0.01)
        panel.on_import(self.take)
        return panel


def _shown(widget) -> bool:
    return widget.layout.display != "none"


def _settled(panel: ToolsPanel) -> None:
    assert panel.wait(WAIT_S), "background work did not finish"


# ------------------------------------------------------------------------------ memory estimate


def test_panel_is_a_vbox_with_css_hooks_for_browser_tests(files):
    panel = Harness(files).panel()
    assert "modx-tools" in panel._dom_classes
    assert "modx-export-text" in panel.export_text._dom_classes
    assert [b.description for b in panel.export_buttons.values()] == list(EXPORTS.values())


def test_estimate_shows_the_parameter_counts_of_estimate_memory(files):
    h = Harness(files, lora_r=4)
    panel = h.panel()
    panel.refresh()
    _settled(panel)
    expected = estimate_memory(h.values["model_path"], h.values, "sft", device="cpu")
    assert panel.estimate is not None
    assert (panel.estimate.total_params, panel.estimate.trainable_params) == (
        expected.total_params, expected.trainable_params)
    shown = panel.estimate_view.value
    assert f"{expected.total_params:,}" in shown and f"{expected.trainable_params:,}" in shown
    for part in ("Weights", "Gradients", "Optimizer state", "Activations", "Free on cpu"):
        assert part in shown
    assert not _shown(panel.estimate_warning) and not _shown(panel.apply_button)


def test_full_fine_tuning_changes_the_trainable_count_after_refresh(files):
    h = Harness(files)
    panel = h.panel()
    panel.refresh()
    _settled(panel)
    lora_trainable = panel.estimate.trainable_params
    h.values["use_lora"] = False
    panel.refresh()
    _settled(panel)
    assert panel.estimate.trainable_params == panel.estimate.total_params > lora_trainable


@pytest.mark.parametrize("model_path, words", [("", "Set model_path"), ("/no/such/model", "config.json")])
def test_missing_or_invalid_model_path_gives_a_short_note(files, model_path, words):
    h = Harness(files, model_path=model_path)
    panel = h.panel()
    panel.refresh()
    _settled(panel)
    assert panel.estimate is None
    assert words in panel.estimate_view.value and "Traceback" not in panel.estimate_view.value
    assert len(panel.estimate_note) < 300
    assert not _shown(panel.apply_button)


def test_does_not_fit_shows_the_warning_and_apply_fix_hands_the_fix_to_the_form(files):
    h = Harness(files, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    full = estimate_memory(h.values["model_path"], h.values, "sft", device="cpu")
    h.free = full.total_bytes - 1
    expected = estimate_memory(h.values["model_path"], h.values, "sft", h.free, device="cpu")
    assert expected.fits is False and expected.fixes  # the premise of this test
    panel = h.panel()
    panel.refresh()
    _settled(panel)
    assert _shown(panel.estimate_warning) and _shown(panel.apply_button)
    assert expected.warning in panel.estimate_warning.value.replace("&#x27;", "'")

    panel.apply_button.click()
    changes: dict[str, Any] = {}
    for fix in expected.fixes:
        changes.update(fix.changes)
    assert h.received == [(changes, "sft", [])]
    _settled(panel)  # Apply fix re-estimates with the new values
    assert panel.estimate.fits is True
    assert not _shown(panel.estimate_warning) and not _shown(panel.apply_button)


def test_refresh_returns_at_once_and_reads_the_context_off_the_callers_thread(files):
    h = Harness(files)
    gate = threading.Event()
    slow_context = h.context

    def gated() -> ToolsContext:
        gate.wait(WAIT_S)
        return slow_context()

    panel = ToolsPanel(gated, debounce=0.01)
    started = time.monotonic()
    panel.refresh()
    panel.export("yaml")
    assert time.monotonic() - started < 0.5
    assert panel.busy and panel.estimate is None and panel.export_text.value == ""
    gate.set()
    _settled(panel)
    assert panel.estimate is not None and panel.export_text.value.startswith("# LLaMA-Factory")
    assert h.context_threads and threading.current_thread().name not in h.context_threads


def test_a_burst_of_refreshes_collapses_into_few_estimates(files):
    h = Harness(files)
    panel = ToolsPanel(h.context, debounce=0.2)
    for _ in range(20):
        panel.refresh()
    _settled(panel)
    assert 1 <= len(h.context_threads) <= 2 and panel.estimate is not None


# ------------------------------------------------------------------------------------- export


def _expected_export(kind: str, h: Harness, launcher: str = "modx-train") -> str:
    record = TaskRecord(name=h.task_name, training_type=h.training_type, template=None, device=h.device,
                        values=dict(h.values))
    if kind == "script":
        return to_python_script(record)
    if kind == "command":
        return to_cli_command(record, h.root, launcher=launcher)
    if kind == "yaml":
        return to_llamafactory_yaml(h.values, h.training_type)[0]
    return training_arguments_json(h.values, h.training_type, device=h.device)


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_each_export_button_fills_the_text_with_the_exporters_output(files, kind):
    h = Harness(files, max_steps=3, lora_r=16)
    panel = h.panel()
    panel.export_buttons[kind].click()
    _settled(panel)
    assert panel.export_error is None
    assert panel.export_text.value == _expected_export(kind, h)


def test_command_export_follows_the_launcher_and_the_tasks_device(files):
    h = Harness(files)
    panel = h.panel()
    panel.launcher.value = "accelerate"
    panel.export("command")
    _settled(panel)
    assert panel.export_text.value == _expected_export("command", h, "accelerate")
    assert "--cpu" in panel.export_text.value


def test_yaml_export_lists_what_does_not_carry_over(files):
    h = Harness(files, merge_lora=True, reshuffle=False)
    panel = h.panel()
    panel.export("yaml")
    _settled(panel)
    _, not_carried = to_llamafactory_yaml(h.values, "sft")
    assert not_carried
    note = panel.export_note.value.replace("&#x27;", "'")
    assert all(item in note for item in not_carried)


def test_export_error_is_shown_instead_of_text(files):
    h = Harness(files, model_path="")
    panel = h.panel()
    panel.export("yaml")
    _settled(panel)
    assert panel.export_error and "model_path" in panel.export_error
    assert panel.export_text.value == "" and "model_path" in panel.export_status.value


def test_command_without_a_task_asks_for_one(files):
    h = Harness(files)
    h.task_name = None
    panel = h.panel()
    panel.export("command")
    _settled(panel)
    assert panel.export_error and "task" in panel.export_error and panel.export_text.value == ""


def test_export_text_reverts_edits(files):
    h = Harness(files)
    panel = h.panel()
    panel.export("yaml")
    _settled(panel)
    produced = panel.export_text.value
    panel.export_text.value = "typed by the user"
    assert panel.export_text.value == produced


# ------------------------------------------------------------------------------------- import


def test_import_round_trips_an_exported_yaml_and_calls_the_hook(files):
    source = {
        "model_path": str(files["model"]), "train_file": str(files["pretrain"]),
        "output_dir": str(files["root"] / "pt_out"), "learning_rate": 3e-4, "num_train_epochs": 2,
        "max_seq_length": 256, "seed": 11,
    }
    text, _ = to_llamafactory_yaml(source, "pretrain")
    h = Harness(files, learning_rate=1e-5)
    panel = h.panel()
    panel.import_text.value = text
    panel.import_button.click()
    assert panel.import_error is None
    values, training_type, not_carried = from_llamafactory_yaml(text)
    assert h.received == [(values, training_type, not_carried)]
    assert training_type == "pretrain" and h.training_type == "pretrain"
    for key, value in source.items():
        assert h.values[key] == value, key
    assert "Imported a pretrain task" in panel.import_message.value


@pytest.mark.parametrize("text, words", [
    ("stage: [unclosed", "not a readable YAML"),
    ("stage: ppo\nmodel_name_or_path: x\n", "stage"),
    ("   ", "Paste"),
])
def test_bad_yaml_shows_an_error_and_hands_nothing_back(files, text, words):
    h = Harness(files)
    panel = h.panel()
    assert panel.import_yaml(text) is None
    assert h.received == []
    assert words in panel.import_error and words in panel.import_message.value


def test_a_refused_import_is_reported_not_raised(files):
    h = Harness(files)
    panel = ToolsPanel(h.context)

    def refuse(values, training_type, not_carried):
        raise ValueError("task is running")

    panel.on_import(refuse)
    text, _ = to_llamafactory_yaml(h.values, "sft")
    assert panel.import_yaml(text) is None
    assert "task is running" in panel.import_message.value


def test_importing_the_panel_loads_no_ml_library():
    code = (
        "import sys, modx_widgets.ui.tools\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
