"""LoRA SFT runs end to end through run.execute, and what a run leaves behind."""

from __future__ import annotations

import json
import os

import pytest
from test_run_support import losses, make_task, run_task, torch_single_thread  # noqa: F401

from modx_widgets.events import Log, Status


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    ws, name, values = make_task(
        tmp, learning_rate=2e-2, max_steps=8, eval_strategy="steps", eval_steps=4, eval_file=str(tmp / "sft.jsonl")
    )
    state, rec = run_task(ws, name)
    return ws, name, values, state, rec


def test_lora_sft_completes_and_its_eval_loss_falls(sft_run):
    _, _, _, state, rec = sft_run
    assert state == "Completed", rec.errors
    first, last = rec.evals[0].eval_loss, rec.evals[-1].eval_loss
    assert last < first
    train = losses(rec)
    assert sum(train[-3:]) / 3 < sum(train[:3]) / 3


def test_status_goes_running_then_completed_with_owner_and_steps(sft_run):
    ws, name, _, _, rec = sft_run
    assert rec.states == ["Running", "Completed"]
    status = ws.read_status(name)
    assert status.state == "Completed" and status.owner_pid == os.getpid()
    assert status.step == status.max_steps == 8
    assert status.started is not None and status.ended >= status.started


def test_every_step_reports_progress_and_every_logging_step_a_log_line(sft_run):
    _, _, _, _, rec = sft_run
    assert [p.step for p in rec.progress] == list(range(0, 9))
    assert all(p.max_steps == 8 for p in rec.progress)
    assert [log.step for log in rec.logs] == list(range(1, 9))
    for log in rec.logs:
        assert log.loss is not None and log.learning_rate is not None and log.grad_norm is not None
        assert log.tokens_per_s and log.tokens_per_s > 0
    assert rec.progress[-1].eta_s == 0


def test_events_are_persisted_to_metrics_jsonl_without_progress(sft_run):
    ws, name, _, _, rec = sft_run
    stored = ws.read_events(name)
    assert [e.step for e in stored if isinstance(e, Log)] == [log.step for log in rec.logs]
    assert [e.state for e in stored if isinstance(e, Status)] == ["Running", "Completed"]
    text = (ws.task_dir(name) / "metrics.jsonl").read_text()
    assert '"kind": "progress"' not in text


def test_final_adapter_and_tokenizer_are_saved_to_output_dir(sft_run):
    _, _, values, _, _ = sft_run
    out = values["output_dir"]
    names = set(os.listdir(out))
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    config = json.loads(open(os.path.join(out, "adapter_config.json")).read())
    assert config["r"] == values["lora_r"] and set(config["target_modules"]) == set(values["lora_target_modules"])
    assert "merged" not in names  # merge_lora is off


def test_library_logs_and_data_notes_are_written_to_run_log(sft_run):
    ws, name, _, _, _ = sft_run
    log = (ws.task_dir(name) / "run.log").read_text()
    assert "Running training" in log
    assert "train_file: 24 usable record(s)" in log


def test_real_tokens_are_counted_without_padding(tmp_path):
    """The token counter behind tokens/s sums attention masks: pads are not tokens."""
    from modx_widgets.config.build import training_arguments
    from modx_widgets.data import collator, load_datasets
    from modx_widgets.run.model import load_model, load_tokenizer
    from modx_widgets.run.trainer import ModxTrainer

    ws, name, values = make_task(tmp_path, max_steps=3, per_device_train_batch_size=4)
    values = ws.load_task(name).values
    tok = load_tokenizer(values)
    data = load_datasets(values, "sft", tok)
    trainer = ModxTrainer(
        model=load_model(values),
        args=training_arguments(values, "sft", device="cpu", output_dir=str(tmp_path / "o")),
        train_dataset=data.train,
        data_collator=collator(tok),
        processing_class=tok,
    )
    trainer.train()
    used = 3 * values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
    lengths = data.stats.lengths[:used]  # sequential order: the first `used` examples
    assert trainer.real_tokens_seen() == sum(lengths)
    assert max(lengths) * len(lengths) > sum(lengths)  # there was padding to leave out


def test_reshuffle_off_feeds_one_order_every_epoch_and_on_reshuffles(tmp_path):
    from modx_widgets.config.build import training_arguments
    from modx_widgets.data import collator, load_datasets
    from modx_widgets.run.model import load_model, load_tokenizer
    from modx_widgets.run.trainer import ModxTrainer

    def epoch_orders(reshuffle: bool) -> list[list[int]]:
        ws, name, values = make_task(tmp_path / str(reshuffle), reshuffle=reshuffle)
        values = ws.load_task(name).values
        tok = load_tokenizer(values)
        data = load_datasets(values, "sft", tok)
        data.train = data.train.add_column("idx", list(range(len(data.train))))
        trainer = ModxTrainer(
            model=load_model(values),
            args=training_arguments(values, "sft", device="cpu", output_dir=str(tmp_path / "o"),
                                    remove_unused_columns=False),
            train_dataset=data.train,
            data_collator=lambda rows: [r["idx"] for r in rows],
            processing_class=tok,
        )
        loader = trainer.get_train_dataloader()
        orders = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            orders.append([i for batch in loader for i in batch])
        return orders

    off = epoch_orders(False)
    assert off[0] == off[1] == list(range(len(off[0])))
    on = epoch_orders(True)
    assert sorted(on[0]) == sorted(on[1]) and on[0] != on[1]


def test_gradient_checkpointing_trains_the_lora_adapter(tmp_path):
    """Non-reentrant checkpointing lets gradients reach LoRA weights behind frozen embeddings."""
    ws, name, values = make_task(tmp_path, gradient_checkpointing=True, max_steps=2)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert all(log.grad_norm and log.grad_norm > 0 for log in rec.logs)
