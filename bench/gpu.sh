#!/usr/bin/env bash
# GPU benchmark: LoRA SFT of a ~1.1B-parameter Llama on one NVIDIA GPU, three ways.
#
#   bash bench/gpu.sh             # on a machine with one NVIDIA GPU (H100/H200: well under 8 minutes)
#   bash bench/gpu.sh --dry-run   # anywhere: same code path on CPU with a tiny config, a few steps
#
# Why these variants: on CPU, padding-free packing showed no reliable gain; its win is expected on
# a GPU, where padded positions cost real FLOPs and FlashAttention/SDPA handle variable lengths.
# Liger kernels (fused RMSNorm/RoPE/SwiGLU/linear+cross-entropy) are tried when installed.
#   1. sdpa, padded       dynamic padding to the longest sequence of each batch
#   2. sdpa, grouped      padded, in the engine's default length-grouped order (group_by_length)
#   3. sdpa, packed       padding-free (DataCollatorWithFlattening, position_ids, use_cache=False)
#   4. fa2, packed        same with flash_attention_2, when flash-attn is installed
#   5. + liger            best packed variant with use_liger_kernel=True, when liger-kernel is installed
# Everything is built locally (random bf16 weights, synthetic token sequences with SFT-like
# long-tailed lengths up to 2048); nothing is downloaded.
#
# MFU convention (printed with the results): useful FLOPs per token for LoRA =
#   4*N  (2N forward + 2N backward for activation gradients; frozen base weights get no weight
#         gradients; N = parameters of all matmuls incl. lm_head, excluding the embedding lookup)
# + 6*N_lora (adapter weights are trained: forward + both backward matmuls)
# + 12*L*d*s (attention scores and weighted sum, forward + backward, no causal discount;
#             s = the token's own sequence length, so padding and other packed sequences never count).
# Peak dense bf16 FLOP/s is taken from the device name (H100/H200 SXM: 989 TFLOP/s) or from
# GPU_PEAK_TFLOPS. Padding is wasted work, so it lowers MFU.
#
# Environment knobs: PYTHON (interpreter, default python), STEPS (60), SEQ_LEN (2048),
# MICRO_BATCH (16), WARMUP_STEPS (5, excluded from the timing), GPU_PEAK_TFLOPS.
set -euo pipefail

PY="${PYTHON:-python}"
MODE=gpu
case "${1:-}" in
  --dry-run) MODE=dry ;;
  "") ;;
  -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
  *) echo "usage: bash bench/gpu.sh [--dry-run]" >&2; exit 64 ;;
esac

if [[ "$MODE" == gpu ]]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu.sh: no NVIDIA GPU here (nvidia-smi missing or sees no device)." >&2
    echo "  Run it on a machine with one NVIDIA GPU and a CUDA build of torch," >&2
    echo "  or check the script on CPU with: bash bench/gpu.sh --dry-run" >&2
    exit 2
  fi
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "bench/gpu.sh: a GPU is present but torch cannot use it (CPU-only torch build, or no torch at $PY)." >&2
    echo "  Install a CUDA build of torch==2.13.0 in that environment, or set PYTHON=/path/to/python." >&2
    exit 2
  fi
fi

SCRIPT="$(mktemp "${TMPDIR:-/tmp}/modx_gpu_bench.XXXXXX.py")"
trap 'rm -f "$SCRIPT"' EXIT
cat > "$SCRIPT" <<'PYEOF'
"""Body of bench/gpu.sh (see the header there for what and why)."""
import importlib.util
import math
import os
import random
import sys
import time

import torch

MODE = sys.argv[1]
DRY = MODE == "dry"
STEPS = int(os.environ.get("STEPS", 3 if DRY else 60))
SEQ_LEN = int(os.environ.get("SEQ_LEN", 128 if DRY else 2048))
MICRO_BATCH = int(os.environ.get("MICRO_BATCH", 2 if DRY else 16))
WARMUP = int(os.environ.get("WARMUP_STEPS", 1 if DRY else 5))
DEVICE = "cpu" if DRY else "cuda"
DTYPE = torch.float32 if DRY else torch.bfloat16
PEAKS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
         "H100": 756.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0, "RTX 4090": 165.0}


def log(msg):
    print(msg, flush=True)


def model_config():
    from transformers import LlamaConfig

    if DRY:
        sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=512)
    else:  # TinyLlama-1.1B shape
        sizes = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4, vocab_size=32000)
    return LlamaConfig(max_position_embeddings=SEQ_LEN, tie_word_embeddings=False, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, use_cache=False, **sizes)


def build_model(config, attn):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM._from_config(config, attn_implementation=attn, dtype=DTYPE)
    model.config.use_cache = False
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def make_samples(n, vocab):
    """SFT-like lengths: long-tailed (lognormal), capped at SEQ_LEN; the first ~third is prompt (-100)."""
    rng = random.Random(0)
    median = SEQ_LEN / 4
    samples = []
    for _ in range(n):
        length = max(16, min(SEQ_LEN, int(rng.lognormvariate(0.0, 0.8) * median)))
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        cut = length // 3
        samples.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return samples


def grouped_samples(samples):
    """The engine's default order (group_by_length): sorted by length inside windows of steps."""
    import numpy as np
    from modx_widgets.data.order import length_grouped

    lengths = np.array([len(x["input_ids"]) for x in samples])
    order = length_grouped(np.arange(len(samples)), lengths, MICRO_BATCH)
    return [samples[i] for i in order]


class PaddingCollator:
    """Dynamic padding to the longest sequence of the batch (what the engine does by default)."""

    def __call__(self, batch):
        width = max(len(x["input_ids"]) for x in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, x in enumerate(batch):
            n = len(x["input_ids"])
            ids[i, :n] = torch.tensor(x["input_ids"])
            labels[i, :n] = torch.tensor(x["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def packing_collator():
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True)


def flops_per_step_useful(config, lora_params, linear_params, lengths):
    """Useful FLOPs of one optimizer step (see the convention in the header)."""
    tokens = sum(lengths)
    attn = 12 * config.num_hidden_layers * config.hidden_size * sum(s * s for s in lengths)
    return (4 * linear_params + 6 * lora_params) * tokens + attn


def count_params(model):
    linear = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            n = module.weight.numel()
            if "lora_" in name:
                lora += n
            else:
                linear += n
    return linear, lora


def peak_tflops():
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"])
    if DRY:
        return None
    name = torch.cuda.get_device_name(0)
    for key, value in PEAKS.items():
        if key in name:
            return value
    return None


def check_packing_isolation(config):
    """Packed sequences must not see each other: logits of a packed batch equal separate runs."""
    model = build_model(config, "sdpa").eval()
    rng = random.Random(1)
    seqs = [[rng.randrange(3, config.vocab_size) for _ in range(n)] for n in (7, 13, 5)]
    with torch.no_grad():
        ref = [model(input_ids=torch.tensor([s], device=DEVICE)).logits[0].float() for s in seqs]
        flat = torch.tensor([sum(seqs, [])], device=DEVICE)
        pos = torch.tensor([sum([list(range(len(s))) for s in seqs], [])], device=DEVICE)
        packed = model(input_ids=flat, position_ids=pos).logits[0].float()
    diff = (packed - torch.cat(ref)).abs().max().item()
    del model
    return diff


def run_variant(label, config, attn, collator, samples, liger=False):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    if not DRY:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(config, attn)
    linear, lora = count_params(model)
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step in (WARMUP, STEPS):
                if not DRY:
                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "modx_gpu_bench_out"),
        per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=1, max_steps=STEPS,
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.01,
        bf16=not DRY, use_cpu=DRY, activation_checkpointing=False, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True, dataloader_num_workers=0 if DRY else 2,
        remove_unused_columns=False, train_sampling_strategy="sequential", use_liger_kernel=liger,
        logging_nan_inf_filter=False, seed=42,  # as the engine: no per-step NaN check (a host sync)
    )
    trainer = Trainer(model=model, args=args, train_dataset=samples, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    # Sequential sampling, one micro-batch per step: step k trains samples[(k-1)*B : k*B]. Derived
    # here rather than counted in the collator, which runs in dataloader worker processes.
    timed = [[len(x["input_ids"]) for x in samples[k * MICRO_BATCH:(k + 1) * MICRO_BATCH]]
             for k in range(WARMUP, STEPS)]
    seconds = marks[STEPS] - marks[WARMUP]
    tokens = sum(sum(b) for b in timed)
    useful = sum(flops_per_step_useful(config, lora, linear, b) for b in timed)
    peak = peak_tflops()
    mem = torch.cuda.max_memory_allocated() / 2**30 if not DRY else float("nan")
    result = dict(label=label, tokens_per_s=tokens / seconds, seconds=seconds, peak_gib=mem,
                  mfu=(useful / seconds) / (peak * 1e12) if peak else None,
                  loss=trainer.state.log_history[-1].get("train_loss"), params=(linear, lora))
    del trainer, model
    return result


def main():
    t0 = time.perf_counter()
    config = model_config()
    log(f"bench/gpu.sh mode={MODE} device={torch.cuda.get_device_name(0) if not DRY else 'cpu'} "
        f"torch={torch.__version__} steps={STEPS} seq_len<={SEQ_LEN} micro_batch={MICRO_BATCH}")
    diff = check_packing_isolation(config)
    tol = 1e-4 if DRY else 5e-2
    log(f"packing isolation: max |logit diff| packed vs separate = {diff:.2e} (tolerance {tol:g})")
    if not diff <= tol:
        sys.exit("packed sequences leak into each other: padding-free results would be wrong")
    samples = make_samples(STEPS * MICRO_BATCH + MICRO_BATCH, config.vocab_size)
    grouped = grouped_samples(samples)
    variants = [("sdpa, padded", "sdpa", PaddingCollator(), False),
                ("sdpa, padded, length-grouped", "sdpa", PaddingCollator(), False),
                ("sdpa, packed", "sdpa", packing_collator(), False)]
    best_packed_attn = "sdpa"
    if not DRY and importlib.util.find_spec("flash_attn") is not None:
        variants.append(("flash_attention_2, packed", "flash_attention_2", packing_collator(), False))
        best_packed_attn = "flash_attention_2"
    if importlib.util.find_spec("liger_kernel") is not None and not DRY:
        variants.append((f"{best_packed_attn}, packed + liger", best_packed_attn, packing_collator(), True))
    else:
        log("liger-kernel not installed (or dry run): the Liger variant is skipped")
    results = []
    for label, attn, collator, liger in variants:
        log(f"-- {label}")
        results.append(run_variant(label, config, attn, collator, grouped if "grouped" in label else samples, liger))
    linear, lora = results[0]["params"]
    log("")
    log(f"model: Llama {config.num_hidden_layers}L d={config.hidden_size}, matmul params N={linear / 1e9:.3f}B, "
        f"LoRA params={lora / 1e6:.2f}M, {'fp32 (dry run)' if DRY else 'bf16'}, gradient checkpointing off")
    log("MFU convention: (4*N + 6*N_lora) per real token + 12*L*d*s attention per token of a length-s sequence")
    base = results[0]["tokens_per_s"]
    log(f"{'variant':34} {'tokens/s':>11} {'vs padded':>9} {'peak GiB':>9} {'MFU':>7} {'final loss':>10}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        loss = f"{r['loss']:.3f}" if r["loss"] is not None else "n/a"
        mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] == r["peak_gib"] else "n/a"
        log(f"{r['label']:34} {r['tokens_per_s']:11.0f} {r['tokens_per_s'] / base:8.2f}x {mem:>9} "
            f"{mfu:>7} {loss:>10}")
    log(f"total wall time {time.perf_counter() - t0:.0f} s (timed steps {WARMUP + 1}..{STEPS} of each variant)")


if __name__ == "__main__":
    main()
PYEOF

"$PY" "$SCRIPT" "$MODE"
