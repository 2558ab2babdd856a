"""Offline test helpers: a tiny causal LM with a real tokenizer, and data sets it can learn.

Nothing here touches the network. The tokenizer is a byte-level BPE trained on text from the same
generator that writes the SFT and pre-training data sets, so a randomly initialised tiny model
sees familiar tokens and its loss falls within a few optimizer steps.

Builds are cached in-process by their arguments: the first call builds into a private temporary
directory, later calls copy it, so a test suite can ask for many fresh model directories cheaply.
Heavy libraries (torch, transformers, tokenizers) are imported inside the functions.
"""

from __future__ import annotations

import atexit
import json
import random
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "make_tiny_model",
    "make_small_model",
    "make_sft_data",
    "make_pretrain_data",
    "generate_conversations",
    "generate_documents",
]

# --------------------------------------------------------------------------------------------
# Special tokens and chat template
# --------------------------------------------------------------------------------------------

PAD, BOS, EOS, IM_START, IM_END = "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, IM_START, IM_END)

# ChatML-like. Assistant content plus its closing <|im_end|> sits inside {% generation %} so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly what the model
# must learn to produce; the role header and the trailing newline stay unlabelled.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# --------------------------------------------------------------------------------------------
# Deterministic, learnable text generators
# --------------------------------------------------------------------------------------------

_WORDS = (
    "apple river stone cloud green table window music paper light house dream water tiger "
    "garden orange silver planet forest yellow bridge candle winter summer rocket pencil "
    "mountain ocean island dragon castle market violin jacket basket rabbit monkey lemon "
    "mirror ladder pillow rocket engine signal button number letter circle square anchor "
    "bottle carpet doctor farmer hammer kitten meadow needle parrot saddle tunnel valley "
    "wagon zebra bread chair clock field horse queen sugar train voice wheel"
).split()
_NAMES = "Ada Ben Cleo Dan Eva Finn Gus Hana Ivo Jun Kai Lena Milo Nora Omar Pia".split()
_ADJ = "quick slow bright dark small large quiet loud warm cold happy tired".split()
_VERBS = "finds carries paints opens follows builds watches cleans moves counts".split()
_SYSTEMS = (
    "You are a helpful assistant.",
    "You are a careful assistant. Answer exactly and briefly.",
    "Answer every request precisely.",
)


def _size(rng: random.Random, median: float, cap: int) -> int:
    """A long-tailed item count: most answers are short, a few are very long (like real SFT)."""
    return max(1, min(cap, int(rng.lognormvariate(0.0, 0.9) * median)))


def _words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(_WORDS) for _ in range(n)]


def _exchange(rng: random.Random) -> tuple[str, str]:
    """One question and its answer; the answer is a pure function of the question."""
    kind = rng.randrange(8)
    if kind == 0:
        w = _words(rng, _size(rng, 8, 120))
        return f"Reverse the words: {' '.join(w)}", " ".join(reversed(w))
    if kind == 1:
        w = _words(rng, _size(rng, 8, 120))
        return f"Sort these words: {' '.join(w)}", " ".join(sorted(w))
    if kind == 2:
        w = _words(rng, _size(rng, 8, 120))
        return f"How many words are in: {' '.join(w)}", f"There are {len(w)} words."
    if kind == 3:
        a, b = rng.randrange(1000), rng.randrange(1000)
        return f"What is {a} + {b}?", f"{a} + {b} = {a + b}"
    if kind == 4:
        start = rng.randrange(100)
        stop = start + _size(rng, 20, 200)
        return f"Count from {start} to {stop}.", " ".join(str(i) for i in range(start, stop + 1))
    if kind == 5:
        word, times = rng.choice(_WORDS), _size(rng, 8, 150)
        return f"Repeat {word} {times} times.", " ".join([word] * times)
    if kind == 6:
        word = rng.choice(_WORDS)
        return f"Spell the word {word}.", "-".join(word)
    w = _words(rng, _size(rng, 8, 120))
    return f"Write in capitals: {' '.join(w)}", " ".join(w).upper()


def generate_conversations(
    n: int, seed: int = 0, *, min_turns: int = 1, max_turns: int = 3
) -> Iterator[dict[str, Any]]:
    """Yield `n` SFT records `{"messages": [...]}` with 1..3 turns and an optional system message."""
    if not 1 <= min_turns <= max_turns:
        raise ValueError(f"need 1 <= min_turns <= max_turns, got {min_turns}..{max_turns}")
    rng = random.Random(seed)
    span = range(min_turns, max_turns + 1)
    weights = [1.0 / (i - min_turns + 1) ** 1.5 for i in span]  # most conversations are short
    for _ in range(n):
        messages: list[dict[str, str]] = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": rng.choice(_SYSTEMS)})
        for _ in range(rng.choices(span, weights)[0]):
            question, answer = _exchange(rng)
            messages.append({"role": "user", "content": question})
            messages.append({"role": "assistant", "content": answer})
        yield {"messages": messages}


def generate_documents(n: int, seed: int = 0) -> Iterator[str]:
    """Yield `n` plain-text documents of a few simple, repetitive sentences."""
    rng = random.Random(seed)
    for _ in range(n):
        sentences = []
        for _ in range(_size(rng, 4, 40)):
            if rng.random() < 0.2:
                start = rng.randrange(50)
                sentences.append(
                    "Counting: " + " ".join(str(i) for i in range(start, start + rng.randrange(3, 12))) + "."
                )
            else:
                sentences.append(
                    f"{rng.choice(_NAMES)} {rng.choice(_VERBS)} the {rng.choice(_ADJ)} {rng.choice(_WORDS)}."
                )
        yield " ".join(sentences)


def _render_chatml(record: dict[str, Any]) -> str:
    """Plain-Python rendering of CHAT_TEMPLATE (tokenizer training text; no jinja needed)."""
    parts = [BOS]
    for m in record["messages"]:
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Builders (cached per process)
# --------------------------------------------------------------------------------------------

_CACHE_LOCK = threading.RLock()  # re-entrant: a model build asks for the tokenizer build
_CACHE: dict[tuple, Path] = {}
_CACHE_ROOT: Path | None = None


def _cache_root() -> Path:
    global _CACHE_ROOT
    if _CACHE_ROOT is None:
        _CACHE_ROOT = Path(tempfile.mkdtemp(prefix="modx_testing_"))
        atexit.register(shutil.rmtree, _CACHE_ROOT, True)
    return _CACHE_ROOT


def _cached_build(key: tuple, build) -> Path:
    """Return a private directory for `key`, building it once with `build(dir)`."""
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit.is_dir():
            return hit
        work = Path(tempfile.mkdtemp(prefix="build_", dir=_cache_root()))
        target = work / "out"
        try:
            build(target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        _CACHE[key] = target
        return target


def _copy_out(src: Path, path: str | Path) -> Path:
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} exists and is not a directory")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return dest


def _build_tokenizer(target: Path, vocab_size: int) -> None:
    from .run.thread import settle_imports

    settle_imports()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # A fixed corpus seed: every tiny model of a given vocab size shares one tokenizer, and the
    # test data (seed 0 by default) overlaps what the tokenizer saw.
    corpus = [_render_chatml(r) for r in generate_conversations(1500, seed=12345)]
    corpus += list(generate_documents(300, seed=12345))
    core.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=2048,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(target)


def _tokenizer_dir(vocab_size: int) -> Path:
    if not 300 <= vocab_size <= 32000:
        raise ValueError(f"vocab_size must be between 300 and 32000 (byte alphabet + merges), got {vocab_size}")
    return _cached_build(("tokenizer", vocab_size), lambda d: _build_tokenizer(d, vocab_size))


def _build_model(target: Path, arch: str, vocab_size: int, seed: int, sizes: dict[str, int]) -> None:
    from .run.thread import settle_imports

    settle_imports()
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    shutil.copytree(_tokenizer_dir(vocab_size), target)
    tok = AutoTokenizer.from_pretrained(target)
    ids = dict(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vocab = len(tok)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=sizes["hidden"],
            intermediate_size=sizes["intermediate"],
            num_hidden_layers=sizes["layers"],
            num_attention_heads=sizes["heads"],
            num_key_value_heads=sizes["kv_heads"],
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            **ids,
        )
        model_cls = LlamaForCausalLM
    elif arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(
            vocab_size=vocab,
            n_embd=sizes["hidden"],
            n_inner=sizes["intermediate"],
            n_layer=sizes["layers"],
            n_head=sizes["heads"],
            n_positions=2048,
            **ids,
        )
        model_cls = GPT2LMHeadModel
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids(IM_END)],
        pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(target, safe_serialization=True)


_TINY = dict(hidden=64, intermediate=256, layers=2, heads=4, kv_heads=2)
_SMALL = dict(hidden=512, intermediate=1376, layers=6, heads=8, kv_heads=4)


def make_tiny_model(path: str | Path, arch: str = "llama", *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a tiny random-init causal LM (~250k parameters) with a trained tokenizer to `path`.

    `arch="llama"` has the usual Llama module names (q_proj ... down_proj); `arch="gpt2"` has
    GPT-2's (c_attn, c_proj, c_fc) so tests can target modules a model lacks.
    """
    if arch not in ("llama", "gpt2"):
        raise ValueError(f"arch must be 'llama' or 'gpt2', got {arch!r}")
    _tokenizer_dir(vocab_size)  # validates vocab_size before any model work
    key = ("model", arch, vocab_size, seed, tuple(sorted(_TINY.items())))
    return _copy_out(_cached_build(key, lambda d: _build_model(d, arch, vocab_size, seed, _TINY)), path)


def make_small_model(path: str | Path, *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Write a "small" Llama (~19M parameters, same tokenizer) for benchmarks, not unit tests."""
    key = ("model", "llama", vocab_size, seed, tuple(sorted(_SMALL.items())))
    return _copy_out(_cached_build(key, lambda d: _build_model(d, "llama", vocab_size, seed, _SMALL)), path)


# --------------------------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------------------------


def _prepare_file(path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def make_sft_data(path: str | Path, n: int = 64, seed: int = 0, *, min_turns: int = 1, max_turns: int = 3) -> Path:
    """Write `n` SFT conversations as JSONL (`{"messages": [...]}` per line) to `path`."""
    p = _prepare_file(path)
    with p.open("w", encoding="utf-8") as f:
        for record in generate_conversations(n, seed, min_turns=min_turns, max_turns=max_turns):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return p


def make_pretrain_data(path: str | Path, n: int = 64, seed: int = 0, *, fmt: str = "txt") -> Path:
    """Write `n` pre-training documents: one per line as plain text, or JSONL with a "text" field."""
    if fmt not in ("txt", "jsonl"):
        raise ValueError(f"fmt must be 'txt' or 'jsonl', got {fmt!r}")
    p = _prepare_file(path)
    with p.open("w", encoding="utf-8") as f:
        for doc in generate_documents(n, seed):
            f.write((json.dumps({"text": doc}, ensure_ascii=False) if fmt == "jsonl" else doc) + "\n")
    return p
