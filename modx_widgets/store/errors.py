"""The store's single error type, kept in its own module so every store file can raise it."""

from __future__ import annotations


class StoreError(ValueError):
    """A workspace operation was refused or a file in it is unusable; the message says how to fix it."""
