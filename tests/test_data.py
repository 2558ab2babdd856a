"""The data room: line checks, chat-template tokenization with assistant-only labels, sampling,
splitting, packing, collators and the tokenized-data cache."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from modx_widgets.data import (
    IGNORE_INDEX,
    DataError,
    check_file,
    collator,
    flattening_collator,
    load_datasets,
    tokenize_conversations,
)
from modx_widgets.testing import IM_END, generate_conversations, make_pretrain_data, make_sft_data, make_tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tok(model_dir):
    return transformers.AutoTokenizer.from_pretrained(model_dir)


def write_lines(path: Path, lines: list, *, newline: str = "\n") -> Path:
    path.write_text(newline.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + newline, encoding="utf-8")
    return path


def unique_conversations(n: int) -> list[dict]:
    """Conversations that are all different, so split disjointness can be checked by content."""
    return [
        {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}, {"role": "assistant", "content": str(2 * i)}]}
        for i in range(n)
    ]


def labelled_runs(ids, labels) -> list[list[int]]:
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == i  # a label is always the token itself (the model shifts)
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


# ------------------------------------------------------------------------------------------
# check_file: line problems
# ------------------------------------------------------------------------------------------

BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got an array"),
    ('"just a string"', "expected a JSON object, got a string"),
    ({"conversation": []}, 'no "messages"'),
    ({"messages": []}, '"messages" is empty'),
    ({"messages": "hello"}, '"messages" must be a list'),
    ({"messages": ["hello"]}, "message 1 is a string, not an object"),
    ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "role missing"),
    (
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        'role "bot" is not one of',
    ),
    (
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},
        '"content" must be a string',
    ),
    (
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]},
        "message 2 (assistant): empty content",
    ),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, 'no "content"'),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "y"},
            ]
        },
        "message 2: a system message may only be the first",
    ),
]


@pytest.mark.parametrize("bad,expected", BAD_LINES, ids=[e for _, e in BAD_LINES])
def test_each_bad_sft_line_is_reported_with_its_line_number(tmp_path, bad, expected):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    report = check_file(path, "sft")
    assert (report.usable, report.total_lines, report.rejected_count) == (3, 4, 1)
    [problem] = report.rejected
    assert problem.line == 3
    assert expected in problem.message


def test_bom_crlf_and_blank_lines_are_accepted_and_line_numbers_stay_true(tmp_path):
    body = "\r\n".join([json.dumps(GOOD), "", json.dumps(GOOD), "   ", "{bad", json.dumps(GOOD)]) + "\r\n"
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    report = check_file(path, "sft")
    assert (report.usable, report.total_lines, report.blank_lines) == (3, 4, 2)
    assert [p.line for p in report.rejected] == [5]


def test_problem_list_is_capped_but_every_bad_line_is_counted(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD] + ["{bad"] * 120)
    report = check_file(path, "sft")
    assert report.rejected_count == 120 and len(report.rejected) == 50
    assert report.usable == 1 and "1 of 121 lines usable" in report.summary()


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"\n\n  \n", "only blank lines"),
        (json.dumps(GOOD).encode() + b"\n\x00\x01\x02binary\n", r"binary \(NUL byte at byte offset \d+, line 2\)"),
        (json.dumps(GOOD).encode() + b"\n" + '{"text": "caf\xe9"}\n'.encode("latin-1"), "not valid UTF-8"),
        (json.dumps([GOOD, GOOD], indent=2).encode(), "one object per line"),
        (json.dumps([GOOD, GOOD]).encode(), "one object per line"),
        (b"{bad\n[1]\n", "no usable lines"),
    ],
    ids=["empty", "blank", "binary", "latin1", "pretty-array", "one-line-array", "nothing-usable"],
)
def test_unreadable_files_raise_a_clear_data_error(tmp_path, content, match):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        check_file(path, "sft")


def test_non_utf8_error_gives_the_exact_byte_offset(tmp_path):
    first = json.dumps(GOOD).encode() + b"\r\n"
    second = b'{"messages": "ab\xff"}\n'
    path = tmp_path / "d.jsonl"
    path.write_bytes(first + second)
    offset = len(first) + second.index(b"\xff")
    with pytest.raises(DataError, match=rf"byte 0xff at byte offset {offset} \(line 2\)"):
        check_file(path, "sft")


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(DataError, match="not found"):
        check_file(tmp_path / "nope.jsonl", "sft")
    with pytest.raises(DataError, match="is a directory"):
        check_file(tmp_path, "sft")
    with pytest.raises(DataError, match="training_type"):
        check_file(write_lines(tmp_path / "d.jsonl", [GOOD]), "dpo")


def test_nothing_usable_error_carries_the_line_report(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["{bad", {"messages": []}])
    with pytest.raises(DataError) as info:
        check_file(path, "sft")
    assert [p.line for p in info.value.report.rejected] == [1, 2]


def test_pretrain_formats_by_extension_and_by_sniffing(tmp_path):
    txt = make_pretrain_data(tmp_path / "a.txt", n=7)
    assert (check_file(txt, "pretrain").format, check_file(txt, "pretrain").usable) == ("text", 7)
    jl = make_pretrain_data(tmp_path / "a.jsonl", n=7, fmt="jsonl")
    assert check_file(jl, "pretrain").format == "jsonl"
    sniffed = tmp_path / "b.data"
    sniffed.write_text(jl.read_text(encoding="utf-8"), encoding="utf-8")
    assert check_file(sniffed, "pretrain").format == "jsonl"
    # A text file whose first line merely looks like JSON without "text" stays plain text.
    plain = write_lines(tmp_path / "c.txt", ['{"a": 1} is a line of prose', "second doc"])
    assert check_file(plain, "pretrain").format == "text"


def test_pretrain_jsonl_problems_are_reported_per_line(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [{"text": "ok"}, {"txt": "x"}, {"text": ""}, {"text": 3}, "nope"])
    report = check_file(path, "pretrain")
    assert [(p.line, p.message) for p in report.rejected] == [
        (2, 'no "text" field'),
        (3, 'empty "text"'),
        (4, '"text" must be a string, got a number'),
        (5, "not valid JSON (Expecting value at column 1)"),
    ]


def test_checking_a_file_imports_no_ml_library(tmp_path):
    path = make_sft_data(tmp_path / "d.jsonl", n=5)
    code = (
        "import sys; from modx_widgets.data import check_file; "
        f"r = check_file({str(path)!r}, 'sft'); assert r.usable == 5; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------
# SFT tokenization
# ------------------------------------------------------------------------------------------


def test_assistant_only_labels_token_by_token(tmp_path, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=40, seed=2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    data = load_datasets({"train_file": str(path), "max_seq_length": 4096, "seed": 1}, "sft", tok)
    assert len(data.train) == 40
    by_ids = {tuple(tok.apply_chat_template(r["messages"], return_dict=False)): r for r in records}
    for row in data.train:
        record = by_ids[tuple(row["input_ids"])]
        runs = labelled_runs(row["input_ids"], row["labels"])
        expected = [m["content"] + IM_END for m in record["messages"] if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == expected
        reference = tok.apply_chat_template(record["messages"], return_dict=True, return_assistant_tokens_mask=True)
        assert [lab != IGNORE_INDEX for lab in row["labels"]] == [bool(m) for m in reference["assistant_masks"]]
        assert row["attention_mask"] == [1] * len(row["input_ids"])


def test_template_without_generation_tags_falls_back_to_prefix_diffing(tmp_path, model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    records = list(generate_conversations(30, seed=4))
    out = tokenize_conversations(records, tok, 4096)
    for i, record in enumerate(records):
        ids = out.input_ids[out.offsets[i] : out.offsets[i + 1]].tolist()
        labels = out.labels[out.offsets[i] : out.offsets[i + 1]].tolist()
        assert ids == tok.apply_chat_template(record["messages"], return_dict=False)
        expected = [m["content"] + IM_END + "\n" for m in record["messages"] if m["role"] == "assistant"]
        assert [tok.decode(r) for r in labelled_runs(ids, labels)] == expected


def test_tokenizer_without_chat_template_is_refused_with_the_fix(tmp_path, model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = None
    path = make_sft_data(tmp_path / "d.jsonl", n=3)
    with pytest.raises(DataError, match="no chat template.*chat_template.*tokenizer_path"):
        load_datasets({"train_file": str(path)}, "sft", tok)


def test_truncation_cuts_at_max_seq_length_and_drops_examples_with_nothing_to_learn(tmp_path, tok):
    long_prompt = {"messages": [{"role": "user", "content": "apple " * 200}, {"role": "assistant", "content": "ok"}]}
    long_answer = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "river " * 200}]}
    path = write_lines(tmp_path / "d.jsonl", [GOOD, long_prompt, long_answer])
    data = load_datasets({"train_file": str(path), "max_seq_length": 32}, "sft", tok)
    assert (data.stats.truncated, data.stats.dropped, len(data.train)) == (2, 1, 2)
    lengths = sorted(len(r["input_ids"]) for r in data.train)
    assert lengths[-1] == 32 and data.stats.lengths and max(data.stats.lengths) == 32
    cut = next(r for r in data.train if len(r["input_ids"]) == 32)
    assert cut["labels"][-1] != IGNORE_INDEX  # the surviving part of the long answer is still learned


def test_every_conversation_truncated_away_is_a_data_error(tmp_path, tok):
    long_prompt = {"messages": [{"role": "user", "content": "apple " * 100}, {"role": "assistant", "content": "ok"}]}
    path = write_lines(tmp_path / "d.jsonl", [long_prompt])
    with pytest.raises(DataError, match="raise max_seq_length"):
        load_datasets({"train_file": str(path), "max_seq_length": 16}, "sft", tok)


def test_tokenize_conversations_accepts_bare_message_lists(tok):
    records = list(generate_conversations(5, seed=8))
    a = tokenize_conversations(records, tok, 256)
    b = tokenize_conversations([r["messages"] for r in records], tok, 256)
    assert a.input_ids.tolist() == b.input_ids.tolist() and a.labels.tolist() == b.labels.tolist()
    assert a.lengths.tolist() == [len(tok.apply_chat_template(r["messages"], return_dict=False)[:256]) for r in records]


def test_stats_match_the_returned_datasets(tmp_path, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=50, seed=6)
    data = load_datasets({"train_file": str(path), "max_seq_length": 64, "eval_split_ratio": 0.2}, "sft", tok)
    s = data.stats
    assert s.examples == len(data.train) and s.eval_examples == len(data.eval)
    assert s.lengths == [len(r["input_ids"]) for r in data.train]
    assert s.tokens == sum(sum(r["attention_mask"]) for r in data.train)
    assert s.supervised_tokens == sum(sum(lab != IGNORE_INDEX for lab in r["labels"]) for r in data.train)
    assert s.eval_tokens == sum(len(r["input_ids"]) for r in data.eval)


# ------------------------------------------------------------------------------------------
# Sampling, splitting, order
# ------------------------------------------------------------------------------------------


def rows(dataset) -> list[tuple[int, ...]]:
    return [tuple(r["input_ids"]) for r in dataset]


def test_eval_split_is_seeded_disjoint_and_sized_by_the_ratio(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", unique_conversations(40))
    base = {"train_file": str(path), "eval_split_ratio": 0.25, "seed": 3}
    a = load_datasets(base, "sft", tok)
    b = load_datasets(base, "sft", tok)
    c = load_datasets({**base, "seed": 4}, "sft", tok)
    assert (len(a.train), len(a.eval)) == (30, 10)
    assert not set(rows(a.train)) & set(rows(a.eval))
    assert len(set(rows(a.train)) | set(rows(a.eval))) == 40
    assert rows(a.train) == rows(b.train) and rows(a.eval) == rows(b.eval)
    assert set(rows(a.eval)) != set(rows(c.eval))


def test_split_that_leaves_no_training_data_is_refused(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", unique_conversations(1))
    with pytest.raises(DataError, match="eval_split_ratio"):
        load_datasets({"train_file": str(path), "eval_split_ratio": 0.5}, "sft", tok)


def test_max_samples_takes_a_seeded_random_subset(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", unique_conversations(50))
    everything = set(rows(load_datasets({"train_file": str(path), "max_samples": 0}, "sft", tok).train))
    assert len(everything) == 50
    a = load_datasets({"train_file": str(path), "max_samples": 10, "seed": 1}, "sft", tok)
    b = load_datasets({"train_file": str(path), "max_samples": 10, "seed": 2}, "sft", tok)
    assert len(a.train) == 10 and set(rows(a.train)) <= everything
    assert set(rows(a.train)) != set(rows(b.train))
    first_ten = set(rows(tokenize_conversations(unique_conversations(10), tok, 512).to_dataset()))
    assert set(rows(a.train)) != first_ten  # not simply the head of the file


def test_max_samples_bounds_train_plus_split_eval_but_not_an_eval_file(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", unique_conversations(50))
    split = load_datasets({"train_file": str(path), "max_samples": 20, "eval_split_ratio": 0.25}, "sft", tok)
    assert (len(split.train), len(split.eval)) == (15, 5)
    eval_path = write_lines(tmp_path / "e.jsonl", unique_conversations(30))
    with_file = load_datasets(
        {"train_file": str(path), "eval_file": str(eval_path), "max_samples": 20, "eval_split_ratio": 0.5}, "sft", tok
    )
    assert (len(with_file.train), len(with_file.eval)) == (20, 30)  # eval_file wins over the ratio
    assert with_file.eval_report.usable == 30


def test_reshuffle_decides_whether_the_engine_keeps_the_seeded_order(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", unique_conversations(30))
    fixed = load_datasets({"train_file": str(path), "reshuffle": False, "seed": 5}, "sft", tok)
    again = load_datasets({"train_file": str(path), "reshuffle": True, "seed": 5}, "sft", tok)
    assert fixed.sequential is True and again.sequential is False
    file_order = rows(tokenize_conversations(unique_conversations(30), tok, 512).to_dataset())
    assert rows(fixed.train) != file_order and sorted(rows(fixed.train)) == sorted(file_order)


def test_missing_train_file_setting_is_refused(tok):
    with pytest.raises(DataError, match="train_file is required"):
        load_datasets({}, "sft", tok)


# ------------------------------------------------------------------------------------------
# Pre-training
# ------------------------------------------------------------------------------------------


def test_pretrain_blocks_are_full_and_hold_every_document_once(tmp_path, tok):
    path = make_pretrain_data(tmp_path / "p.txt", n=40, seed=1)
    docs = [tuple(tok(line, add_special_tokens=False)["input_ids"]) for line in path.read_text().splitlines()]
    data = load_datasets({"train_file": str(path), "max_seq_length": 64}, "pretrain", tok)
    lengths = [len(r["input_ids"]) for r in data.train]
    assert all(n == 64 for n in lengths[:-1]) and lengths[-1] <= 64
    assert all(r["labels"] == r["input_ids"] for r in data.train)
    flat = [t for r in data.train for t in r["input_ids"]]
    pieces, cur = [], []
    for t in flat:
        if t == tok.eos_token_id:
            pieces.append(tuple(cur))
            cur = []
        else:
            cur.append(t)
    assert Counter(pieces) <= Counter(docs)  # each packed piece is a whole document
    assert len(pieces) >= len(docs) - 1  # at most the last, partly cut document is incomplete
    assert data.stats.documents == 40 and data.stats.examples == len(lengths)


def test_pretrain_keeps_a_short_corpus_as_one_block_but_drops_a_tiny_tail(tmp_path, tok):
    short = write_lines(tmp_path / "s.txt", ["Ada finds the quick apple."])
    one = load_datasets({"train_file": str(short), "max_seq_length": 512}, "pretrain", tok)
    n_tokens = len(tok("Ada finds the quick apple.", add_special_tokens=False)["input_ids"]) + 1
    assert [len(r["input_ids"]) for r in one.train] == [n_tokens]
    # n_tokens + 1 tokens in blocks of n_tokens: the 1-token tail is too short to keep.
    two = write_lines(tmp_path / "t.txt", ["Ada finds the quick apple.", "Ada"])
    tail = len(tok("Ada", add_special_tokens=False)["input_ids"]) + 1
    data = load_datasets({"train_file": str(two), "max_seq_length": n_tokens + tail - 1, "seed": 0}, "pretrain", tok)
    assert [len(r["input_ids"]) for r in data.train] == [n_tokens + tail - 1]


def test_pretrain_eval_split_shares_no_document(tmp_path, tok):
    path = make_pretrain_data(tmp_path / "p.jsonl", n=30, seed=2, fmt="jsonl")
    data = load_datasets({"train_file": str(path), "max_seq_length": 32, "eval_split_ratio": 0.2}, "pretrain", tok)
    assert data.eval is not None and data.stats.documents == 24
    assert data.report.format == "jsonl"

    def documents(dataset) -> set[tuple[int, ...]]:
        flat = [t for r in dataset for t in r["input_ids"]]
        cut = [i for i, t in enumerate(flat) if t == tok.eos_token_id]
        return {tuple(flat[a + 1 : b]) for a, b in zip(cut, cut[1:])}  # whole documents only

    train_docs, eval_docs = documents(data.train), documents(data.eval)
    assert len(train_docs) > 10 and len(eval_docs) >= 3
    assert not train_docs & eval_docs


# ------------------------------------------------------------------------------------------
# Collators
# ------------------------------------------------------------------------------------------


def test_collator_pads_to_the_longest_in_the_batch(tok):
    feats = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    batch = collator(tok)(feats)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tok.pad_token_id, tok.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["input_ids"].dtype == torch.long
    assert collator(tok, pad_to_multiple_of=8)(feats)["input_ids"].shape == (2, 8)


def test_collator_batches_from_load_datasets_never_pad_to_max_seq_length(tmp_path, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=20, seed=1)
    data = load_datasets({"train_file": str(path), "max_seq_length": 2048}, "sft", tok)
    batch = collator(tok)([data.train[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == max(data.stats.lengths[:4]) < 2048


def test_flattening_collator_keeps_examples_isolated(tmp_path, model_dir, tok):
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    path = make_sft_data(tmp_path / "d.jsonl", n=3, seed=7)
    data = load_datasets({"train_file": str(path), "max_seq_length": 128}, "sft", tok)
    feats = [data.train[i] for i in range(3)]
    packed = flattening_collator()(feats)
    assert packed["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    with torch.no_grad():
        together = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([f["input_ids"]]), use_cache=False).logits[0] for f in feats])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    starts = [0, len(feats[0]["input_ids"]), len(feats[0]["input_ids"]) + len(feats[1]["input_ids"])]
    assert [packed["labels"][0, s].item() for s in starts] == [IGNORE_INDEX] * 3


# ------------------------------------------------------------------------------------------
# Cache
# ------------------------------------------------------------------------------------------


def test_second_load_is_a_cache_hit_with_identical_data(tmp_path, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=30, seed=3)
    values = {"train_file": str(path), "max_seq_length": 96, "eval_split_ratio": 0.1}
    first = load_datasets(values, "sft", tok, cache_dir=tmp_path / "cache")
    second = load_datasets(values, "sft", tok, cache_dir=tmp_path / "cache")
    assert (first.stats.cache_hit, second.stats.cache_hit) == (False, True)
    assert rows(first.train) == rows(second.train) and rows(first.eval) == rows(second.eval)
    assert [r["labels"] for r in first.train] == [r["labels"] for r in second.train]
    assert second.report.to_dict() == first.report.to_dict()
    assert (second.stats.truncated, second.stats.dropped) == (first.stats.truncated, first.stats.dropped)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_cache_misses_when_max_seq_length_the_file_or_the_tokenizer_change(tmp_path, model_dir, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=10, seed=3)
    cache = tmp_path / "cache"
    load_datasets({"train_file": str(path), "max_seq_length": 96}, "sft", tok, cache_dir=cache)
    assert not load_datasets(
        {"train_file": str(path), "max_seq_length": 64}, "sft", tok, cache_dir=cache
    ).stats.cache_hit
    assert load_datasets(
        {"train_file": str(path), "max_seq_length": 64, "seed": 9}, "sft", tok, cache_dir=cache
    ).stats.cache_hit
    make_sft_data(path, n=10, seed=4)
    assert not load_datasets(
        {"train_file": str(path), "max_seq_length": 64}, "sft", tok, cache_dir=cache
    ).stats.cache_hit
    other = transformers.AutoTokenizer.from_pretrained(model_dir)
    other.chat_template = other.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert not load_datasets(
        {"train_file": str(path), "max_seq_length": 64}, "sft", other, cache_dir=cache
    ).stats.cache_hit


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, tok):
    path = make_sft_data(tmp_path / "d.jsonl", n=10, seed=3)
    cache = tmp_path / "cache"
    load_datasets({"train_file": str(path)}, "sft", tok, cache_dir=cache)
    [entry] = list(cache.iterdir())
    (entry / "tokens.arrow").write_bytes(b"garbage")
    again = load_datasets({"train_file": str(path)}, "sft", tok, cache_dir=cache)
    assert not again.stats.cache_hit and len(again.train) == 10


# ------------------------------------------------------------------------------------------
# Traceability and odd-but-valid input
# ------------------------------------------------------------------------------------------


def test_each_example_names_its_source_line_even_through_the_cache(tmp_path, tok):
    convs = unique_conversations(12)
    path = write_lines(tmp_path / "d.jsonl", [convs[0], "", "{bad", *convs[1:]])  # lines 2, 3 are not records
    for cache in (None, tmp_path / "c", tmp_path / "c"):
        data = load_datasets({"train_file": str(path), "eval_split_ratio": 0.25}, "sft", tok, cache_dir=cache)
        assert sorted(data.train_lines + data.eval_lines) == [1, *range(4, 15)]
        for row, line in zip(data.train, data.train_lines):
            record = json.loads(path.read_text().splitlines()[line - 1])
            assert row["input_ids"] == tok.apply_chat_template(record["messages"], return_dict=False)


def test_messages_with_extra_keys_render_like_apply_chat_template(tok):
    records = [
        {
            "messages": [
                {"role": "user", "content": "Spell the word lemon.", "name": "Ada"},
                {"role": "assistant", "content": "l-e-m-o-n", "weight": None},
            ]
        },
        GOOD,
    ]
    out = tokenize_conversations(records, tok, 512)
    for i, record in enumerate(records):
        ref = tok.apply_chat_template(record["messages"], return_dict=True, return_assistant_tokens_mask=True)
        ids = out.input_ids[out.offsets[i] : out.offsets[i + 1]].tolist()
        labels = out.labels[out.offsets[i] : out.offsets[i + 1]].tolist()
        assert ids == ref["input_ids"]
        assert labels == [t if m else IGNORE_INDEX for t, m in zip(ref["input_ids"], ref["assistant_masks"])]


def test_a_conversation_the_template_refuses_is_named_by_its_line(tmp_path, model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role here') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    with_system = {"messages": [{"role": "system", "content": "s"}, *GOOD["messages"]]}
    path = write_lines(tmp_path / "d.jsonl", [GOOD, GOOD, with_system, GOOD])
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: .*refused a conversation \(no system role here\)"):
        load_datasets({"train_file": str(path)}, "sft", tok)


def test_a_file_checked_before_start_is_parsed_once_unless_it_changed_since(tmp_path, tok, monkeypatch):
    import os

    from modx_widgets.data import load as load_module
    from modx_widgets.data.check import scan_for_training

    path = write_lines(tmp_path / "d.jsonl", unique_conversations(12))
    scanned = scan_for_training(path, "sft")
    reads: list[str] = []
    real_scan = load_module.scan_file
    monkeypatch.setattr(load_module, "scan_file", lambda *a, **k: reads.append(str(a[0])) or real_scan(*a, **k))
    values = {"train_file": str(path), "group_by_length": False}
    reused = load_datasets(values, "sft", tok, scans={str(path): scanned})
    assert reads == [] and len(reused.train) == 12
    write_lines(path, unique_conversations(15))  # edited between the check and the run
    os.utime(path, ns=(scanned.signature[1] + 10**9, scanned.signature[1] + 10**9))
    fresh = load_datasets(values, "sft", tok, scans={str(path): scanned})
    assert reads == [str(path)] and len(fresh.train) == 15
