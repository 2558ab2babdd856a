"""Convert modx_widgets SFT JSONL into LLaMA-Factory's sharegpt layout.

Why: the comparison must feed both tools the very same conversations. LLaMA-Factory reads a JSON
list plus a `dataset_info.json` that names the file and its format; we write both, using the
classic sharegpt tags (`from`/`value`, human/gpt/system) that LLaMA-Factory documents.
Standard library only, so it runs in either virtual environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROLE_TO_SHAREGPT = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass(frozen=True)
class Conversion:
    """Where the converted data set lives and how many conversations made it."""

    dataset_dir: Path
    dataset: str
    written: int
    skipped: list[tuple[int, str]]


def to_sharegpt_record(record: dict) -> dict:
    """One `{"messages": [...]}` record -> one sharegpt record.

    LLaMA-Factory takes a leading system message from the conversation itself, then expects
    strictly alternating human/gpt turns ending with gpt; anything else is a ValueError here,
    so a conversation is never silently dropped on one side only.
    """
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("no messages")
    turns = list(messages)
    if turns[0].get("role") == "system":
        turns = turns[1:]
    if not turns or len(turns) % 2:
        raise ValueError("turns must alternate user/assistant and end with assistant")
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            raise ValueError(f"turn {i + 1} is {m.get('role')!r}, LLaMA-Factory expects {want!r}")
    return {
        "conversations": [
            {"from": ROLE_TO_SHAREGPT[m["role"]], "value": m["content"]} for m in messages
        ]
    }


def convert_jsonl(
    src: str | Path, dataset_dir: str | Path, dataset: str = "modx_sft", order: Sequence[int] | None = None
) -> Conversion:
    """Write `<dataset_dir>/<dataset>.json` and `dataset_info.json` from our SFT JSONL file.

    `order` (indices into the file's non-blank lines) writes those conversations in that order,
    so LLaMA-Factory can be fed exactly the sequence our engine trains on.
    """
    out_dir = Path(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    converted: list[dict | None] = []
    skipped: list[tuple[int, str]] = []
    with Path(src).open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                converted.append(to_sharegpt_record(json.loads(line)))
            except (ValueError, AttributeError, KeyError, TypeError) as exc:
                converted.append(None)
                skipped.append((line_no, str(exc)))
    if order is None:
        records = [r for r in converted if r is not None]
    else:
        bad = [i for i in order if not 0 <= i < len(converted) or converted[i] is None]
        if bad:
            raise ValueError(f"order names records that do not exist or could not be converted: {bad[:5]}")
        records = [converted[i] for i in order]
    if not records:
        raise ValueError(f"{src}: no conversation could be converted ({len(skipped)} skipped)")
    file_name = f"{dataset}.json"
    (out_dir / file_name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    info = {dataset: {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations"}}}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return Conversion(out_dir, dataset, len(records), skipped)
