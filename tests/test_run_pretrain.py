"""Pre-training trains every weight and saves a full model."""

from __future__ import annotations

import json
import os

from test_run_support import losses, make_task, run_task, torch_single_thread  # noqa: F401


def test_pretraining_trains_all_weights_the_loss_falls_and_a_full_model_is_saved(tmp_path):
    from safetensors.torch import load_file

    ws, name, values = make_task(
        tmp_path, training_type="pretrain", learning_rate=2e-2, max_steps=8, eval_strategy="steps", eval_steps=4,
        eval_split_ratio=0.2, fp16=True,
    )
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert any("fp32" in m for m in rec.messages("warning"))  # fp16 asked on a CPU: said, not silent
    assert rec.evals[-1].eval_loss < rec.evals[0].eval_loss
    train = losses(rec)
    assert sum(train[-3:]) < sum(train[:3])

    out = values["output_dir"]
    assert "adapter_config.json" not in os.listdir(out)
    before = load_file(os.path.join(values["model_path"], "model.safetensors"))
    after = load_file(os.path.join(out, "model.safetensors"))
    changed = [k for k in before if not (before[k] == after[k]).all()]
    # every weight matrix moved: embeddings, attention, MLP, norms and the LM head
    assert set(changed) == set(before)
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["use_cache"] is True
    assert os.path.exists(os.path.join(out, "tokenizer.json"))


def test_bf16_trains_on_the_cpu(tmp_path):
    ws, name, _ = make_task(tmp_path, training_type="pretrain", fp16=False, bf16=True, max_steps=2, device="cpu")
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    assert not any("bf16" in m for m in rec.messages("warning"))
