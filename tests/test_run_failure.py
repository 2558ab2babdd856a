"""Failures: refused before start with every problem, or Failed with message, hint and traceback."""

from __future__ import annotations

import json

import pytest
from test_run_support import CallbackBase, make_task, run_task, torch_single_thread  # noqa: F401

from modx_widgets.run import TaskInvalid, TrainingRun, prepare
from modx_widgets.run import hints


def raising_at_step(step: int, exc: BaseException):
    def on_step_end(cb, args, state, control, **kw):
        if state.global_step == step:
            raise exc

    return CallbackBase.make(on_step_end=on_step_end)


def assert_untouched(ws, name):
    """A refused start writes nothing: status still Pending, no event log."""
    assert ws.read_status(name).state == "Pending"
    assert not (ws.task_dir(name) / "metrics.jsonl").exists()


def test_an_exception_in_a_callback_ends_failed_with_message_and_traceback(tmp_path):
    ws, name, _ = make_task(tmp_path, max_steps=5)
    state, rec = run_task(ws, name, callbacks=[raising_at_step(2, RuntimeError("callback exploded"))])
    assert state == "Failed"
    status = ws.read_status(name)
    assert status.state == "Failed" and "callback exploded" in status.message
    assert rec.errors and "callback exploded" in rec.errors[0].message
    assert "Traceback" in rec.errors[0].traceback
    log = (ws.task_dir(name) / "run.log").read_text()
    assert "Traceback" in log and "RuntimeError: callback exploded" in log
    assert rec.states == ["Running", "Failed"]


def test_out_of_memory_gets_the_batch_size_hint(tmp_path):
    ws, name, _ = make_task(tmp_path, max_steps=3)
    state, _ = run_task(ws, name, callbacks=[raising_at_step(1, MemoryError("out of memory"))])
    assert state == "Failed"
    assert ws.read_status(name).hint == hints.OOM


def test_a_failed_thread_ends_and_another_task_can_start(tmp_path):
    ws, bad, _ = make_task(tmp_path, "bad", max_steps=3)
    run = TrainingRun(ws, bad)
    run.extra_callbacks.append(raising_at_step(1, ValueError("boom")))
    run.start()
    assert run.wait(120) == "Failed" and not run.is_alive()
    _, good, _ = make_task(tmp_path, "good", max_steps=1)
    assert TrainingRun(ws, good).start().wait(120) == "Completed"


def test_a_failing_listener_does_not_stop_training(tmp_path):
    ws, name, _ = make_task(tmp_path, max_steps=2)

    def broken(event):
        raise RuntimeError("view crashed")

    state = TrainingRun(ws, name, listeners=[broken]).start().wait(120)
    assert state == "Completed"
    assert "view crashed" in (ws.task_dir(name) / "run.log").read_text()


def test_bad_data_lines_are_refused_before_start_with_line_numbers(tmp_path):
    ws, name, values = make_task(tmp_path)
    lines = open(values["train_file"]).read().splitlines()
    lines[2] = "not json"
    lines[5] = json.dumps({"messages": [{"role": "user", "content": "only a question"}]})
    open(values["train_file"], "w").write("\n".join(lines) + "\n")
    with pytest.raises(TaskInvalid) as info:
        TrainingRun(ws, name).start()
    problem = info.value.problems["train_file"]
    assert "line 3" in problem and "line 6" in problem and "22 usable" in problem
    assert_untouched(ws, name)


def test_a_lora_target_the_model_lacks_is_refused_listing_its_layers(tmp_path):
    ws, name, _ = make_task(tmp_path, arch="gpt2", lora_target_modules=["q_proj", "v_proj"])
    with pytest.raises(TaskInvalid) as info:
        prepare(ws, name)
    problem = info.value.problems["lora_target_modules"]
    assert "q_proj" in problem and "c_attn" in problem and "c_proj" in problem
    assert_untouched(ws, name)


def test_every_problem_is_reported_at_once(tmp_path):
    ws, name, values = make_task(tmp_path, arch="gpt2", lora_target_modules=["q_proj"])
    open(values["train_file"], "a").write("{broken\n")
    with pytest.raises(TaskInvalid) as info:
        prepare(ws, name)
    assert {"train_file", "lora_target_modules"} <= set(info.value.problems)
    assert "2 problem(s)" in str(info.value)


def test_a_resume_path_that_is_not_a_checkpoint_is_refused(tmp_path):
    from test_run_support import update_task

    ws, name, _ = make_task(tmp_path)
    folder = tmp_path / "checkpoint-9"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"")  # half-written: no trainer_state.json
    update_task(ws, name, resume_from_checkpoint=str(folder))
    with pytest.raises(TaskInvalid) as info:
        prepare(ws, name)
    assert "trainer_state.json" in info.value.problems["resume_from_checkpoint"]


def test_a_checkpoint_of_another_lora_setup_is_refused(tmp_path):
    from test_run_support import update_task

    ws, name, values = make_task(tmp_path, save_strategy="steps", save_steps=1, max_steps=1)
    assert run_task(ws, name)[0] == "Completed"
    update_task(ws, name, resume_from_checkpoint=values["output_dir"] + "/checkpoint-1", lora_r=8)
    with pytest.raises(TaskInvalid) as info:
        prepare(ws, name)
    assert "r=4" in info.value.problems["resume_from_checkpoint"]


@pytest.mark.parametrize(
    "exc,expected",
    [
        (MemoryError(), hints.OOM),
        (OSError(28, "No space left on device"), hints.DISK),
        (FileNotFoundError(2, "nope"), hints.PATH),
        (PermissionError(13, "denied"), hints.PERMISSION),
        (RuntimeError("CUDA out of memory. Tried to allocate"), hints.OOM),
        (RuntimeError("something else"), ""),
    ],
)
def test_hints_for_common_failures(exc, expected):
    assert hints.hint_for(exc) == expected


def test_a_hint_is_found_through_the_exception_chain():
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert hints.hint_for(outer) == hints.DISK


def test_sft_with_a_tokenizer_without_chat_template_is_refused_before_start(tmp_path):
    ws, name, values = make_task(tmp_path)
    (tmp_path / "model-llama" / "chat_template.jinja").unlink()
    with pytest.raises(TaskInvalid) as info:
        prepare(ws, name)
    assert "chat template" in info.value.problems["model_path"]
    assert_untouched(ws, name)


def test_a_non_finite_loss_is_logged_as_a_gap_and_warned_about_once(tmp_path):
    """The NaN filter is off (it syncs the GPU every micro-batch), so divergence must be reported by us."""
    import threading

    import torch
    from safetensors.torch import load_file, save_file
    from test_run_support import make_task

    from modx_widgets.events import Log, Message
    from modx_widgets.run.engine import execute

    ws, name, values = make_task(tmp_path, max_steps=3, logging_steps=1, use_lora=False)
    weights = f"{values['model_path']}/model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.endswith("norm.weight"))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    events: list = []
    execute(ws, name, events.append, threading.Event())
    logs = [e for e in events if isinstance(e, Log)]
    warnings = [e for e in events if isinstance(e, Message) and "training has diverged" in e.text]
    assert len(logs) == 3 and all(log.loss is None for log in logs)
    assert len(warnings) == 1 and "at step 1" in warnings[0].text
