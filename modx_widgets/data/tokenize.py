"""Fast tokenization: SFT conversations with assistant-only labels, and pre-training documents.

Speed comes from doing per-token work in Rust or numpy, never in a Python loop:
- each chunk of conversations is rendered with the chat template (Python/jinja, per
  conversation), then encoded in one `encode_batch` call of the fast tokenizer;
- the assistant spans are character ranges in the rendered text; they are mapped to token
  ranges with two `char_to_token` calls per span, so labelling costs O(spans), not O(tokens);
- ids and labels of a chunk live in flat numpy arrays and become Arrow list columns directly.

Assistant spans come from the template's `{% generation %}` blocks when it has them (exactly the
tokens the model should produce). Otherwise the conversation is rendered prefix by prefix and the
spans are the text each assistant message adds after the generation prompt (works for any
template that renders a prefix of a conversation as a prefix of the whole). A token is labelled
when it overlaps an assistant span, as `apply_chat_template(return_assistant_tokens_mask=True)`
does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import DataError

IGNORE_INDEX = -100
CHUNK = 1000  # conversations per encode_batch call: large enough for Rust threads, small for memory
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

__all__ = ["IGNORE_INDEX", "TokenizedData", "tokenize_conversations", "tokenize_documents", "pack_blocks"]


@dataclass
class TokenizedData:
    """Flat, ragged token arrays: example i is `input_ids[offsets[i]:offsets[i+1]]`.

    `kept` are the indices (into the input records) of the examples that survived;
    `truncated` counts examples cut at max_seq_length, `dropped` those whose labelled part was
    cut away entirely (they are not in the arrays)."""

    input_ids: np.ndarray  # int32, flat
    labels: np.ndarray | None  # int32, flat, IGNORE_INDEX off the assistant spans (None: labels = ids)
    offsets: np.ndarray  # int64, len = examples + 1
    kept: np.ndarray  # int64 indices into the input sequence
    truncated: int = 0
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def supervised_tokens(self) -> int:
        if self.labels is None:
            return int(len(self.input_ids))
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))

    def to_arrow(self):
        """An Arrow table with input_ids, attention_mask and labels list columns."""
        import pyarrow as pa

        offsets = pa.array(self.offsets.astype(np.int32) if self.offsets[-1] < 2**31 else self.offsets)
        list_of = pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray
        labels = self.labels if self.labels is not None else self.input_ids
        return pa.table(
            {
                "input_ids": list_of.from_arrays(offsets, pa.array(self.input_ids)),
                "attention_mask": list_of.from_arrays(offsets, pa.array(np.ones(len(self.input_ids), np.int8))),
                "labels": list_of.from_arrays(offsets, pa.array(labels)),
            }
        )

    def to_dataset(self):
        """A `datasets.Dataset` (in memory) with input_ids, attention_mask, labels."""
        from datasets import Dataset
        from datasets.table import InMemoryTable

        return Dataset(InMemoryTable(self.to_arrow()))


# ------------------------------------------------------------------------------------------
# Chat template rendering
# ------------------------------------------------------------------------------------------


def require_chat_template(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: use the default one
        template = template.get("default")
    if not template:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise DataError(
            f"the tokenizer ({name}) has no chat template, so SFT conversations cannot be formatted. "
            "Set tokenizer.chat_template to a Jinja template, or point tokenizer_path to a tokenizer "
            "that ships one (a chat_template.jinja file or 'chat_template' in tokenizer_config.json)."
        )
    return template


def _plain_messages(messages: Sequence[Any]) -> list[dict[str, str]] | None:
    """Fresh {"role", "content"} dicts of exact str values, or None if any message has more."""
    out = []
    for m in messages:
        if type(m) is not dict or len(m) != 2:
            return None
        role, content = m.get("role"), m.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        out.append({"role": role, "content": content})
    return out


def _clean(messages: Sequence[dict]) -> list[dict]:
    # Like apply_chat_template: keys whose value is None are dropped before rendering.
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


class _Renderer:
    """Renders conversations to text plus assistant character spans."""

    def __init__(self, tokenizer) -> None:
        from transformers.utils import chat_template_utils as ctu

        self._render = ctu.render_jinja_template
        self.template = require_chat_template(tokenizer)
        self.kwargs = {k: str(v) for k, v in tokenizer.special_tokens_map.items()}
        self.has_generation = bool(_GENERATION_TAG.search(self.template))
        # Fast path for plain {"role", "content"} string messages: skip the per-message deep copy
        # that render_jinja_template does to sanitise arbitrary objects. Private helpers, so
        # guarded: without them the public function is used.
        compile_ = getattr(ctu, "_compile_jinja_template", None)
        self._with_indices = getattr(ctu, "_render_with_assistant_indices", None)
        self._compiled = compile_(self.template) if compile_ and self._with_indices else None

    def text(self, conversations: list[list[dict]], add_generation_prompt: bool = False) -> list[str]:
        rendered, _ = self._render(
            conversations, chat_template=self.template, add_generation_prompt=add_generation_prompt, **self.kwargs
        )
        return rendered

    def __call__(self, conversations: list[list[dict]]) -> tuple[list[str], list[list[tuple[int, int]]]]:
        try:
            if self.has_generation and self._compiled is not None:
                plain = [_plain_messages(c) for c in conversations]
                if all(p is not None for p in plain):
                    texts, spans = [], []
                    for messages in plain:
                        text, indices = self._with_indices(self._compiled, messages, None, None, False, **self.kwargs)
                        texts.append(text)
                        spans.append(list(indices))
                    return texts, spans
            conversations = [_clean(c) for c in conversations]
            if self.has_generation:
                texts, spans = self._render(
                    conversations, chat_template=self.template, return_assistant_tokens_mask=True, **self.kwargs
                )
                return texts, [list(s) for s in spans]
            texts = self.text(conversations)
            return texts, [self._diff_spans(c, t) for c, t in zip(conversations, texts)]
        except DataError:
            raise
        except Exception as exc:  # jinja raise_exception(), missing keys, ...
            raise DataError(
                f"the tokenizer's chat template refused a conversation ({exc}); "
                "check that its roles and their order suit this model's template"
            ) from exc

    def _diff_spans(self, messages: list[dict], full: str) -> list[tuple[int, int]]:
        """Assistant spans found by rendering prefixes (for templates without generation tags)."""
        spans: list[tuple[int, int]] = []
        cursor = 0
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            prompt = self.text([messages[:k]], add_generation_prompt=True)[0] if k else ""
            upto = full if k == len(messages) - 1 else self.text([messages[: k + 1]])[0]
            if upto.startswith(prompt) and full.startswith(upto) and len(upto) > len(prompt) >= cursor:
                spans.append((len(prompt), len(upto)))
                cursor = len(upto)
                continue
            # The template re-renders earlier turns differently: find the content itself.
            at = full.find(message["content"], cursor)
            if at >= 0:
                spans.append((at, at + len(message["content"])))
                cursor = at + len(message["content"])
        return spans


# ------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------


def _backend(tokenizer):
    return getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None


def _token_range(encoding, start: int, end: int, n_tokens: int) -> tuple[int, int]:
    """Token indices [a, b) of the tokens overlapping characters [start, end)."""
    a = None
    for c in range(start, end):  # skip characters no token covers (rare: stripped whitespace)
        a = encoding.char_to_token(c)
        if a is not None:
            break
    if a is None:
        return 0, 0
    b = None
    for c in range(end - 1, start - 1, -1):
        b = encoding.char_to_token(c)
        if b is not None:
            break
    return a, min(b + 1, n_tokens)


def _encode_segments(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Slow-tokenizer fallback: encode the pieces between span edges separately."""
    ids: list[int] = []
    token_spans: list[tuple[int, int]] = []
    pos = 0
    for s, e in spans:
        ids += tokenizer.encode(text[pos:s], add_special_tokens=False) if s > pos else []
        a = len(ids)
        ids += tokenizer.encode(text[s:e], add_special_tokens=False)
        token_spans.append((a, len(ids)))
        pos = e
    ids += tokenizer.encode(text[pos:], add_special_tokens=False) if pos < len(text) else []
    return ids, token_spans


def tokenize_conversations(
    records: Iterable[dict[str, Any] | Sequence[dict]], tokenizer, max_seq_length: int
) -> TokenizedData:
    """Tokenize SFT conversations with the chat template; labels only on assistant tokens.

    `records` are `{"messages": [...]}` dicts (or bare message lists). Examples longer than
    `max_seq_length` are cut at the right; those left without any labelled token are dropped."""
    if max_seq_length < 2:
        raise DataError(f"max_seq_length must be at least 2, got {max_seq_length}")
    render = _Renderer(tokenizer)
    backend = _backend(tokenizer)

    id_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    lengths: list[int] = []
    kept: list[int] = []
    truncated = dropped = 0
    index = 0
    batch: list[list[dict]] = []

    def flush() -> None:
        nonlocal truncated, dropped, index
        try:
            texts, char_spans = render(batch)
        except DataError:
            for j, conversation in enumerate(batch):  # name the conversation to blame
                try:
                    render([conversation])
                except DataError as one:
                    raise DataError(str(one), record=index + j) from one.__cause__
            raise
        if backend is not None:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            all_ids = [e.ids for e in encodings]
            all_spans = [
                [_token_range(e, s, t, len(e.ids)) for s, t in spans if t > s]
                for e, spans in zip(encodings, char_spans)
            ]
        else:
            pairs = [_encode_segments(tokenizer, t, s) for t, s in zip(texts, char_spans)]
            all_ids = [p[0] for p in pairs]
            all_spans = [p[1] for p in pairs]
        chunk_lengths = []
        chunk_kept = []
        for i, (ids, spans) in enumerate(zip(all_ids, all_spans)):
            n = len(ids)
            if n > max_seq_length:
                truncated += 1
                n = max_seq_length
            if not any(a < n and b > a for a, b in spans):
                dropped += 1
                continue
            chunk_lengths.append(n)
            chunk_kept.append(i)
        if chunk_kept:
            flat = np.fromiter(
                chain.from_iterable(all_ids[i][:n] for i, n in zip(chunk_kept, chunk_lengths)),
                dtype=np.int32,
                count=sum(chunk_lengths),
            )
            mask = np.zeros(len(flat), dtype=bool)
            start = 0
            for i, n in zip(chunk_kept, chunk_lengths):
                for a, b in all_spans[i]:
                    if a < n:
                        mask[start + a : start + min(b, n)] = True
                start += n
            id_parts.append(flat)
            label_parts.append(np.where(mask, flat, np.int32(IGNORE_INDEX)))
            lengths.extend(chunk_lengths)
            kept.extend(index + i for i in chunk_kept)
        index += len(batch)
        batch.clear()

    for record in records:
        batch.append(record["messages"] if isinstance(record, dict) else list(record))
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()

    return TokenizedData(
        input_ids=np.concatenate(id_parts) if id_parts else np.zeros(0, np.int32),
        labels=np.concatenate(label_parts) if label_parts else np.zeros(0, np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        kept=np.asarray(kept, dtype=np.int64),
        truncated=truncated,
        dropped=dropped,
    )


def tokenize_documents(texts: Sequence[str], tokenizer) -> TokenizedData:
    """Tokenize pre-training documents (no special tokens added; `pack_blocks` adds separators)."""
    backend = _backend(tokenizer)
    lengths: list[int] = []
    parts: list[np.ndarray] = []
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        if backend is not None:
            fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
            ids = [e.ids for e in fast(chunk, add_special_tokens=False)]
        else:
            ids = [tokenizer.encode(t, add_special_tokens=False) for t in chunk]
        n = [len(x) for x in ids]
        parts.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=sum(n)))
        lengths.extend(n)
    return TokenizedData(
        input_ids=np.concatenate(parts) if parts else np.zeros(0, np.int32),
        labels=None,
        offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        kept=np.arange(len(lengths), dtype=np.int64),
    )


def separator_id(tokenizer) -> int:
    """The id placed between packed documents: eos, else bos."""
    for attr in ("eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    raise DataError(
        "the tokenizer has neither an eos nor a bos token, so pre-training documents cannot be "
        "separated; set tokenizer.eos_token (or use a tokenizer_path whose tokenizer defines one)"
    )


def min_last_block(max_seq_length: int) -> int:
    """A trailing partial block is kept when it has at least this many tokens."""
    return max(2, max_seq_length // 8)


def pack_blocks(docs: TokenizedData, order: np.ndarray, sep: int, max_seq_length: int) -> TokenizedData:
    """Concatenate documents `order` (each followed by `sep`) and cut into max_seq_length blocks.

    The last partial block is kept when it holds at least `min_last_block(max_seq_length)`
    tokens (or when it is the only block), so small data sets still give an example and
    almost nothing is thrown away on large ones."""
    order = np.asarray(order, dtype=np.int64)
    starts, ends = docs.offsets[order], docs.offsets[order + 1]
    doc_lengths = ends - starts
    # One vectorised gather of every selected token, then a separator after each document.
    before = np.concatenate([[0], np.cumsum(doc_lengths)[:-1]]).astype(np.int64)
    positions = np.repeat(starts - before, doc_lengths) + np.arange(int(doc_lengths.sum()), dtype=np.int64)
    flat = np.insert(docs.input_ids[positions], np.cumsum(doc_lengths), np.int32(sep)).astype(np.int32)
    total = len(flat)
    n_full, rest = divmod(total, max_seq_length)
    block_lengths = [max_seq_length] * n_full
    if rest and (rest >= min_last_block(max_seq_length) or (n_full == 0 and rest >= 2)):
        block_lengths.append(rest)
    used = sum(block_lengths)
    return TokenizedData(
        input_ids=flat[:used],
        labels=None,
        offsets=np.concatenate([[0], np.cumsum(block_lengths, dtype=np.int64)]).astype(np.int64),
        kept=np.arange(len(block_lengths), dtype=np.int64),
        truncated=0,
        dropped=0,
    )
