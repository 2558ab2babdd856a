"""Peak-memory estimate for a training task, computed before any model is loaded.

Why: an out-of-memory error only shows up after minutes of loading; reading `config.json`
and counting tensors takes milliseconds and can tell the user which cheap switch (gradient
checkpointing, an 8-bit optimizer, ...) makes the run fit.  Pure Python: no torch import.

The estimate is the sum of four parts (bytes)::

    peak = weights + gradients + optimizer_state + max(activations, optimizer_step_scratch)

* weights: every base tensor in float32 (the engine, `run.model.load_model`, loads the model
  in float32 whatever config.json says, and lets the Trainer autocast for fp16/bf16), plus the
  LoRA adapter tensors, also float32.
* gradients: one tensor per *trainable* parameter, same dtype as the parameter.
* optimizer state, per trainable tensor of n elements and parameter dtype size d:
  ``adamw_torch`` 2*n*d (exp_avg, exp_avg_sq); ``adamw_8bit``/``paged_adamw_8bit`` 2*n bytes
  (two uint8 states, plus 2*4 bytes of block scales per 256 elements; tensors under 4096
  elements keep 32-bit states like bitsandbytes does); ``adafactor`` (no momentum, factored
  second moment) (rows+cols)*d for matrices, n*d for vectors; ``sgd`` 0 (no momentum).
* activations: see `_activation_bytes`; proportional to batch x seq_len x layers, with a
  per-layer element count read off what autograd keeps for a Llama / GPT-2 block; with
  gradient checkpointing only each block's input, plus one recomputed block, stays.
* the optimizer step's scratch (AdamW on CUDA works on all tensors at once: one float32 copy
  of the trainable weights; elsewhere the largest tensor) never coexists with activations.

`MemoryEstimate.training_bytes` (everything but the base weights) is what training adds on
top of a loaded model; that is the part the tests compare with measured peak RSS.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .schema.spec import load_schema

__all__ = ["EstimateError", "Fix", "MemoryEstimate", "ModelShape", "estimate_memory", "model_shape", "format_bytes"]

_DTYPE_BYTES = {
    "float32": 4, "float": 4, "fp32": 4,
    "float16": 2, "half": 2, "fp16": 2,
    "bfloat16": 2, "bf16": 2,
    "float64": 8, "double": 8,
}
_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite", "smollm3")
_LOAD_DTYPE_BYTES = 4  # run.model.load_model loads float32; mixed precision is autocast
_BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit state below this many elements
_BNB_BLOCK = 256


class EstimateError(ValueError):
    """The model directory or the values cannot be estimated; the message says what to fix."""


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor: `module` is the leaf module name LoRA targets match (q_proj, ...)."""

    module: str
    shape: tuple[int, ...]
    linear: bool = False  # a Linear weight LoRA can wrap: shape is (out, in)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class ModelShape:
    """The handful of config.json numbers the estimate needs."""

    model_type: str
    family: str  # "llama" (Llama-like decoder with gated MLP) or "gpt2"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    tie_word_embeddings: bool
    dtype: str  # as stored in config.json (informative: training loads float32)
    max_positions: int = 0
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    attention_dropout: float = 0.0

    def tensors(self) -> list[Tensor]:
        """Every parameter tensor of the model (tied lm_head counted once, with the embedding)."""
        return _gpt2_tensors(self) if self.family == "gpt2" else _llama_tensors(self)


@dataclass(frozen=True)
class Fix:
    """One way to make the run fit, with the value changes it needs and the new estimate."""

    description: str
    changes: dict[str, Any]
    total_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Result of `estimate_memory`; bytes unless the name says otherwise."""

    total_params: int
    trainable_params: int
    weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    step_scratch_bytes: int
    device: str  # "cpu" or "cuda"
    free_bytes: int | None = None
    fixes: tuple[Fix, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    warning: str | None = None

    @property
    def total_bytes(self) -> int:
        """Estimated peak: activations and the optimizer's step scratch never live at once."""
        return self.weight_bytes + self.training_bytes

    @property
    def training_bytes(self) -> int:
        """What training adds to an already-loaded model: gradients, optimizer state, activations."""
        return self.gradient_bytes + self.optimizer_bytes + max(self.activation_bytes, self.step_scratch_bytes)

    @property
    def fits(self) -> bool | None:
        """None when the free memory is unknown."""
        return None if self.free_bytes is None else self.total_bytes <= self.free_bytes

    def summary(self) -> str:
        """A few lines a person can read in the widget or a notebook."""
        lines = [
            f"Parameters: {self.total_params:,} total, {self.trainable_params:,} trainable "
            f"({100 * self.trainable_params / max(self.total_params, 1):.2f}%)",
            f"Estimated peak on {self.device}: {format_bytes(self.total_bytes)}"
            f" = weights {format_bytes(self.weight_bytes)}"
            f" + gradients {format_bytes(self.gradient_bytes)} + optimizer {format_bytes(self.optimizer_bytes)}"
            f" + activations {format_bytes(max(self.activation_bytes, self.step_scratch_bytes))}",
        ]
        if self.free_bytes is not None:
            lines.append(f"Free on {self.device}: {format_bytes(self.free_bytes)}")
        lines += list(self.notes)
        if self.warning:
            lines.append(self.warning)
        return "\n".join(lines)


def format_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'; keeps three significant digits, enough for a memory budget."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- config.json


def model_shape(model_path: str | os.PathLike[str]) -> ModelShape:
    """Read config.json of a Hugging Face model directory into a `ModelShape`."""
    path = Path(model_path)
    cfg_file = path / "config.json" if path.is_dir() else path
    if not cfg_file.is_file():
        raise EstimateError(f"no config.json in {str(path)!r}: point model_path at a Hugging Face model directory")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EstimateError(f"cannot read {str(cfg_file)!r} as JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise EstimateError(f"{str(cfg_file)!r} does not hold a JSON object")
    if "text_config" in cfg and "hidden_size" not in cfg and isinstance(cfg["text_config"], dict):
        cfg = {**cfg["text_config"], "dtype": cfg.get("dtype", cfg.get("torch_dtype"))}
    model_type = str(cfg.get("model_type", ""))
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32").replace("torch.", "")
    if dtype not in _DTYPE_BYTES:
        raise EstimateError(f"config.json dtype {dtype!r} is not one of {sorted(set(_DTYPE_BYTES))}")
    if cfg.get("num_local_experts") or cfg.get("num_experts"):
        raise EstimateError(f"mixture-of-experts models ({model_type}) are not covered by the memory estimate")
    try:
        if model_type == "gpt2":
            hidden = int(cfg["n_embd"])
            heads = int(cfg["n_head"])
            return ModelShape(
                model_type=model_type, family="gpt2", vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
                num_layers=int(cfg["n_layer"]), num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads,
                intermediate_size=int(cfg.get("n_inner") or 4 * hidden),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)), dtype=dtype,
                max_positions=int(cfg.get("n_positions", 1024)),
                attention_dropout=float(cfg.get("attn_pdrop", 0.1)),
            )
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        return ModelShape(
            model_type=model_type, family="llama", vocab_size=int(cfg["vocab_size"]), hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]), num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads), intermediate_size=int(cfg["intermediate_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma"))), dtype=dtype,
            attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
            mlp_bias=bool(cfg.get("mlp_bias", False)), qk_norm=model_type in ("qwen3", "olmo2"),
            attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EstimateError(
            f"config.json of model type {model_type!r} lacks {exc}: the estimate covers Llama-like models "
            f"({', '.join(_LLAMA_LIKE)}) and gpt2"
        ) from None


def _linear(module: str, n_in: int, n_out: int, bias: bool) -> list[Tensor]:
    return [Tensor(module, (n_out, n_in), linear=True)] + ([Tensor(module + ".bias", (n_out,))] if bias else [])


def _llama_tensors(m: ModelShape) -> list[Tensor]:
    """embed V*H; per layer q/k/v/o (GQA: k and v are H x kv_heads*head_dim), gate/up/down and
    two RMSNorms; the final norm; lm_head unless tied to the embedding."""
    h, q, kv, i = m.hidden_size, m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim, m.intermediate_size
    out = [Tensor("embed_tokens", (m.vocab_size, h))]
    for _ in range(m.num_layers):
        out += _linear("q_proj", h, q, m.attention_bias)
        out += _linear("k_proj", h, kv, m.attention_bias)
        out += _linear("v_proj", h, kv, m.attention_bias)
        out += _linear("o_proj", q, h, m.attention_bias and m.model_type != "qwen2")
        if m.qk_norm:
            out += [Tensor("q_norm", (m.head_dim,)), Tensor("k_norm", (m.head_dim,))]
        out += _linear("gate_proj", h, i, m.mlp_bias)
        out += _linear("up_proj", h, i, m.mlp_bias)
        out += _linear("down_proj", i, h, m.mlp_bias)
        out += [Tensor("input_layernorm", (h,)), Tensor("post_attention_layernorm", (h,))]
    out.append(Tensor("norm", (h,)))
    if not m.tie_word_embeddings:
        out.append(Tensor("lm_head", (m.vocab_size, h), linear=True))
    return out


def _gpt2_tensors(m: ModelShape) -> list[Tensor]:
    """wte V*H, wpe P*H; per layer ln_1, c_attn H->3H, c_proj H->H, ln_2, c_fc H->4H, c_proj 4H->H (all with bias)."""
    h, i = m.hidden_size, m.intermediate_size
    out = [Tensor("wte", (m.vocab_size, h)), Tensor("wpe", (m.max_positions, h))]
    for _ in range(m.num_layers):
        out += [Tensor("ln_1", (h,)), Tensor("ln_1.bias", (h,))]
        out += _linear("c_attn", h, 3 * h, True) + _linear("c_proj", h, h, True)
        out += [Tensor("ln_2", (h,)), Tensor("ln_2.bias", (h,))]
        out += _linear("c_fc", h, i, True) + _linear("c_proj", i, h, True)
    out += [Tensor("ln_f", (h,)), Tensor("ln_f.bias", (h,))]
    if not m.tie_word_embeddings:
        out.append(Tensor("lm_head", (m.vocab_size, h), linear=True))
    return out


# ----------------------------------------------------------------------------- LoRA


@dataclass(frozen=True)
class _Lora:
    rank: int
    targets: tuple[str, ...]
    dropout: float


def _lora_settings(values: Mapping[str, Any]) -> _Lora:
    """The form's LoRA values, or the adapter_config.json named by peft_config_path (it replaces them)."""
    rank, targets, dropout = values["lora_r"], values["lora_target_modules"], values["lora_dropout"]
    peft_path = values.get("peft_config_path")
    if peft_path:
        source = Path(peft_path) / "adapter_config.json" if Path(peft_path).is_dir() else Path(peft_path)
        try:
            cfg = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EstimateError(
                f"peft_config_path {str(peft_path)!r} is not a readable adapter_config.json: {exc}"
            ) from None
        rank = cfg.get("r", rank)
        targets = cfg.get("target_modules", targets)
        dropout = cfg.get("lora_dropout", dropout)
    if isinstance(targets, str):
        targets = [targets]
    return _Lora(int(rank), tuple(targets or ()), float(dropout or 0.0))


def _lora_tensors(base: list[Tensor], m: ModelShape, lora: _Lora) -> tuple[list[Tensor], list[str]]:
    """A (r x in) and B (out x r) per targeted Linear: r*(in+out); an embedding gets r*(V+H).

    Returns the adapter tensors and the targets the model does not have (they add nothing;
    the engine reports them as an error before training).
    """
    all_linear = "all-linear" in lora.targets
    wanted = set(lora.targets) - {"all-linear"}
    present = {t.module for t in base} | ({"lm_head"} if m.tie_word_embeddings else set())
    missing = sorted(t for t in wanted if t not in present)
    adapters: list[Tensor] = []
    for t in base:
        if t.linear and (t.module in wanted or (all_linear and t.module != "lm_head")):
            n_out, n_in = t.shape
            adapters += [Tensor(f"lora_A.{t.module}", (lora.rank, n_in)),
                         Tensor(f"lora_B.{t.module}", (n_out, lora.rank))]
        elif t.module in ("embed_tokens", "wte") and t.module in wanted:
            n_vocab, h = t.shape
            adapters += [Tensor(f"lora_A.{t.module}", (lora.rank, n_vocab)),
                         Tensor(f"lora_B.{t.module}", (h, lora.rank))]
    if m.tie_word_embeddings and "lm_head" in wanted:  # PEFT wraps the tied head like any Linear
        adapters += [Tensor("lora_A.lm_head", (lora.rank, m.hidden_size)),
                     Tensor("lora_B.lm_head", (m.vocab_size, lora.rank))]
    return adapters, missing


# ----------------------------------------------------------------------------- optimizer


def _optimizer_bytes(optim: str, tensors: list[Tensor], dtype_bytes: int) -> int:
    """State bytes for `tensors`, as the Trainer's optimizer of that name allocates them."""
    total = 0
    for t in tensors:
        n = t.numel
        if optim == "adamw_torch":
            total += 2 * n * dtype_bytes
        elif optim in ("adamw_8bit", "paged_adamw_8bit"):
            total += 2 * n * 4 if n < _BNB_MIN_8BIT_SIZE else 2 * n + 2 * 4 * -(-n // _BNB_BLOCK)
        elif optim == "adafactor":
            if len(t.shape) >= 2:  # row and column second-moment factors
                rows, cols = n // t.shape[-1], n // t.shape[-2]
                total += (rows + cols) * dtype_bytes
            else:
                total += n * dtype_bytes
        elif optim == "sgd":
            total += 0
        else:
            raise EstimateError(f"optimizer {optim!r} is not known to the estimate")
    return total


# ----------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class _Kept:
    """Elements per token one block keeps for backward: `wide` stay float32 under autocast
    (norm inputs/outputs on the float32 residual stream), `narrow` take the autocast dtype."""

    wide: int
    narrow: int

    @property
    def total(self) -> int:
        return self.wide + self.narrow

    def bytes(self, narrow_bytes: int) -> int:
        return self.wide * _LOAD_DTYPE_BYTES + self.narrow * narrow_bytes


def _layer_elements(m: ModelShape, lora: _Lora | None, seq_len: int, device: str) -> _Kept:
    """Elements per token that autograd keeps for one decoder block (read off HF's Llama/GPT-2 code).

    Llama, every weight trainable: 3 per RMSNorm x H (input, normalised, output) x 2 norms,
    q + 2*kv (rotated q/k and v for attention) + heads (log-sum-exp) + q (o_proj input),
    4 x intermediate (gate, up, SiLU(gate), product).  With frozen base weights (LoRA) a frozen
    Linear keeps nothing, so only the norm inputs, attention inputs/output and 3 x intermediate
    stay, plus the input of each targeted projection group and r per adapter.
    GPT-2 (full): 11 x H plus 5 x intermediate (c_fc output, GELU output, ...).
    Attention whose dropout is on runs through the math path on CPU and keeps the
    heads x seq_len probability matrix three times (scores, softmax, dropout).
    """
    h, i = m.hidden_size, m.intermediate_size
    q, kv, heads = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim, m.num_heads
    attn_matrix = 3 * heads * seq_len if (m.attention_dropout > 0 and device == "cpu") else 0
    if m.family == "gpt2":
        if lora is None:
            return _Kept(wide=4 * h, narrow=7 * h + 5 * i + attn_matrix)
        targets = set(lora.targets)
        narrow = 4 * h + 3 * i + attn_matrix
        narrow += h if "c_attn" in targets else 0
        narrow += h + i if "c_proj" in targets else 0
        narrow += h if "c_fc" in targets else 0
        return _Kept(wide=4 * h, narrow=narrow + lora.rank * len(targets & {"c_attn", "c_proj", "c_fc"}))
    if lora is None:
        return _Kept(wide=6 * h, narrow=2 * q + 2 * kv + heads + 4 * i + attn_matrix)
    t = set(lora.targets)
    if "all-linear" in t:
        t |= {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    wide = 2 * h
    wide += h if t & {"q_proj", "k_proj", "v_proj"} else 0
    wide += h if t & {"gate_proj", "up_proj"} else 0
    narrow = 2 * q + 2 * kv + heads + 3 * i + attn_matrix
    narrow += q if "o_proj" in t else 0
    narrow += i if "down_proj" in t else 0
    narrow += lora.rank * len(t & {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    if lora.dropout > 0:  # dropout output plus its mask, per distinct adapter input
        wide += 2 * h * bool(t & {"q_proj", "k_proj", "v_proj"}) + 2 * h * bool(t & {"gate_proj", "up_proj"})
    return _Kept(wide=wide, narrow=narrow)


def _activation_bytes(
    m: ModelShape, lora: _Lora | None, batch: int, seq_len: int, checkpointing: bool, amp: bool, device: str
) -> int:
    """Peak activation bytes for one micro-batch of `batch` x `seq_len` tokens.

    Per token, with E the bytes one block keeps (`_layer_elements`; float32, or the
    narrow part in 16 bits under autocast):
      without checkpointing: layers * E + E   (the extra E is backward scratch)
      with checkpointing:    layers * 4 * H + 2 * E   (each block's float32 input, one block
                                                       recomputed during backward, its scratch)
    plus the loss, 12 * vocab (float32 log-softmax output, its gradient and the logits'
    gradient are alive together in backward; 14 under autocast for the 16-bit logits),
    and 3 * H float32 for the final norm.
    """
    tokens = batch * seq_len
    layer = _layer_elements(m, lora, seq_len, device).bytes(2 if amp else _LOAD_DTYPE_BYTES)
    h = m.hidden_size
    if checkpointing:
        per_token = m.num_layers * h * _LOAD_DTYPE_BYTES + 2 * layer
    else:
        per_token = (m.num_layers + 1) * layer
    per_token += 3 * h * _LOAD_DTYPE_BYTES + (14 if amp else 12) * m.vocab_size
    return tokens * per_token


# ----------------------------------------------------------------------------- device


def _device_kind(device: str) -> str:
    """cpu or cuda, without importing torch: an already-imported torch is asked, else the NVIDIA driver file."""
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda") or device == "all" or "," in device:
        return "cuda"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # a broken CUDA install: fall back to the CPU answer
            return "cpu"
    return "cuda" if os.path.exists("/proc/driver/nvidia/version") else "cpu"


def _free_bytes(kind: str, device: str) -> int | None:
    """Free memory of the device, or None when it cannot be learnt cheaply (torch is never imported here)."""
    if kind == "cuda":
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            if device.startswith("cuda:") or "," in device:  # the tightest of the chosen GPUs
                indices = [int(p.strip().removeprefix("cuda:")) for p in device.split(",")]
            else:
                indices = list(range(torch.cuda.device_count()))
            return min(int(torch.cuda.mem_get_info(d)[0]) for d in indices) if indices else None
        except Exception:
            return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- main entry


def _complete(values: Mapping[str, Any]) -> dict[str, Any]:
    schema = load_schema()
    unknown = sorted(set(values) - set(schema.params))
    if unknown:
        raise EstimateError(f"unknown parameter(s) {', '.join(unknown)}: use the keys of the parameter schema")
    given = {k: v for k, v in values.items() if v is not None or schema.params[k].default is None}
    full = {**schema.defaults(), **given}
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_seq_length", "lora_r"):
        try:
            full[key] = int(full[key])
        except (TypeError, ValueError):
            raise EstimateError(f"{key} must be a whole number, got {full[key]!r}") from None
        if full[key] < 1:
            raise EstimateError(f"{key} must be at least 1, got {full[key]}")
    optims = schema.params["optim"].options or ()
    if full["optim"] not in optims:
        raise EstimateError(f"optim {full['optim']!r} is not one of {', '.join(optims)}")
    return full


def _uses_lora(values: Mapping[str, Any], training_type: str) -> bool:
    return training_type == "sft" and bool(values["use_lora"])


def _compute(
    m: ModelShape, values: dict[str, Any], training_type: str, kind: str, seq_len: int | None
) -> MemoryEstimate:
    base = m.tensors()
    notes: list[str] = []
    lora = _lora_settings(values) if _uses_lora(values, training_type) else None
    if lora is not None:
        adapters, missing = _lora_tensors(base, m, lora)
        if missing:
            notes.append(f"LoRA targets not in this {m.model_type} model (ignored here): {', '.join(missing)}")
        trainable = adapters
        weight_bytes = (sum(t.numel for t in base) + sum(t.numel for t in adapters)) * _LOAD_DTYPE_BYTES
    else:
        trainable = base
        weight_bytes = sum(t.numel for t in base) * _LOAD_DTYPE_BYTES
    trainable_bytes = _LOAD_DTYPE_BYTES
    n_trainable = sum(t.numel for t in trainable)
    amp = bool(values["bf16"]) or (bool(values["fp16"]) and kind == "cuda")
    if values["fp16"] and kind == "cpu" and not values["bf16"]:
        notes.append("fp16 has no effect on CPU: the run uses float32")
    length = seq_len or values["max_seq_length"]
    activations = _activation_bytes(
        m, lora, values["per_device_train_batch_size"], length, bool(values["gradient_checkpointing"]), amp, kind
    )
    if amp:  # autocast keeps a 16-bit copy of each trainable weight for the whole forward/backward
        activations += sum(t.numel for t in trainable if len(t.shape) == 2) * 2
    adam_like = values["optim"] in ("adamw_torch",)
    largest = max((t.numel for t in trainable), default=0)
    scratch = (n_trainable if (adam_like and kind == "cuda") else largest) * trainable_bytes
    return MemoryEstimate(
        total_params=sum(t.numel for t in base),
        trainable_params=n_trainable,
        weight_bytes=weight_bytes,
        gradient_bytes=n_trainable * trainable_bytes,
        optimizer_bytes=_optimizer_bytes(values["optim"], trainable, trainable_bytes),
        activation_bytes=activations,
        step_scratch_bytes=scratch,
        device=kind,
        notes=tuple(notes),
    )


def _fix_steps(values: dict[str, Any], training_type: str) -> list[tuple[str, dict[str, Any]]]:
    """Candidate fixes, cheapest first: compute time, then optimizer precision, throughput, what is trained, data."""
    schema = load_schema()
    steps: list[tuple[str, dict[str, Any]]] = []
    if not values["gradient_checkpointing"]:
        steps.append(
            ("enable gradient checkpointing (about a third slower, same result)", {"gradient_checkpointing": True})
        )
    if values["optim"] == "adamw_torch":
        steps.append(("use the 8-bit optimizer adamw_8bit (needs bitsandbytes)", {"optim": "adamw_8bit"}))
    batch = values["per_device_train_batch_size"]
    effective = batch * values["gradient_accumulation_steps"]
    max_accum = schema.params["gradient_accumulation_steps"].maximum or effective
    while batch > 1:
        batch //= 2
        accum = -(-effective // batch)  # keep the effective batch (rounded up when it does not divide)
        if accum > max_accum:
            break
        same = "same" if batch * accum == effective else "about the same"
        steps.append(
            (f"lower the batch size to {batch} and raise gradient accumulation to {accum} "
             f"({same} effective batch, slower)",
             {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accum})
        )
    if training_type == "sft" and not values["use_lora"]:
        steps.append(("train with LoRA instead of all weights", {"use_lora": True}))
    spec = schema.params["max_seq_length"]
    step = int(spec.step or 1)
    length, lowest = values["max_seq_length"], int(spec.minimum or 1)
    while length // 2 >= lowest:
        length = max(lowest, (length // 2) // step * step)
        steps.append((f"shorten max_seq_length to {length} (longer samples get truncated)", {"max_seq_length": length}))
    return steps


def _cheapest_fixes(
    m: ModelShape, values: dict[str, Any], training_type: str, kind: str, seq_len: int | None, free: int
) -> tuple[Fix, ...]:
    """The first single fix that fits; else a cheapest-first combination with every unneeded
    step dropped again; else every fix (and the estimate still does not fit).

    `Fix.total_bytes` is the estimate with that fix and the ones before it applied.
    """

    def total(changes: list[dict[str, Any]]) -> int:
        merged = dict(values)
        for c in changes:
            merged.update(c)
        return _compute(m, merged, training_type, kind, seq_len).total_bytes

    steps = _fix_steps(values, training_type)
    for description, changes in steps:  # one change alone, cheapest first
        alone = total([changes])
        if alone <= free:
            return (Fix(description, changes, alone),)
    chosen: list[tuple[str, dict[str, Any]]] = []
    for description, changes in steps:  # cumulative; a later batch/length step supersedes an earlier one
        chosen = [c for c in chosen if not set(c[1]) <= set(changes)]
        chosen.append((description, changes))
        if total([c for _, c in chosen]) <= free:
            for step in list(chosen[:-1]):  # drop what the later, stronger steps made unnecessary
                rest = [c for c in chosen if c is not step]
                if total([c for _, c in rest]) <= free:
                    chosen = rest
            break
    return tuple(
        Fix(description, changes, total([c for _, c in chosen[: i + 1]]))
        for i, (description, changes) in enumerate(chosen)
    )


def estimate_memory(
    model_path: str | os.PathLike[str],
    values: Mapping[str, Any],
    training_type: str,
    device_free_bytes: int | None = None,
    *,
    device: str = "auto",
    seq_len: int | None = None,
) -> MemoryEstimate:
    """Estimate peak training memory for `values` (schema keys; missing ones take their defaults).

    `device` is the task's device ("auto", "cpu", "cuda:N", "all"); with "all" the estimate is
    per GPU (data parallel copies the model to each).  `seq_len` replaces max_seq_length as the
    padded batch length when the data is known to be shorter (dynamic padding pads to the
    longest sample in a batch).  `device_free_bytes` defaults to what the device reports
    (psutil / /proc/meminfo for the CPU; torch.cuda.mem_get_info only if torch is already imported).
    """
    training_types = load_schema().basic_param("training_type").options or ()
    if training_type not in training_types:
        raise EstimateError(f"training_type {training_type!r} is not one of {', '.join(training_types)}")
    if seq_len is not None and seq_len < 1:
        raise EstimateError(f"seq_len must be at least 1, got {seq_len}")
    full = _complete(values)
    shape = model_shape(model_path)
    device = str(device or "auto").strip().lower()
    kind = _device_kind(device)
    est = _compute(shape, full, training_type, kind, seq_len)
    free = device_free_bytes if device_free_bytes is not None else _free_bytes(kind, device)
    est = replace(est, free_bytes=free)
    if free is None or est.total_bytes <= free:
        return est
    fixes = _cheapest_fixes(shape, full, training_type, kind, seq_len, free)
    head = f"Estimated peak {format_bytes(est.total_bytes)} is more than the {format_bytes(free)} free on {kind}."
    if fixes and fixes[-1].total_bytes <= free:
        what = "; and ".join(f.description for f in fixes)
        warning = f"{head} Cheapest fix: {what} (estimate {format_bytes(fixes[-1].total_bytes)})."
    else:
        warning = (
            f"{head} Even with every fix ({format_bytes(fixes[-1].total_bytes) if fixes else 'no fix applies'}) "
            "it does not fit: use a smaller model or a device with more memory."
        )
    return replace(est, fixes=fixes, warning=warning)
