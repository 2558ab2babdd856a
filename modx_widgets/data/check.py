"""Streaming check of a training data file, line by line, before any model or tokenizer work.

Pure Python (json only), so the widget can show problems the moment a path is typed.

Formats
- SFT: JSON Lines, one `{"messages": [{"role": ..., "content": ...}, ...]}` object per line.
  Roles are system, user and assistant; a system message may only come first; each conversation
  needs at least one assistant turn and every content must be a non-empty string.
- Pre-training: plain text, every non-blank line is one document; or JSON Lines whose objects
  carry a non-empty string "text". The format is chosen by extension (`.jsonl`/`.json` -> JSON
  Lines); for any other extension the first non-blank line is sniffed: a JSON object with a
  "text" key means JSON Lines, anything else means plain text.

Tolerated everywhere: a UTF-8 byte-order mark, CRLF line ends and blank lines (blank lines are
skipped and not counted as records). Each bad line is reported with its 1-based line number;
file-level problems (missing, directory, empty, binary, not UTF-8, a JSON array, nothing
usable) raise `DataError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

TRAINING_TYPES = ("sft", "pretrain")
ROLES = ("system", "user", "assistant")
MAX_STORED_PROBLEMS = 50
JSONL_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based line number in the file
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class DataReport:
    """What a scan found. `rejected` holds the first MAX_STORED_PROBLEMS problems;
    `rejected_count` counts them all. `total_lines` counts non-blank lines (candidate records)."""

    usable: int
    rejected: list[LineProblem]
    total_lines: int
    rejected_count: int = 0
    blank_lines: int = 0
    format: str = "jsonl"  # "jsonl" or "text"
    path: str = ""

    @property
    def ok(self) -> bool:
        return self.usable > 0 and self.rejected_count == 0

    def summary(self) -> str:
        """One line for the UI, e.g. "62 of 64 lines usable (2 rejected)"."""
        text = f"{self.usable} of {self.total_lines} lines usable"
        if self.rejected_count:
            text += f" ({self.rejected_count} rejected; first: {self.rejected[0]})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "usable": self.usable,
            "rejected": [[p.line, p.message] for p in self.rejected],
            "total_lines": self.total_lines,
            "rejected_count": self.rejected_count,
            "blank_lines": self.blank_lines,
            "format": self.format,
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataReport:
        return cls(
            usable=d["usable"],
            rejected=[LineProblem(int(line), msg) for line, msg in d["rejected"]],
            total_lines=d["total_lines"],
            rejected_count=d["rejected_count"],
            blank_lines=d["blank_lines"],
            format=d["format"],
            path=d["path"],
        )


# ------------------------------------------------------------------------------------------
# Record validation (one parsed JSON value -> None or a problem message)
# ------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def sft_record_problem(record: Any) -> str | None:
    """Why `record` is not a usable SFT conversation, or None when it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {_type_name(record)}"
    if "messages" not in record:
        return 'no "messages" field (expected {"messages": [{"role": ..., "content": ...}, ...]})'
    messages = record["messages"]
    if not isinstance(messages, list):
        return f'"messages" must be a list, got {_type_name(messages)}'
    if not messages:
        return '"messages" is empty'
    has_assistant = False
    for i, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            return f"message {i} is {_type_name(message)}, not an object with role and content"
        role = message.get("role")
        if role not in ROLES:
            shown = "missing" if role is None else json.dumps(role, ensure_ascii=False)
            return f"message {i}: role {shown} is not one of {', '.join(ROLES)}"
        if "content" not in message:
            return f'message {i} ({role}): no "content"'
        content = message["content"]
        if not isinstance(content, str):
            return f'message {i} ({role}): "content" must be a string, got {_type_name(content)}'
        if not content.strip():
            return f"message {i} ({role}): empty content"
        if role == "system" and i != 1:
            return f"message {i}: a system message may only be the first message"
        has_assistant = has_assistant or role == "assistant"
    if not has_assistant:
        return "no assistant turn (nothing to learn from)"
    return None


def pretrain_record_problem(record: Any) -> str | None:
    """Why a JSONL pre-training record is unusable, or None."""
    if not isinstance(record, dict):
        return f'expected a JSON object with a "text" field, got {_type_name(record)}'
    if "text" not in record:
        return 'no "text" field'
    text = record["text"]
    if not isinstance(text, str):
        return f'"text" must be a string, got {_type_name(text)}'
    if not text.strip():
        return 'empty "text"'
    return None


# ------------------------------------------------------------------------------------------
# File reading
# ------------------------------------------------------------------------------------------


def _open_checked(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a directory; give the path of a data file inside it")
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty")
    return p


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line without its line end), streaming.

    Raises DataError for NUL bytes (binary file) and invalid UTF-8, with the byte offset."""
    offset = 0
    with p.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if b"\x00" in raw:
                at = offset + raw.index(b"\x00")
                raise DataError(
                    f"{p} looks binary (NUL byte at byte offset {at}, line {number}); "
                    "training data must be a UTF-8 text file"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{p} is not valid UTF-8: bad byte 0x{raw[exc.start]:02x} at byte offset "
                    f"{offset + exc.start} (line {number}); re-save the file as UTF-8"
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            offset += len(raw)
            yield number, text.rstrip("\r\n")


def _looks_like_json_array(first: str) -> bool:
    """True when the first non-blank line opens a JSON array rather than a JSONL record."""
    if not first.lstrip().startswith("["):
        return False
    try:
        value = json.loads(first)
    except json.JSONDecodeError:
        return True  # a pretty-printed array spread over many lines
    return isinstance(value, list) and (not value or all(isinstance(v, dict) for v in value))


def _array_error(p: Path) -> DataError:
    return DataError(
        f"{p} holds a JSON array; training data must be JSON Lines: one object per line, "
        'e.g. {"messages": [...]} on each line, with no surrounding [ ] and no commas between lines'
    )


def _pretrain_format(p: Path, first: str) -> str:
    if p.suffix.lower() in JSONL_SUFFIXES:
        return "jsonl"
    stripped = first.lstrip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return "text"
        if isinstance(value, dict) and "text" in value:
            return "jsonl"
    return "text"


def _first_nonblank(p: Path) -> str | None:
    for _, line in _lines(p):
        if line.strip():
            return line
    return None


def scan_file(path: str | Path, training_type: str, *, keep: bool = True) -> tuple[DataReport, list[Any], list[int]]:
    """Check `path` and return (report, usable records in file order, their 1-based line numbers).

    SFT records are the parsed dicts; pre-training records are the document strings.
    With keep=False nothing is collected (check only)."""
    if training_type not in TRAINING_TYPES:
        raise DataError(f"training_type must be one of {', '.join(TRAINING_TYPES)}, got {training_type!r}")
    p = _open_checked(path)
    first = _first_nonblank(p)
    if first is None:
        raise DataError(f"data file {p} has only blank lines")
    if training_type == "sft" or p.suffix.lower() in JSONL_SUFFIXES:
        if _looks_like_json_array(first):
            raise _array_error(p)
    fmt = "jsonl" if training_type == "sft" else _pretrain_format(p, first)
    check = sft_record_problem if training_type == "sft" else pretrain_record_problem

    records: list[Any] = []
    line_numbers: list[int] = []
    problems: list[LineProblem] = []
    total = blank = rejected = 0
    for number, line in _lines(p):
        if not line.strip():
            blank += 1
            continue
        total += 1
        if fmt == "text":
            if keep:
                records.append(line)
                line_numbers.append(number)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        else:
            problem = check(value)
        if problem is None:
            if keep:
                records.append(value if training_type == "sft" else value["text"])
                line_numbers.append(number)
            continue
        rejected += 1
        if len(problems) < MAX_STORED_PROBLEMS:
            problems.append(LineProblem(number, problem))

    report = DataReport(
        usable=total - rejected,
        rejected=problems,
        total_lines=total,
        rejected_count=rejected,
        blank_lines=blank,
        format=fmt,
        path=str(p),
    )
    if report.usable == 0:
        shown = "; ".join(str(x) for x in problems[:3])
        raise DataError(f"no usable lines in {p}: all {total} lines were rejected ({shown})", report=report)
    return report, records, line_numbers


@dataclass(frozen=True)
class ScannedFile:
    """A checked file's parsed records, handed from the pre-start checks to the data loading.

    `signature` (size and modification time) tells the loader whether the file changed in
    between; if it did, the loader reads it again rather than train on stale records."""

    training_type: str
    signature: tuple[int, int]
    report: DataReport
    records: list[Any]
    line_numbers: list[int]

    def is_current(self, path: str | Path, training_type: str) -> bool:
        try:
            return training_type == self.training_type and file_signature(path) == self.signature
        except OSError:  # gone or unreadable now: let a fresh read report it
            return False


def file_signature(path: str | Path) -> tuple[int, int]:
    """(size, mtime in ns): cheap, and changes whenever the file is rewritten."""
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def scan_for_training(path: str | Path, training_type: str) -> ScannedFile:
    """Check and parse `path` once, keeping what data loading needs (raises DataError like scan_file)."""
    signature = file_signature(_open_checked(path))
    report, records, line_numbers = scan_file(path, training_type)
    return ScannedFile(training_type, signature, report, records, line_numbers)


def check_file(path: str | Path, training_type: str) -> DataReport:
    """Check a data file without loading anything heavy; bad lines go into the report,
    unreadable files raise DataError."""
    report, _, _ = scan_file(path, training_type, keep=False)
    return report
