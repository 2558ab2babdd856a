"""merge_lora writes a loadable full model whose logits match base + adapter."""

from __future__ import annotations

import json
import os

from test_run_support import make_task, run_task, torch_single_thread  # noqa: F401


def test_merged_model_loads_alone_and_matches_the_adapter_model(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ws, name, values = make_task(tmp_path, merge_lora=True, learning_rate=2e-2, max_steps=4)
    state, rec = run_task(ws, name)
    assert state == "Completed", rec.errors
    merged_dir = os.path.join(values["output_dir"], "merged")
    files = set(os.listdir(merged_dir))
    assert "model.safetensors" in files and "adapter_config.json" not in files and "tokenizer.json" in files
    assert json.loads(open(os.path.join(merged_dir, "config.json")).read())["use_cache"] is True

    tok = AutoTokenizer.from_pretrained(merged_dir)
    ids = tok("Reverse the words: apple river stone", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(values["model_path"]).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, values["output_dir"]).eval()
        adapter_logits = adapted(ids).logits
        merged_logits = merged(ids).logits
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-4)  # the adapter learned something
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-5)
