"""Memory estimate: exact parameter and optimizer-state counts against real objects, the
cheapest-fix warning, and the training-time increase against measured peak RSS on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modx_widgets.estimate import EstimateError, estimate_memory, format_bytes, model_shape
from modx_widgets.schema.spec import load_schema
from modx_widgets.testing import make_small_model, make_tiny_model

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("gpt2") / "model", arch="gpt2")


def _config_dir(tmp_path: Path, name: str, config) -> Path:
    d = tmp_path / name
    config.save_pretrained(d)
    return d


def _architectures(tmp_path: Path) -> dict[str, tuple[Path, object]]:
    """Config directories for the Llama-like variants the estimate claims to cover, with their configs."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=500, hidden_size=96, intermediate_size=200, num_hidden_layers=3, num_attention_heads=6)
    configs = {
        "llama_gqa": LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=False),
        "llama_tied_bias": LlamaConfig(**common, num_key_value_heads=6, tie_word_embeddings=True,
                                       attention_bias=True, mlp_bias=True),
        "llama_head_dim": LlamaConfig(**common, num_key_value_heads=3, head_dim=8),
        "qwen2": Qwen2Config(**common, num_key_value_heads=2),
        "qwen3": Qwen3Config(**common, num_key_value_heads=2, head_dim=24),
        "gpt2": GPT2Config(vocab_size=500, n_embd=96, n_layer=3, n_head=6, n_positions=128, n_inner=200),
    }
    return {name: (_config_dir(tmp_path, name, cfg), cfg) for name, cfg in configs.items()}


def _real_model(config):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


# --------------------------------------------------------------------------------------- counts


def test_total_parameters_equal_the_instantiated_model_for_each_architecture(tmp_path):
    for name, (path, config) in _architectures(tmp_path).items():
        model = _real_model(config)
        expected = sum(p.numel() for p in model.parameters())
        assert estimate_memory(path, {}, "pretrain").total_params == expected, name


def test_total_parameters_of_the_test_models_match_their_weights(tiny, tiny_gpt2):
    from transformers import AutoModelForCausalLM

    for path in (tiny, tiny_gpt2):
        model = AutoModelForCausalLM.from_pretrained(path)
        assert estimate_memory(path, {}, "pretrain").total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "targets, rank",
    [(["q_proj", "v_proj"], 16), (LLAMA_TARGETS, 8), (["embed_tokens", "lm_head", "o_proj"], 4)],
)
def test_lora_trainable_parameters_equal_peft_count(tmp_path, targets, rank):
    from peft import LoraConfig, get_peft_model

    for name in ("llama_gqa", "llama_tied_bias", "qwen3"):
        path, config = _architectures(tmp_path / name)[name]
        peft_model = get_peft_model(_real_model(config), LoraConfig(r=rank, target_modules=targets))
        trainable, total = peft_model.get_nb_trainable_parameters()
        est = estimate_memory(path, {"lora_r": rank, "lora_target_modules": targets}, "sft")
        assert est.trainable_params == trainable, (name, targets)


def test_full_finetuning_and_pretraining_train_every_parameter(tiny):
    pre = estimate_memory(tiny, {}, "pretrain")
    full = estimate_memory(tiny, {"use_lora": False}, "sft")
    lora = estimate_memory(tiny, {}, "sft")
    assert pre.trainable_params == full.trainable_params == pre.total_params
    assert 0 < lora.trainable_params < pre.total_params
    assert full.gradient_bytes == 4 * full.trainable_params  # float32 weights, one gradient each


def test_peft_config_file_replaces_the_form_lora_values(tiny, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter_cfg = tmp_path / "adapter_config.json"
    adapter_cfg.write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["o_proj", "down_proj"]}))
    est = estimate_memory(tiny, {"peft_config_path": str(adapter_cfg), "lora_r": 64}, "sft")
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules=["o_proj", "down_proj"])
    )
    assert est.trainable_params == peft_model.get_nb_trainable_parameters()[0]


def test_targets_the_model_lacks_are_listed_in_the_notes(tiny_gpt2):
    est = estimate_memory(tiny_gpt2, {"lora_target_modules": ["q_proj", "c_attn"]}, "sft")
    assert est.trainable_params > 0  # c_attn exists in GPT-2
    assert any("q_proj" in note for note in est.notes)


# --------------------------------------------------------------------------------------- optimizer


def _real_optimizer_state_bytes(model_dir: Path, optim: str, training_type: str, tmp_path: Path) -> int:
    """Bytes of the state the Trainer's own optimizer allocates after one step (shared tensors once)."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if training_type == "sft":
        from peft import LoraConfig, get_peft_model

        defaults = load_schema().defaults()
        model = get_peft_model(model, LoraConfig(r=defaults["lora_r"], target_modules=defaults["lora_target_modules"]))
    args = TrainingArguments(output_dir=str(tmp_path / optim), optim=optim, use_cpu=True, report_to="none")
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = cls(params, **kwargs)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    seen: dict[int, int] = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.dim() > 0:
                seen[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(seen.values())


@pytest.mark.parametrize("optim", load_schema().params["optim"].options)
@pytest.mark.parametrize("training_type", ["sft", "pretrain"])
def test_optimizer_state_matches_the_real_optimizer(tiny, tmp_path, optim, training_type):
    est = estimate_memory(tiny, {"optim": optim}, training_type)
    real = _real_optimizer_state_bytes(tiny, optim, training_type, tmp_path)
    assert est.optimizer_bytes == pytest.approx(real, rel=0.01, abs=4096), (optim, format_bytes(real))


def test_optimizers_order_by_state_size(tiny):
    optims = load_schema().params["optim"].options
    size = {o: estimate_memory(tiny, {"optim": o}, "pretrain").optimizer_bytes for o in optims}
    assert size["adamw_torch"] > size["adamw_8bit"] == size["paged_adamw_8bit"] > size["adafactor"] > size["sgd"] == 0


# --------------------------------------------------------------------------------------- activations


def test_activations_grow_with_batch_and_length_and_shrink_with_checkpointing(tiny):
    base = {"per_device_train_batch_size": 2, "max_seq_length": 256, "gradient_checkpointing": False}
    a = estimate_memory(tiny, base, "sft").activation_bytes
    assert estimate_memory(tiny, {**base, "per_device_train_batch_size": 4}, "sft").activation_bytes == 2 * a
    assert estimate_memory(tiny, {**base, "max_seq_length": 512}, "sft").activation_bytes == 2 * a
    assert estimate_memory(tiny, base, "sft", seq_len=128).activation_bytes * 2 == a
    assert estimate_memory(tiny, {**base, "gradient_checkpointing": True}, "sft").activation_bytes < a
    assert estimate_memory(tiny, {**base, "bf16": True, "fp16": False}, "sft").activation_bytes < a


def test_fp16_is_float32_on_cpu_and_half_on_gpu(tiny):
    values = {"fp16": True, "gradient_checkpointing": False}
    cpu = estimate_memory(tiny, values, "pretrain", device="cpu")
    gpu = estimate_memory(tiny, values, "pretrain", device="cuda:0", device_free_bytes=10**12)
    assert gpu.activation_bytes < cpu.activation_bytes
    assert any("fp16" in n for n in cpu.notes)


# --------------------------------------------------------------------------------------- fit and fixes


def test_no_warning_when_it_fits(tiny):
    est = estimate_memory(tiny, {}, "sft", device_free_bytes=10**12)
    assert est.fits is True and est.warning is None and est.fixes == ()


def test_cpu_free_memory_is_detected_when_not_given(tiny):
    est = estimate_memory(tiny, {}, "sft", device="cpu")
    assert est.free_bytes is not None and est.free_bytes > 0 and est.device == "cpu"


def test_cheapest_fix_is_gradient_checkpointing_when_it_is_enough(tiny):
    values = {"gradient_checkpointing": False, "per_device_train_batch_size": 8}
    with_ckpt = estimate_memory(tiny, {**values, "gradient_checkpointing": True}, "pretrain").total_bytes
    est = estimate_memory(tiny, values, "pretrain", device_free_bytes=with_ckpt)
    assert est.fits is False
    assert [f.changes for f in est.fixes] == [{"gradient_checkpointing": True}]
    assert "gradient checkpointing" in est.warning


def test_fixes_are_ordered_by_cost_and_applying_them_makes_it_fit(tiny):
    values = {"gradient_checkpointing": False, "per_device_train_batch_size": 16, "max_seq_length": 1024,
              "use_lora": False}
    before = estimate_memory(tiny, values, "sft").total_bytes
    free = before // 20  # no single change is enough for this one
    est = estimate_memory(tiny, values, "sft", device_free_bytes=free)
    assert est.fits is False and len(est.fixes) > 1
    fixed = dict(values)
    for fix in est.fixes:
        fixed.update(fix.changes)
    assert estimate_memory(tiny, fixed, "sft").total_bytes <= free
    keys = [k for f in est.fixes for k in f.changes]
    order = ["gradient_checkpointing", "optim", "per_device_train_batch_size", "use_lora", "max_seq_length"]
    positions = [order.index(k) for k in keys if k in order]
    assert positions == sorted(positions)
    assert "Cheapest fix" in est.warning


def test_warning_says_when_nothing_makes_it_fit(tiny):
    est = estimate_memory(tiny, {}, "pretrain", device_free_bytes=1024)
    assert est.fits is False
    assert "smaller model" in est.warning


# --------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(tmp_path, tiny):
    with pytest.raises(EstimateError, match="config.json"):
        estimate_memory(tmp_path, {}, "sft")
    with pytest.raises(EstimateError, match="unknown parameter"):
        estimate_memory(tiny, {"learning_rat": 1e-4}, "sft")
    with pytest.raises(EstimateError, match="training_type"):
        estimate_memory(tiny, {}, "rlhf")
    with pytest.raises(EstimateError, match="per_device_train_batch_size"):
        estimate_memory(tiny, {"per_device_train_batch_size": 0}, "sft")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(EstimateError, match="Llama-like"):
        model_shape(tmp_path / "bert")


def test_estimate_imports_no_ml_library(tiny):
    code = (
        "import sys; from modx_widgets.estimate import estimate_memory\n"
        f"estimate_memory({str(tiny)!r}, {{}}, 'sft', device='auto')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------------------- measured RSS

# Trains a few steps with the engine's own pieces (model loading, adapter, TrainingArguments,
# Trainer) on fixed-length random token batches, so every batch is exactly batch x max_seq_length
# like the estimate assumes.  Baseline: RSS once the model and Trainer exist; peak: the kernel's
# high-water mark (VmHWM), reset just before training.
_MEASURE = textwrap.dedent(
    """
    import json, sys
    import torch, datasets
    from transformers import default_data_collator
    from modx_widgets.config.build import training_arguments
    from modx_widgets.run.model import add_adapter, load_model
    from modx_widgets.run.trainer import ModxTrainer
    from modx_widgets.schema.spec import load_schema

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    values = {**load_schema().defaults(), **cfg["values"]}
    model = add_adapter(load_model(values), values, cfg["training_type"])
    b, s = values["per_device_train_batch_size"], values["max_seq_length"]
    n = b * values["gradient_accumulation_steps"] * cfg["steps"]
    ids = torch.randint(0, cfg["vocab"], (n, s), generator=torch.Generator().manual_seed(0)).tolist()
    data = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * s] * n, "labels": ids})
    args = training_arguments(values, cfg["training_type"], output_dir=cfg["out"], device="cpu",
                              max_steps=cfg["steps"], save_strategy="no", dataloader_num_workers=0)
    trainer = ModxTrainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
    baseline = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark
    trainer.train()
    print("RESULT " + json.dumps({"increase": status("VmHWM") - baseline}))
    """
)


def _measured_increase(model_dir: Path, values: dict, training_type: str, tmp_path: Path) -> int:
    cfg = {
        "values": {**values, "model_path": str(model_dir)},
        "training_type": training_type,
        "out": str(tmp_path / "out"),
        "steps": 2,
        "vocab": model_shape(model_dir).vocab_size,
    }
    # A fixed mmap threshold makes glibc hand freed activation blocks back to the kernel, so RSS
    # follows live tensors; with glibc's default (a threshold that grows to 32 MiB) RSS also keeps
    # freed blocks -- docs/export.md gives both numbers.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(cfg)], capture_output=True, text=True, env=env, timeout=600
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stderr[-4000:]
    return json.loads(lines[0][len("RESULT "):])["increase"]


def _assert_close(model_dir: Path, values: dict, training_type: str, tmp_path: Path) -> None:
    values = {**values, "gradient_accumulation_steps": 1, "fp16": False}
    est = estimate_memory(model_dir, values, training_type, device="cpu")
    measured = _measured_increase(model_dir, values, training_type, tmp_path)
    ratio = measured / est.training_bytes
    print(f"{training_type} {values}: estimate {format_bytes(est.training_bytes)} measured {format_bytes(measured)}")
    assert 0.5 <= ratio <= 2.0, (format_bytes(est.training_bytes), format_bytes(measured))


@pytest.mark.slow
@pytest.mark.parametrize(
    "training_type, checkpointing", [("sft", False), ("pretrain", False)], ids=["lora", "full"]
)
def test_estimate_matches_measured_peak_rss_for_the_tiny_model(tiny, tmp_path, training_type, checkpointing):
    values = {"per_device_train_batch_size": 8, "max_seq_length": 512, "gradient_checkpointing": checkpointing}
    _assert_close(tiny, values, training_type, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "training_type, checkpointing", [("sft", True), ("pretrain", False)], ids=["lora-checkpointing", "full"]
)
def test_estimate_matches_measured_peak_rss_for_the_small_model(tmp_path, training_type, checkpointing):
    small = make_small_model(tmp_path / "small")
    values = {"per_device_train_batch_size": 4, "max_seq_length": 512, "gradient_checkpointing": checkpointing}
    _assert_close(small, values, training_type, tmp_path)
