"""Route library log records of a run into its events, and keep them out of the notebook.

transformers prints its log lines and progress bars to stderr; from a training thread they
land in whatever cell ran last.  While a run is active, records emitted on its thread become
`Message` events (so they reach run.log and the widget), and the library's own stderr handler
and progress bars are switched off.  Several runs in one kernel share the switch through a
reference count; verbosity is restored when the last one ends.
"""

from __future__ import annotations

import logging
import warnings
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..events import Message

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LOGGERS = ("transformers", "peft", "accelerate", "datasets")
# bitsandbytes warns at import, on CPUs with AVX512-BF16, that a 4-bit kernel could not be
# fetched from a hub; 4-bit inference is never used here, so the line would only alarm users.
_NOISY_AT_IMPORT = ("bitsandbytes.backends.cpu.ops",)
_lock = threading.Lock()
_active = 0


# peft reads transformers' deprecated `is_gradient_checkpointing` when wrapping a model; the
# FutureWarning it triggers is about peft's code, not the user's, and nothing they can act on.
_FOREIGN_DEPRECATIONS = (r"`is_gradient_checkpointing` is deprecated",)


def quiet_import_noise() -> None:
    """Silence warnings of optional kernels we never use and of library-internal deprecations
    (call before importing peft)."""
    for name in _NOISY_AT_IMPORT:
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in _FOREIGN_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
_saved: dict[str, Any] = {}


class _ThreadHandler(logging.Handler):
    """Forwards records from one thread only; never raises into the caller."""

    def __init__(self, emit: Callable[[Any], None], thread_id: int, level: int) -> None:
        super().__init__(level)
        self._emit = emit
        self._thread_id = thread_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread_id:
            return
        try:
            level = record.levelname.lower()
            level = level if level in _LEVELS else ("error" if record.levelno >= logging.ERROR else "info")
            self._emit(Message(level=level, text=record.getMessage()))
        except Exception:  # noqa: BLE001 - a log line must never break training
            pass


def _silence_libraries() -> None:
    import datasets
    import transformers.utils.logging as hf_logging

    _saved["verbosity"] = hf_logging.get_verbosity()
    _saved["hf_bars"] = hf_logging.is_progress_bar_enabled()
    _saved["ds_bars"] = datasets.is_progress_bar_enabled()
    hf_logging.disable_default_handler()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _restore_libraries() -> None:
    import datasets
    import transformers.utils.logging as hf_logging

    hf_logging.enable_default_handler()
    hf_logging.set_verbosity(_saved.get("verbosity", logging.WARNING))
    if _saved.get("hf_bars", True):
        hf_logging.enable_progress_bar()
    if _saved.get("ds_bars", True):
        datasets.enable_progress_bars()


@contextmanager
def library_logs_to(emit: Callable[[Any], None], log_level: str) -> Iterator[None]:
    """Within the block, this thread's transformers/peft/accelerate/datasets logs go to `emit`."""
    global _active
    level = _LEVELS.get(log_level, logging.INFO)
    handler = _ThreadHandler(emit, threading.get_ident(), level)
    with _lock:
        if _active == 0:
            _silence_libraries()
        _active += 1
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        with _lock:
            _active -= 1
            if _active == 0:
                _restore_libraries()
