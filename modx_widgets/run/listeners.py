"""The listener list that in-kernel and subprocess runs share.

Both kinds of run must look the same to the monitor: the same add/remove calls, the state
tracked from Status events, and one misbehaving listener never starving the others.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..events import Status

Listener = Callable[[Any], None]


class Broadcaster:
    """Holds listeners and the run's state; `_broadcast` delivers one event to each listener."""

    def __init__(self, listeners: tuple[Listener, ...] | list[Listener] = ()) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = list(listeners)
        self._state = "Pending"

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            if fn not in self._listeners:
                self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    @property
    def state(self) -> str:
        return self._state

    def _broadcast(self, event: Any) -> BaseException | None:
        """Call every listener (a snapshot, so listeners may detach themselves) and return
        the last exception one of them raised, for the caller to report once."""
        if isinstance(event, Status):
            self._state = event.state
        with self._lock:
            listeners = list(self._listeners)
        failed = None
        for fn in listeners:
            try:
                fn(event)
            except Exception as exc:  # noqa: BLE001 - one bad view must not stop the others
                failed = exc
        return failed
