"""Turning form values into a run: `validate` (pure) here; `build` (lazy heavy imports) on demand."""

from __future__ import annotations

from .validate import ValidationResult, check_values, validate

__all__ = ["ValidationResult", "check_values", "validate"]
