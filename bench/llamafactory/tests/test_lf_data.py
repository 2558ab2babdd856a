"""Conversion of our SFT JSONL into LLaMA-Factory's sharegpt files."""

import json

import pytest
from lf_data import convert_jsonl, to_sharegpt_record

from modx_widgets.testing import generate_conversations, make_sft_data


def test_roles_map_to_sharegpt_tags_and_keep_order_and_text():
    record = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Sum 2 + 2"},
        {"role": "assistant", "content": "4"},
    ]}
    out = to_sharegpt_record(record)
    assert [(t["from"], t["value"]) for t in out["conversations"]] == [
        ("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello!"), ("human", "Sum 2 + 2"), ("gpt", "4")]


@pytest.mark.parametrize("messages, fragment", [
    ([], "no messages"),
    ([{"role": "user", "content": "q"}], "alternate"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "expects 'user'"),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "user", "content": "q"}],
     "expects 'assistant'"),
])
def test_conversations_llamafactory_would_drop_are_refused_with_the_reason(messages, fragment):
    with pytest.raises(ValueError, match=fragment):
        to_sharegpt_record({"messages": messages})


def test_convert_writes_every_generated_conversation_and_a_dataset_info(tmp_path):
    src = make_sft_data(tmp_path / "train.jsonl", n=40, seed=3)
    conv = convert_jsonl(src, tmp_path / "lf", dataset="bench")
    assert conv.written == 40 and conv.skipped == []
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["bench"]["formatting"] == "sharegpt"
    data = json.loads((tmp_path / "lf" / info["bench"]["file_name"]).read_text())
    originals = list(generate_conversations(40, seed=3))
    assert [[t["value"] for t in d["conversations"]] for d in data] == [
        [m["content"] for m in r["messages"]] for r in originals]


def test_bad_lines_are_reported_by_line_number_and_good_ones_kept(tmp_path):
    src = tmp_path / "mixed.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    src.write_text("\n".join([json.dumps(good), "not json", "", json.dumps({"messages": []}), json.dumps(good)]) + "\n")
    conv = convert_jsonl(src, tmp_path / "lf")
    assert conv.written == 2
    assert [line for line, _ in conv.skipped] == [2, 4]


def test_a_file_with_nothing_convertible_is_an_error(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"messages": []}\n')
    with pytest.raises(ValueError, match="no conversation could be converted"):
        convert_jsonl(src, tmp_path / "lf")


def test_order_writes_the_conversations_in_the_given_sequence(tmp_path):
    src = make_sft_data(tmp_path / "train.jsonl", n=5, seed=4)
    conv = convert_jsonl(src, tmp_path / "lf", dataset="d", order=[3, 0, 4])
    data = json.loads((tmp_path / "lf" / "d.json").read_text())
    originals = list(generate_conversations(5, seed=4))
    assert conv.written == 3
    assert [d["conversations"][-1]["value"] for d in data] == [
        originals[i]["messages"][-1]["content"] for i in (3, 0, 4)]
    with pytest.raises(ValueError, match="do not exist"):
        convert_jsonl(src, tmp_path / "lf2", order=[0, 9])
