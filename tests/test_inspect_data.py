"""Data inspector: counts with reasons, trained spans, length histogram, suggestion, caching, panel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modx_widgets.inspect_data import (
    clear_cache,
    histogram,
    inspect_data,
    suggest_max_seq_length,
)
from modx_widgets.schema.spec import load_schema
from modx_widgets.testing import IM_END, make_pretrain_data, make_sft_data, make_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("inspect") / "model")


@pytest.fixture(scope="module")
def tokenizer(model):
    from modx_widgets.run.model import load_tokenizer

    return load_tokenizer({"model_path": str(model)})


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def _full_length(tokenizer, record) -> int:
    """Token count of a conversation rendered by the tokenizer itself (independent path)."""
    text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_counts_usable_and_rejected_lines_with_line_numbers_and_reasons(tmp_path, model, tokenizer):
    data = make_sft_data(tmp_path / "d.jsonl", n=12, seed=3)
    good = open(data, encoding="utf-8").read().splitlines()
    bad = [
        "this is not json",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"text": "no messages"}),
    ]
    lines = good[:5] + [bad[0]] + good[5:9] + ["", bad[1]] + good[9:] + [bad[2]]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = inspect_data({"train_file": str(data), "model_path": str(model)}, "sft", tokenizer=tokenizer)
    assert result.usable == len(good) and result.total_lines == len(good) + len(bad)
    assert result.rejected_count == len(bad)
    by_line = {p.line: p.message for p in result.rejected}
    assert sorted(by_line) == [i + 1 for i, text in enumerate(lines) if text in bad]
    assert "not valid JSON" in by_line[6]
    assert "assistant" in by_line[12]
    assert "messages" in by_line[len(lines)]
    assert len(result.lengths) == len(good)


def test_examples_highlight_exactly_the_assistant_turns(tmp_path, model, tokenizer):
    data = make_sft_data(tmp_path / "d.jsonl", n=8, seed=5, min_turns=2, max_turns=3)
    records = _records(data)
    result = inspect_data(
        {"train_file": str(data), "model_path": str(model), "max_seq_length": 4096}, "sft", examples=3,
        tokenizer=tokenizer,
    )
    assert [e.line for e in result.examples[:3]] == [1, 2, 3]
    for view in result.examples:
        record = records[view.line - 1]
        trained = [s.text for s in view.segments if s.trained]
        expected = [m["content"] + IM_END for m in record["messages"] if m["role"] == "assistant"]
        assert trained == expected
        context = "".join(s.text for s in view.segments if not s.trained)
        for m in record["messages"]:
            if m["role"] != "assistant":
                assert m["content"] in context
        assert not view.truncated
        assert view.tokens == _full_length(tokenizer, record)
        html = view.html()
        assert html.count('class="modx-trained"') == len(expected)
        assert "&lt;|im_start|&gt;" in html  # text is escaped, never injected


def test_truncation_cuts_examples_and_counts_against_max_seq_length(tmp_path, model, tokenizer):
    data = make_sft_data(tmp_path / "d.jsonl", n=30, seed=2, min_turns=1, max_turns=3)
    records = _records(data)
    lengths = np.array([_full_length(tokenizer, r) for r in records])
    limit = int(np.median(lengths))
    result = inspect_data(
        {"train_file": str(data), "model_path": str(model), "max_seq_length": limit}, "sft", examples=2,
        tokenizer=tokenizer,
    )
    assert result.lengths.tolist() == lengths.tolist()
    assert result.truncated == int((lengths > limit).sum()) > 0
    # the longest sample is always shown, cut where the model stops reading
    longest = result.examples[-1]
    assert longest.line == int(np.argmax(lengths)) + 1 and longest.truncated
    cut_text = "".join(s.text for s in longest.segments if s.cut)
    kept_text = "".join(s.text for s in longest.segments if not s.cut)
    ids = tokenizer(kept_text + cut_text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids[:limit], skip_special_tokens=False) == kept_text
    assert result.histogram.over(limit) == result.truncated
    assert sum(result.histogram.counts) == len(records)


def test_histogram_bins_are_right_closed_with_the_limit_as_an_edge():
    lengths = [1, 7, 8, 9, 100, 128, 129, 300]
    hist = histogram(lengths, limit=128)
    assert 128 in hist.edges and hist.edges[0] == 0 and hist.edges[-1] >= 300
    assert sum(hist.counts) == len(lengths)
    assert hist.over(128) == sum(1 for n in lengths if n > 128)
    for lo, hi, count in zip(hist.edges, hist.edges[1:], hist.counts):
        assert count == sum(1 for n in lengths if lo < n <= hi)
    widths = {hi - lo for lo, hi in zip(hist.edges, hist.edges[1:])}
    assert all(w & (w - 1) == 0 for w in widths)  # powers of two (the limit may split one bin)


def test_suggestion_is_the_smallest_step_multiple_holding_99_percent_within_the_schema_range():
    spec = load_schema().params["max_seq_length"]
    step, low, high = spec.step, spec.minimum, spec.maximum
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 3000, size=1000)
    value, note = suggest_max_seq_length(lengths)
    assert value % step == 0 and low <= value <= high
    assert np.mean(lengths <= value) >= 0.99
    assert np.mean(lengths <= value - step) < 0.99  # nothing smaller would do
    assert "%" in note
    # 148 short samples and 2 long ones: the short ones are 98.7%, not enough, so the long ones decide
    edge = [100] * 148 + [1000] * 2
    value, _ = suggest_max_seq_length(edge)
    assert value >= 1000 and np.mean(np.array(edge) <= value) >= 0.99
    small, _ = suggest_max_seq_length([10, 20, 30])
    assert small == low  # never below the schema minimum
    huge, why = suggest_max_seq_length([high * 2] * 10)
    assert huge == high and "truncates" in why
    with pytest.raises(ValueError, match="coverage"):
        suggest_max_seq_length([1, 2], coverage=0)


def test_inspection_suggests_a_length_that_covers_the_file(tmp_path, model, tokenizer):
    data = make_sft_data(tmp_path / "d.jsonl", n=40, seed=9)
    result = inspect_data({"train_file": str(data), "model_path": str(model), "max_seq_length": 128}, "sft",
                          tokenizer=tokenizer)
    expected, _ = suggest_max_seq_length(result.lengths)
    assert result.suggested_max_seq_length == expected
    need = math.ceil(0.99 * len(result.lengths))
    assert int(np.sort(result.lengths)[need - 1]) <= expected


def test_second_inspection_is_a_cache_hit_and_an_edited_file_is_not(tmp_path, model):
    data = make_sft_data(tmp_path / "d.jsonl", n=16, seed=4)
    values = {"train_file": str(data), "model_path": str(model), "max_seq_length": 256}
    first = inspect_data(values, "sft")  # loads the tokenizer itself
    assert not first.cache_hit
    again = inspect_data(values, "sft")
    assert again.cache_hit and again.seconds < 0.5 and again.usable == first.usable
    other_length = inspect_data({**values, "max_seq_length": 128}, "sft")
    assert other_length.cache_hit and other_length.max_seq_length == 128  # scan reused, no tokenizer load
    with open(data, "a", encoding="utf-8") as f:
        f.write("broken\n")
    edited = inspect_data(values, "sft")
    assert not edited.cache_hit and edited.rejected_count == 1


def test_pretraining_documents_are_packed_not_truncated(tmp_path, model, tokenizer):
    docs = make_pretrain_data(tmp_path / "docs.txt", n=20, seed=1)
    result = inspect_data({"train_file": str(docs), "model_path": str(model), "max_seq_length": 128}, "pretrain",
                          tokenizer=tokenizer)
    texts = [t for t in open(docs, encoding="utf-8").read().splitlines() if t.strip()]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert result.lengths.tolist() == lengths and result.truncated == 0
    assert result.suggested_max_seq_length is None
    assert result.blocks == (sum(lengths) + len(lengths)) // 128
    assert all(s.trained for e in result.examples for s in e.segments)


def test_bad_requests_are_refused_before_any_work(tmp_path, model):
    from modx_widgets.data import DataError

    with pytest.raises(ValueError, match="train_file"):
        inspect_data({"model_path": str(model)}, "sft")
    with pytest.raises(DataError, match="not found"):
        inspect_data({"train_file": str(tmp_path / "nope.jsonl"), "model_path": str(model)}, "sft")
    data = make_sft_data(tmp_path / "d.jsonl", n=4)
    with pytest.raises(ValueError, match="model_path"):
        inspect_data({"train_file": str(data), "model_path": str(tmp_path / "missing")}, "sft")
    with pytest.raises(ValueError, match="training_type"):
        inspect_data({"train_file": str(data), "model_path": str(model)}, "chat")


def test_panel_inspects_in_the_background_and_applies_the_suggestion(tmp_path, model):
    from modx_widgets.ui.inspector import DataInspector

    data = make_sft_data(tmp_path / "d.jsonl", n=20, seed=8)
    values = {"train_file": str(data), "model_path": str(model), "max_seq_length": 8192}
    applied = []
    panel = DataInspector(lambda: (dict(values), "sft"), applied.append)
    panel.button.click()
    result = panel.wait(120)
    assert result is not None and not panel.busy and panel.error is None
    assert "modx-trained" in panel.body.value and "modx-histogram" in panel.body.value
    assert str(result.suggested_max_seq_length) in panel.use_button.description
    assert panel.use_button.layout.display is None
    panel.use_button.click()
    assert applied == [result.suggested_max_seq_length]

    values["model_path"] = str(tmp_path / "gone")
    panel.inspect()
    assert panel.wait(30) is None
    assert "gone" in panel.error and "gone" in panel.body.value
    assert panel.use_button.layout.display == "none"


def test_prepare_widget_inspects_its_own_values_and_takes_the_suggestion(tmp_path, model):
    from modx_widgets import PrepareWidget

    data = make_sft_data(tmp_path / "d.jsonl", n=20, seed=6)
    widget = PrepareWidget(tmp_path / "ws")
    widget.set_values({"train_file": str(data), "model_path": str(model), "max_seq_length": 4096})
    result = widget.inspect_data(wait=120)
    assert result is not None and result.path == str(data) and result.max_seq_length == 4096
    assert result.suggested_max_seq_length < 4096
    widget.inspector.use_button.click()
    assert widget.values["max_seq_length"] == result.suggested_max_seq_length
    assert "max_seq_length" not in widget.errors
