"""Training data: line-by-line checks, chat-template tokenization, sampling, splitting, collators.

Importing this package is cheap: `check` is pure Python and numpy; transformers, datasets and
torch are imported inside the functions that need them.
"""

from __future__ import annotations

from .check import DataReport, LineProblem, check_file
from .collate import PaddingCollator, collator, flattening_collator
from .errors import DataError
from .load import DataStats, PreparedData, load_datasets
from .tokenize import IGNORE_INDEX, TokenizedData, tokenize_conversations, tokenize_documents

__all__ = [
    "DataError",
    "DataReport",
    "DataStats",
    "IGNORE_INDEX",
    "LineProblem",
    "PaddingCollator",
    "PreparedData",
    "TokenizedData",
    "check_file",
    "collator",
    "flattening_collator",
    "load_datasets",
    "tokenize_conversations",
    "tokenize_documents",
]
