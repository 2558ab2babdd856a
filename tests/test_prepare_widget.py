"""The Prepare page through its programmatic API (the same calls its buttons make)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from modx_widgets.schema.spec import load_schema
from modx_widgets.store import StoreError, Workspace
from modx_widgets.testing import make_sft_data, make_tiny_model
from modx_widgets.ui.prepare import PrepareWidget, StartRefused, estimate_checkpoints, estimate_total_steps

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {"model": make_tiny_model(root / "model"), "sft": make_sft_data(root / "sft.jsonl", n=24)}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def widget(ws):
    w = PrepareWidget(workspace=ws)
    yield w
    if w.running:
        w.stop()
        w.wait(60)
    w.settle(30)


def _runnable(tiny, tmp_path, **extra) -> dict:
    """Values for a run of a few optimizer steps on the tiny model (CPU friendly)."""
    return {
        "train_file": str(tiny["sft"]),
        "model_path": str(tiny["model"]),
        "output_dir": str(tmp_path / "out"),
        "max_seq_length": SCHEMA.param("max_seq_length").minimum,
        "fp16": False,
        "gradient_checkpointing": False,
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        **extra,
    }


# -- construction -----------------------------------------------------------------------------


def test_a_new_widget_opens_an_unsaved_sft_draft_with_a_timestamped_name(widget, ws):
    assert widget.training_type == SCHEMA.basic_param("training_type").default
    assert re.fullmatch(rf"{widget.training_type}_\d{{8}}_\d{{6}}", widget.task_name)
    stamp = datetime.strptime(widget.task_name.split("_", 1)[1], "%Y%m%d_%H%M%S")
    assert abs((datetime.now() - stamp).total_seconds()) < 120
    assert widget.status is None and widget.tasks == []
    assert not ws.tasks_root.exists()  # nothing is written until a task is created


def test_the_form_starts_from_the_default_templates_values(widget, ws):
    template = SCHEMA.basic_param("template").default
    assert widget.template == template
    assert widget.values == {**SCHEMA.defaults(), **ws.load_template(template).values}


def test_templates_list_the_presets_first(widget, ws):
    assert widget.templates == ws.templates()
    assert widget._panel.template.options == tuple(ws.templates())


def test_the_draft_lists_every_missing_required_path_as_an_error(widget):
    required_paths = [k for k, p in SCHEMA.params.items() if p.required and p.is_path]
    assert required_paths and all(k in widget.errors for k in required_paths)
    for key in required_paths:
        assert widget.form.fields[key].problem[0] == "error"


# -- bad values -------------------------------------------------------------------------------


def test_an_out_of_range_value_is_shown_next_to_its_field_and_start_lists_it(widget, ws):
    spec = SCHEMA.param("lora_r")
    widget.set_values({"lora_r": int(spec.maximum) + 1})
    assert widget.values["lora_r"] == int(spec.maximum) + 1
    assert "lora_r" in widget.errors
    level, text = widget.form.fields["lora_r"].problem
    assert level == "error" and text == widget.errors["lora_r"]
    with pytest.raises(StartRefused) as refused:
        widget.start()
    assert isinstance(refused.value, ValueError)
    assert "lora_r" in refused.value.errors and "train_file" in refused.value.errors  # all problems at once
    assert "lora_r" in str(refused.value)
    assert SCHEMA.param("lora_r").label in widget._summary.value
    assert not ws.tasks_root.exists()  # refused before anything was written
    assert widget.form.current_section() == widget.form.fields[next(iter(refused.value.errors))].spec.section


def test_clicking_start_with_problems_shows_them_instead_of_raising(widget):
    widget._start_button.click()
    assert "Start refused" in widget._message.value
    assert "problem(s) to fix" in widget._summary.value


def test_a_value_put_back_in_range_clears_its_error(widget):
    widget.set_values({"seed": -1})
    assert "seed" in widget.errors
    widget.form.fields["seed"].control.value = SCHEMA.param("seed").default  # as the user types it
    assert "seed" not in widget.errors
    assert widget.form.fields["seed"].problem == ("", "")


def test_set_values_refuses_an_unknown_key(widget):
    with pytest.raises(ValueError, match="no_such"):
        widget.set_values({"no_such": 1})


def test_an_invalid_task_name_is_a_problem_before_start(widget):
    widget.task_name = "../escape"
    assert "task_name" in widget.errors
    with pytest.raises(StartRefused) as refused:
        widget.start()
    assert "task_name" in refused.value.errors


def test_a_missing_gpu_blocks_start_through_the_environment_check(widget, tiny, tmp_path):
    widget.set_values(_runnable(tiny, tmp_path))
    widget.device = "cuda:99"
    with pytest.raises(StartRefused) as refused:
        widget.start()
    assert any(k.startswith("env:") for k in refused.value.errors)
    assert "blocks Start" in widget._env.value


# -- visibility -------------------------------------------------------------------------------


def test_switching_to_pretrain_hides_lora_and_renames_the_draft(widget):
    widget.training_type = "pretrain"
    assert "lora" not in widget.form.visible_sections()
    assert widget.task_name.startswith("pretrain_")
    widget.training_type = "sft"
    assert "lora" in widget.form.visible_sections()


def test_an_edited_task_name_survives_a_type_switch(widget):
    widget.task_name = "my-run"
    widget.training_type = "pretrain"
    assert widget.task_name == "my-run"


def test_attach_lora_reveals_the_adapter_path_field(widget):
    assert not widget.form.is_visible("lora_adapter_path")
    widget.set_values({"attach_lora": True})
    assert widget.form.is_visible("lora_adapter_path")


def test_overriding_values_are_noted_beside_the_field_they_override(widget):
    widget.set_values({"warmup_steps": 5, "max_steps": 10})
    shown = {k for k, (level, _) in widget.form.problems().items() if level == "warning"}
    warned = {k for k, _ in widget.warnings if k}
    assert warned and warned <= shown


def test_the_training_type_must_be_a_known_one(widget):
    with pytest.raises(ValueError, match="training type"):
        widget.training_type = "rlhf"


# -- templates --------------------------------------------------------------------------------


def test_templates_save_load_and_delete_through_the_widget(widget, ws):
    widget.set_values({"lora_r": 8, "learning_rate": 1e-3})
    widget.save_template("mine")
    assert "mine" in widget.templates and widget.template == "mine"
    assert "mine" in widget._panel.template.options
    widget.set_values({"lora_r": 32})
    widget.load_template(SCHEMA.basic_param("template").default)
    widget.load_template("mine")
    assert widget.values["lora_r"] == 8 and widget.values["learning_rate"] == 1e-3
    widget.delete_template("mine")
    assert "mine" not in widget.templates and "mine" not in widget._panel.template.options
    assert widget.template in ws.templates()


def test_loading_the_pretrain_preset_switches_the_training_type(widget, ws):
    preset = next(n for n in ws.templates() if ws.load_template(n).training_type == "pretrain")
    widget.load_template(preset)
    assert widget.training_type == "pretrain"
    assert widget.values == {**SCHEMA.defaults(), **ws.load_template(preset).values}


def test_picking_a_template_in_the_dropdown_loads_it(widget, ws):
    widget.set_values({"seed": 7})
    widget.save_template("seven")
    widget.set_values({"seed": 8})
    widget.load_template(ws.templates()[0])
    widget._panel.template.value = "seven"  # the user's pick
    assert widget.values["seed"] == 7


def test_presets_cannot_be_deleted_and_the_refusal_is_shown(widget):
    preset = widget.templates[0]
    with pytest.raises(StoreError):
        widget.delete_template(preset)
    assert "modx-error" in widget._panel.message.value
    assert preset in widget.templates


def test_reset_restores_the_templates_values(widget):
    widget.set_values({"seed": 5, "lora_r": 4})
    widget.save_template("base")
    widget.set_values({"seed": 6, "lora_r": 64, "optim": "sgd"})
    widget.reset()
    assert widget.values["seed"] == 5 and widget.values["lora_r"] == 4
    assert widget.values["optim"] == SCHEMA.param("optim").default


# -- tasks ------------------------------------------------------------------------------------


def test_new_select_and_delete_tasks(widget, ws):
    first = widget.new_task()
    widget.set_values({"seed": 11})
    second = widget.new_task("pretrain")
    assert second.startswith("pretrain_") and first != second
    assert dict(widget.tasks) == {first: "Pending", second: "Pending"}
    assert widget._panel.state_of(first) == "Pending"
    assert widget.training_type == "pretrain" and widget.status == "Pending"
    widget.select_task(first)
    assert widget.task_name == first and widget.training_type == "sft"
    assert widget.values == ws.load_task(first).values
    widget.delete_task(second)
    assert [n for n, _ in widget.tasks] == [first]
    assert widget._panel.task_names == [first]
    widget.delete_task(first)
    assert widget.tasks == [] and widget.status is None  # back to a fresh draft


def test_the_task_list_buttons_select_and_delete(widget):
    first = widget.new_task()
    second = widget.new_task()
    widget._panel._rows[first].button.click()
    assert widget.task_name == first
    widget._panel._rows[second].delete.click()
    assert [n for n, _ in widget.tasks] == [first]


def test_a_name_already_taken_is_refused(widget):
    taken = widget.new_task()
    widget.new_task()
    widget.task_name = taken
    assert "already exists" in widget.errors["task_name"]


def test_a_corrupt_task_is_listed_and_its_selection_refused(widget, ws):
    good = widget.new_task()
    (ws.task_dir(good) / "task.json").write_text("{ not json", encoding="utf-8")
    other = PrepareWidget(workspace=ws)
    assert good in dict(other.tasks)
    assert "\u26a0" in other._panel._rows[good].button.description
    with pytest.raises(StoreError):
        other.select_task(good)
    assert "modx-error" in other._panel.message.value
    other.settle(30)


# -- estimate ---------------------------------------------------------------------------------


def test_total_steps_follow_the_trainers_arithmetic():
    values = {**SCHEMA.defaults(), "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}
    # 20 examples -> 10 batches of 2 -> ceil(10 / 4) = 3 updates per epoch, x 2 epochs
    assert estimate_total_steps({**values, "num_train_epochs": 2}, 20) == 6
    # max_samples caps the data: 8 examples -> 4 batches -> 1 update per epoch
    assert estimate_total_steps({**values, "num_train_epochs": 2, "max_samples": 8}, 20) == 2
    # a 0.5 eval split keeps 10 of 20 -> 5 batches -> 2 updates per epoch
    assert estimate_total_steps({**values, "num_train_epochs": 1, "eval_split_ratio": 0.5}, 20) == 2
    assert estimate_total_steps({**values, "max_steps": 7}, 20) == 7


def test_checkpoints_are_steps_over_save_steps_capped_by_the_limit():
    values = {**SCHEMA.defaults(), "max_steps": 10, "save_strategy": "steps", "save_steps": 3}
    assert estimate_checkpoints({**values, "save_total_limit": 100}, 50) == 3  # steps 3, 6, 9
    assert estimate_checkpoints({**values, "save_total_limit": 2}, 50) == 2
    assert estimate_checkpoints({**values, "save_strategy": "no"}, 50) == 0
    epochs = {**SCHEMA.defaults(), "save_strategy": "epoch", "num_train_epochs": 3}
    assert estimate_checkpoints(epochs, 50) == 3


def test_the_estimate_appears_once_the_data_is_counted(widget, tiny, tmp_path):
    assert "known once" in widget._checkpoints.value
    widget.set_values(_runnable(tiny, tmp_path, max_steps=4, save_steps=2))
    widget.settle(60)
    assert "Expected checkpoints: 2" in widget._checkpoints.value  # steps 2 and 4


# -- running ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_start_trains_the_tiny_model_to_completion(widget, ws, tiny, tmp_path):
    widget.set_values(_runnable(tiny, tmp_path, max_steps=4, save_steps=2))
    widget.start()
    name = widget.task_name
    assert widget.monitor.run is not None
    assert widget._panel.state_of(name) == "Running" and widget._start_button.disabled
    widget._run.wait(300)  # not widget.wait(): the buttons must follow the run by themselves
    assert not widget._start_button.disabled and widget._stop_button.disabled
    assert widget.wait(300) == "Completed"
    assert widget.status == "Completed"
    assert dict(widget.tasks)[name] == "Completed"
    assert widget._panel.state_of(name) == "Completed"
    assert ws.load_task(name).values["max_steps"] == 4
    checkpoints = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert len(checkpoints) == estimate_checkpoints(ws.load_task(name).values, 24)


def test_a_new_widget_reattaches_even_before_the_run_has_written_its_status(widget, ws, tiny, tmp_path, monkeypatch):
    import threading

    from modx_widgets.run import thread as run_thread

    release = threading.Event()
    real_execute = run_thread.execute

    def held_execute(*args, **kwargs):  # the training thread exists, status.json still says Pending
        release.wait(60)
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(run_thread, "execute", held_execute)
    widget.set_values(_runnable(tiny, tmp_path, max_steps=2, save_steps=1000))
    widget.start()
    name = widget.task_name
    try:
        assert ws.read_status(name).state == "Pending"
        again = PrepareWidget(workspace=ws)
        assert again.task_name == name and again.monitor.run is widget._run
    finally:
        release.set()
    assert widget.wait(300) == "Completed"


@pytest.mark.slow
def test_a_running_task_cannot_be_deleted_and_a_new_widget_reattaches(widget, ws, tiny, tmp_path):
    widget.set_values(_runnable(tiny, tmp_path, max_steps=2000, save_steps=1000))
    widget.start()
    name = widget.task_name
    with pytest.raises(ValueError):
        widget.delete_task(name)
    assert "running" in widget._panel.message.value
    widget.set_values({"seed": 1})
    assert "next run" in widget._message.value
    again = PrepareWidget(workspace=ws)
    assert again.task_name == name and again.monitor.run is widget._run
    assert again.status == "Running"
    widget.stop()
    assert widget.wait(300) == "Stopped"
    widget.delete_task(name)
    assert name not in dict(widget.tasks)
    again.settle(30)


@pytest.mark.slow
def test_temporary_template_leaves_the_template_untouched(widget, ws, tiny, tmp_path):
    widget.save_template("kept")
    before = ws.load_template("kept").values
    widget.set_values(_runnable(tiny, tmp_path, max_steps=1, save_strategy="no"))
    widget.temporary = True
    widget.start()
    assert widget.wait(300) == "Completed"
    assert ws.load_template("kept").values == before
    assert ws.load_task(widget.task_name).temporary is True


@pytest.mark.slow
def test_without_temporary_start_writes_the_values_into_the_template(widget, ws, tiny, tmp_path):
    widget.save_template("shared")
    widget.set_values(_runnable(tiny, tmp_path, max_steps=1, save_strategy="no"))
    widget.start()
    assert widget.wait(300) == "Completed"
    assert ws.load_template("shared").values["max_steps"] == 1


# -- cost -------------------------------------------------------------------------------------


def test_constructing_the_widget_imports_no_ml_library_by_itself(tmp_path):
    """Only the run room's deliberate warm-up may import torch; switch it off and nothing else does."""
    import subprocess
    import sys

    code = (
        "import sys, modx_widgets.run as run\n"
        "run.warmup_imports = lambda: None\n"
        "from modx_widgets.ui.prepare import PrepareWidget\n"
        f"w = PrepareWidget(workspace={str(tmp_path / 'ws')!r})\n"
        "w.settle(60)\n"
        "print(' '.join(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_an_edit_that_changes_no_problem_sends_only_that_controls_update(ws, monkeypatch):
    import comm
    from comm.base_comm import BaseComm

    sent: list[tuple[str, dict]] = []

    class Recording(BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            if msg_type == "comm_msg":
                sent.append((self.comm_id, data))

    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: Recording(*a, **k))
    w = PrepareWidget(workspace=ws)
    w.settle(60)
    seed = w.form.fields["seed"].control
    sent.clear()
    seed.value = seed.value + 1
    w.settle(60)
    assert [comm_id for comm_id, _ in sent] == [seed.comm.comm_id]


def test_a_llamafactory_yaml_imported_in_the_tools_panel_lands_in_the_form(widget):
    from modx_widgets.export import to_llamafactory_yaml

    paths = {"train_file": "chat.jsonl", "output_dir": "out", "model_path": "model"}
    source = {**load_schema().defaults(), **paths, "learning_rate": 5e-4, "lora_r": 8, "num_train_epochs": 3}
    text, _ = to_llamafactory_yaml(source, "sft")
    result = widget._tools.import_yaml(text)
    assert result is not None
    assert widget.values["learning_rate"] == 5e-4
    assert widget.values["lora_r"] == 8
    assert widget.values["num_train_epochs"] == 3
