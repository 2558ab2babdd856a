"""One actionable line for the failures users actually meet (memory, data, paths, disk).

Matched by exception type name and message so this module imports nothing heavy.
"""

from __future__ import annotations

import errno

OOM = (
    "Out of memory: lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
    "effective batch), turn on gradient_checkpointing, or shorten max_seq_length."
)
DATA = "Bad data: fix the file and line named in the message (or remove the line), then start again."
PATH = "Bad path: check model_path, tokenizer_path, train_file and the other paths in the Data section."
DISK = "Disk full: free space where output_dir lives, or lower save_total_limit to keep fewer checkpoints."
PERMISSION = "No permission: choose an output_dir you can write to, or fix the folder's permissions."
MODEL = "Damaged model files: download the model folder again (config.json + every *.safetensors shard)."
CONFIG = "Check the parameter named in the message and start again."
INVALID = "Fix the fields listed above and start again."
UNSAFE = (
    "Refused to unpickle: a checkpoint or model file holds Python objects, not only tensors, and loading "
    "it could run code. Resume from a checkpoint this studio saved, or use *.safetensors weights."
)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def hint_for(exc: BaseException) -> str:
    """The hint for `exc` (or its causes), or '' when we have nothing useful to add."""
    for e in _chain(exc):
        name = type(e).__name__
        text = str(e).lower()
        if name == "UnpicklingError" or "weights only load failed" in text:  # torch.load(weights_only=True)
            return UNSAFE
        if name in ("OutOfMemoryError", "MemoryError") or "out of memory" in text or "cuda oom" in text:
            return OOM
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "no space left" in text:
            return DISK
        if isinstance(e, PermissionError):
            return PERMISSION
        if name in ("DataError", "JSONDecodeError", "UnicodeDecodeError"):
            return DATA
        if name == "ModelError":
            return CONFIG if "lora" in text else MODEL if "damaged" in text else PATH
        if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return PATH
        if name in ("BuildError", "TaskInvalid"):
            return CONFIG if name == "BuildError" else INVALID
    return ""
