"""Evaluation during training (split and file) and early stopping."""

from __future__ import annotations

import math

from test_run_support import make_task, run_task, torch_single_thread  # noqa: F401

from modx_widgets.events import Eval


def test_eval_split_evaluates_at_each_epoch_end_on_held_out_examples(tmp_path):
    ws, name, values = make_task(
        tmp_path, eval_split_ratio=0.25, eval_strategy="epoch", max_steps=-1, num_train_epochs=2,
        per_device_train_batch_size=3, n=24,
    )
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    n_eval = round(24 * 0.25)
    assert f"data: {24 - n_eval} training and {n_eval} evaluation example(s)" in rec.messages("info")
    per_epoch = math.ceil((24 - n_eval) / (3 * values["gradient_accumulation_steps"]))
    assert [e.step for e in rec.evals] == [per_epoch, 2 * per_epoch]
    assert all(e.eval_loss is not None and math.isfinite(e.eval_loss) for e in rec.evals)
    assert "eval_runtime" in rec.evals[0].metrics
    assert [e.step for e in ws.read_events(name) if isinstance(e, Eval)] == [e.step for e in rec.evals]


def test_eval_file_evaluates_every_eval_steps(tmp_path):
    from modx_widgets.testing import make_sft_data

    eval_file = make_sft_data(tmp_path / "eval.jsonl", n=5, seed=9)
    ws, name, _ = make_task(tmp_path, eval_file=str(eval_file), eval_strategy="steps", eval_steps=2, max_steps=5)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    # every 2 steps, plus the final step because it is not a multiple of eval_steps
    assert [e.step for e in rec.evals] == [2, 4, 5]
    assert "data: 24 training and 5 evaluation example(s)" in rec.messages("info")


def test_early_stopping_stops_when_eval_loss_stops_improving_by_the_threshold(tmp_path):
    ws, name, _ = make_task(
        tmp_path, eval_split_ratio=0.2, eval_strategy="steps", eval_steps=1, save_strategy="no",
        early_stopping_patience=1, early_stopping_threshold=1.0, max_steps=20, learning_rate=1e-3,
    )
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    # first evaluation sets the best; the second cannot beat it by 1.0 -> patience (1) used up
    assert [e.step for e in rec.evals] == [1, 2]
    assert rec.progress[-1].step == 2 < rec.progress[-1].max_steps
    assert any("keeps the last weights" in m for m in rec.messages("warning"))
