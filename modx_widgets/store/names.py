"""Task and template names: the one place that decides what may become a file name.

A name turns into a path under the workspace, so it is checked against a strict ASCII
whitelist rather than a blacklist of dangerous characters: whatever is not plainly safe on
Linux, macOS and Windows alike (slashes, '..', NUL, whitespace, unicode look-alikes,
reserved device names) is refused with a message that says what *is* allowed.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import StoreError

MAX_NAME_LENGTH = 100
ALLOWED_TEXT = "ASCII letters, digits, '-', '_' and '.'"
_ALLOWED = re.compile(r"[A-Za-z0-9_.-]")
# Device names Windows refuses as a file name, with or without an extension.
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


def _describe(char: str) -> str:
    """Name a refused character so the user can find it even when it is invisible."""
    if char == "\x00":
        return "a NUL character"
    if char.isspace():
        return f"whitespace (U+{ord(char):04X})"
    if ord(char) > 127:
        name = unicodedata.name(char, "unnamed character")
        return f"{char!r} (U+{ord(char):04X} {name}, not ASCII)"
    return repr(char)


def name_problem(name: object, what: str = "task") -> str | None:
    """Why `name` cannot be a task/template name, or None when it is fine."""
    if not isinstance(name, str):
        return f"{what} name must be text (got {type(name).__name__})"
    if not name:
        return f"{what} name is empty: use 1 to {MAX_NAME_LENGTH} {ALLOWED_TEXT}"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} name is {len(name)} characters long: use at most {MAX_NAME_LENGTH}"
    bad = [c for c in dict.fromkeys(name) if not _ALLOWED.fullmatch(c)]
    if bad:
        listed = ", ".join(_describe(c) for c in bad[:3])
        return f"{what} name {name[:40]!r} contains {listed}: use only {ALLOWED_TEXT}"
    if name.startswith("."):
        return f"{what} name must not start with '.' (got {name!r})"
    if ".." in name:
        return f"{what} name must not contain '..' (got {name!r})"
    if name.endswith("."):
        return f"{what} name must not end with '.' (Windows drops it; got {name!r})"
    if name.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        return f"{what} name {name!r} is a reserved device name on Windows: choose another"
    return None


def check_name(name: object, what: str = "task") -> str:
    """Return `name` unchanged when it is safe, else raise StoreError saying why."""
    problem = name_problem(name, what)
    if problem:
        raise StoreError(problem)
    return name  # type: ignore[return-value]


def same_name(a: str, b: str) -> bool:
    """Names clash case-insensitively, as they would on macOS and Windows file systems.

    Only ASCII case is folded: unicode folding would let a hand-made folder such as
    "\u017fft" (long s) answer for "sft".
    """
    return a.isascii() and b.isascii() and a.lower() == b.lower()
