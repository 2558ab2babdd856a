"""Checkpoints: save strategies, save_total_limit rotation, and saving by time interval."""

from __future__ import annotations

import os

from test_run_support import CallbackBase, make_task, run_task, torch_single_thread  # noqa: F401

from modx_widgets.run.checkpoints import is_complete, list_checkpoints


def checkpoint_steps(output_dir) -> list[int]:
    if not os.path.isdir(output_dir):
        return []
    return sorted(int(d.split("-")[1]) for d in os.listdir(output_dir) if d.startswith("checkpoint-"))


class FakeClock:
    """Advances `tick` seconds at the start of every optimizer step (driven by a callback)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        return self.now

    def callback(self):
        def on_step_begin(cb, args, state, control, **kw):
            self.now += self.tick

        return CallbackBase.make(on_step_begin=on_step_begin)


def test_step_saves_rotate_to_the_newest_save_total_limit(tmp_path):
    ws, name, values = make_task(tmp_path, save_strategy="steps", save_steps=2, save_total_limit=2, max_steps=6)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert [c.step for c in rec.checkpoints] == [2, 4, 6]
    assert checkpoint_steps(values["output_dir"]) == [4, 6]
    assert all(is_complete(p) for p in list_checkpoints(values["output_dir"]))
    assert rec.checkpoints[-1].path == os.path.join(values["output_dir"], "checkpoint-6")


def test_epoch_saves_happen_at_each_epoch_end(tmp_path):
    ws, name, values = make_task(
        tmp_path, save_strategy="epoch", max_steps=-1, num_train_epochs=2, per_device_train_batch_size=4, n=24,
    )
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    per_epoch = 24 // (4 * values["gradient_accumulation_steps"])
    assert checkpoint_steps(values["output_dir"]) == [per_epoch, 2 * per_epoch]


def test_save_interval_adds_checkpoints_by_elapsed_time(tmp_path):
    minutes, tick, steps = 1, 25.0, 8
    clock = FakeClock(tick)
    ws, name, values = make_task(
        tmp_path, save_strategy="steps", save_steps=1000, save_interval_minutes=minutes, max_steps=steps,
    )
    state, rec = run_task(ws, name, callbacks=[clock.callback()], clock=clock)
    assert state == "Completed", rec.errors
    # Expected: a save whenever `minutes` have passed since the last save (or the start);
    # the clock has advanced one tick per step; the last step always saves (save_strategy steps).
    expected, last = [], 0.0
    for step in range(1, steps + 1):
        now = step * tick
        if now - last >= minutes * 60:
            expected.append(step)
            last = now
    assert expected and expected[-1] != steps
    assert [c.step for c in rec.checkpoints] == expected + [steps]


def test_save_strategy_no_writes_no_checkpoint_even_when_the_interval_passes(tmp_path):
    clock = FakeClock(600.0)
    ws, name, values = make_task(tmp_path, save_strategy="no", save_interval_minutes=1, max_steps=3)
    state, rec = run_task(ws, name, callbacks=[clock.callback()], clock=clock)
    assert state == "Completed", rec.errors
    assert rec.checkpoints == [] and checkpoint_steps(values["output_dir"]) == []
    assert os.path.exists(os.path.join(values["output_dir"], "adapter_model.safetensors"))
