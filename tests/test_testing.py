"""The offline test helpers: tiny model, tokenizer with chat template, learnable data sets."""

from __future__ import annotations

import json
import re
import time

import pytest

from modx_widgets.testing import (
    IM_END,
    generate_conversations,
    make_pretrain_data,
    make_sft_data,
    make_tiny_model,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tok(tiny):
    return transformers.AutoTokenizer.from_pretrained(tiny)


def test_tiny_llama_loads_with_auto_classes_and_runs_forward(tiny, tok):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    assert (tiny / "model.safetensors").is_file() and (tiny / "generation_config.json").is_file()
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= n_params <= 1_000_000
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "embed_tokens",
        "lm_head",
    } <= names
    ids = tok("Count from 3 to 9.", return_tensors="pt")["input_ids"]
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_gpt2_variant_has_gpt2_module_names_and_no_llama_ones(tmp_path):
    path = make_tiny_model(tmp_path / "g", arch="gpt2")
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert "c_attn" in names and "q_proj" not in names
    assert model.config.model_type == "gpt2"


def test_repeated_builds_are_cached_copies_with_identical_weights(tiny, tmp_path):
    from safetensors.torch import load_file

    start = time.perf_counter()
    again = make_tiny_model(tmp_path / "again")
    assert time.perf_counter() - start < 2.0
    assert again != tiny
    a, b = load_file(tiny / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = load_file(make_tiny_model(tmp_path / "seed1", seed=1) / "model.safetensors")
    assert not torch.equal(a["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_bad_arguments_are_refused_before_building(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        make_tiny_model(tmp_path / "x", arch="mamba")
    with pytest.raises(ValueError, match="vocab_size"):
        make_tiny_model(tmp_path / "x", vocab_size=10)
    assert not (tmp_path / "x").exists()


def test_chat_template_renders_chatml_and_generation_prompt(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Spell the word lemon."}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith(tok.bos_token + "<|im_start|>system\nBe brief.<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nSpell the word lemon.<|im_end|>\n<|im_start|>assistant\n")
    assert not tok.apply_chat_template(msgs, tokenize=False).endswith("assistant\n")


def test_assistant_mask_covers_exactly_the_assistant_contents_and_end_token(tok):
    for record in generate_conversations(20, seed=5):
        out = tok.apply_chat_template(record["messages"], return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = out["input_ids"], out["assistant_masks"]
        # Contiguous masked runs, decoded, must be the assistant turns in order.
        runs, cur = [], []
        for i, m in zip(ids, mask):
            if m:
                cur.append(i)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        expected = [m["content"] + IM_END for m in record["messages"] if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == expected


def test_special_chat_tokens_are_single_tokens(tok):
    for t in ("<|im_start|>", "<|im_end|>", tok.bos_token, tok.eos_token, tok.pad_token):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3


def test_sft_data_is_valid_multi_turn_and_varies_in_length(tmp_path, tok):
    path = make_sft_data(tmp_path / "d" / "sft.jsonl", n=300, seed=3)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 300
    turns, answer_lengths, has_system = set(), [], 0
    for r in records:
        msgs = r["messages"]
        has_system += msgs[0]["role"] == "system"
        body = msgs[1:] if msgs[0]["role"] == "system" else msgs
        assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2)
        turns.add(len(body) // 2)
        answer_lengths += [len(tok(m["content"])["input_ids"]) for m in body if m["role"] == "assistant"]
    assert turns == {1, 2, 3}
    assert 0 < has_system < 300
    assert min(answer_lengths) <= 5 and max(answer_lengths) >= 150


def test_sft_answers_are_functions_of_the_question(tmp_path):
    """The model can learn the data only if answers follow from questions; check the arithmetic ones."""
    seen = 0
    for r in generate_conversations(300, seed=9):
        msgs = [m for m in r["messages"] if m["role"] != "system"]
        for q, a in zip(msgs[::2], msgs[1::2]):
            m = re.fullmatch(r"What is (\d+) \+ (\d+)\?", q["content"])
            if m:
                seen += 1
                assert a["content"] == f"{m[1]} + {m[2]} = {int(m[1]) + int(m[2])}"
    assert seen > 10


def test_sft_data_respects_turn_bounds_and_seed(tmp_path):
    a = make_sft_data(tmp_path / "a.jsonl", n=50, seed=1, min_turns=2, max_turns=2).read_text()
    b = make_sft_data(tmp_path / "b.jsonl", n=50, seed=1, min_turns=2, max_turns=2).read_text()
    c = make_sft_data(tmp_path / "c.jsonl", n=50, seed=2, min_turns=2, max_turns=2).read_text()
    assert a == b and a != c
    for line in a.splitlines():
        roles = [m["role"] for m in json.loads(line)["messages"] if m["role"] != "system"]
        assert roles.count("assistant") == 2
    with pytest.raises(ValueError, match="min_turns"):
        make_sft_data(tmp_path / "d.jsonl", min_turns=3, max_turns=1)


def test_pretrain_data_as_text_and_jsonl(tmp_path):
    txt = make_pretrain_data(tmp_path / "p.txt", n=20, seed=4).read_text(encoding="utf-8").splitlines()
    jl = make_pretrain_data(tmp_path / "p.jsonl", n=20, seed=4, fmt="jsonl").read_text(encoding="utf-8").splitlines()
    assert len(txt) == 20 and all(line.strip() for line in txt)
    assert [json.loads(line)["text"] for line in jl] == txt
    with pytest.raises(ValueError, match="fmt"):
        make_pretrain_data(tmp_path / "p.csv", fmt="csv")


def test_tiny_model_learns_the_sft_data_within_twenty_steps(tiny, tok):
    """Twenty full-weight AdamW steps on assistant tokens clearly lower the loss on held-out conversations."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    torch.manual_seed(0)

    def encode(records):
        enc = tok.apply_chat_template(
            [r["messages"] for r in records],
            return_dict=True,
            return_assistant_tokens_mask=True,
            padding=True,
            return_tensors="pt",
        )
        labels = enc["input_ids"].masked_fill(enc["assistant_masks"] == 0, -100)
        return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)

    held_out = encode(list(generate_conversations(16, seed=99)))

    def held_out_loss():
        with torch.no_grad():
            return model(**held_out).loss.item()

    before = held_out_loss()
    train = list(generate_conversations(80, seed=0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(20):
        model(**encode(train[step * 4 : step * 4 + 4])).loss.backward()
        opt.step()
        opt.zero_grad()
    assert held_out_loss() < 0.85 * before


@pytest.mark.slow
def test_small_model_is_a_bigger_llama_with_the_same_tokenizer(tmp_path, tiny):
    from modx_widgets.testing import make_small_model

    path = make_small_model(tmp_path / "small")
    config = transformers.AutoConfig.from_pretrained(path)
    assert config.model_type == "llama"
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert 10_000_000 <= sum(p.numel() for p in model.parameters()) <= 30_000_000
    assert (path / "tokenizer.json").read_text() == (tiny / "tokenizer.json").read_text()
