"""The one exception the data room raises for problems the user must fix."""

from __future__ import annotations

from typing import Any


class DataError(ValueError):
    """A data file or tokenizer that cannot be used; the message says what to change.

    `report` carries the line-by-line DataReport when the file was readable but no line was
    usable, so a UI can list the problems instead of only the summary; `record` is the 0-based
    position of the record that failed, when one record is to blame."""

    def __init__(self, message: str, *, report: Any = None, record: int | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.record = record
