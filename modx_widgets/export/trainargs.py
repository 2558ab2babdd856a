"""TrainingArguments as JSON: the engine's own `build.training_arguments(...)`, serialised.

Useful to diff two tasks or to feed another Trainer script; `TrainingArguments.to_dict()`
already turns enums into their values and hides tokens.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ._common import ExportError, check_training_type, clean_values

__all__ = ["training_arguments_json"]


def training_arguments_json(values: Mapping[str, Any], training_type: str, *, device: str = "auto") -> str:
    """The TrainingArguments a run of `values` on `device` would get, as indented JSON (keys sorted)."""
    from ..config.build import BuildError, training_arguments

    clean = clean_values(values, check_training_type(training_type))
    try:
        args = training_arguments(clean, training_type, device=device)
    except BuildError as exc:
        raise ExportError(str(exc)) from None
    return json.dumps(args.to_dict(), indent=2, sort_keys=True, default=str)
