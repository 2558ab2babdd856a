"""The one exception the data room raises for problems the user must fix."""

from __future__ import annotations

from typing import Any


class DataError(ValueError):
    """A data file or tokenizer that cannot be used; the message says what to change.

    `report` carries the line-by-line DataReport when the file was readable but no line was
    usable, so a UI can list the problems instead of only the summary."""

    def __init__(self, message: str, *, report: Any = None) -> None:
        super().__init__(message)
        self.report = report
