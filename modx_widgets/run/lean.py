"""Keep a headless run from importing what its task cannot use.

peft imports bitsandbytes whenever it is installed, and bitsandbytes loads its kernels and parts
of torch's compiler at import: about 1.2 s of a 5.6 s start on the benchmark machine, spent for
nothing unless the task uses an 8-bit optimizer or a bitsandbytes-quantized model. Only a process
that exists for one run (`modx-train`) may hide a package; a notebook kernel is the user's, so
the widget never calls this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

from ..envcheck import EIGHT_BIT_OPTIMIZERS

__all__ = ["hide_unused_bitsandbytes", "task_needs_bitsandbytes"]


def _quantized(model_path: Any) -> bool:
    """Whether the model folder declares a quantization (then its loader may need bitsandbytes)."""
    if not model_path:
        return True  # unknown model: do not guess
    try:
        config = json.loads((Path(str(model_path)).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(config, dict) or bool(config.get("quantization_config"))


def task_needs_bitsandbytes(values: Mapping[str, Any]) -> bool:
    """An 8-bit optimizer or a quantized model folder needs it; nothing else in a task does."""
    return values.get("optim") in EIGHT_BIT_OPTIMIZERS or _quantized(values.get("model_path"))


def hide_unused_bitsandbytes(values: Mapping[str, Any]) -> bool:
    """Make bitsandbytes look absent to peft/transformers in this process, when the task has no use for it.

    A `None` entry in `sys.modules` makes `import bitsandbytes` raise ImportError and
    `importlib.util.find_spec` return None, which is how both libraries test for it. Returns
    whether it was hidden; never hides a package that is already imported.
    """
    if "bitsandbytes" in sys.modules or task_needs_bitsandbytes(values):
        return False
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    return True
