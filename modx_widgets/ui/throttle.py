"""When and how much the monitor pushes to the front end.

A run with ``logging_steps=1`` can emit hundreds of events per second from the training
thread.  Sending a comm message for each would flood the browser and slow training, so
every event goes through one :class:`Throttle` and every chart series through
:func:`downsample`.  Both decisions live here and nowhere else.

Flush policy
------------
* Events are appended to a lock-protected buffer by whatever thread emits them (cheap:
  one lock, one append, one clock read).
* The buffer is handed to the sink (the monitor's renderer) at most once per
  ``interval`` seconds, on the thread that pushes the event that makes it due.
* Eval, Checkpoint, Status and Error force a flush at once: they are rare and the user
  wants to see them without delay (the final Status is therefore always flushed).
* Tail flush: when events stop arriving while some are buffered (a long evaluation,
  a slow step, a run that hangs), a one-shot daemon :class:`threading.Timer` flushes
  them once the interval has passed.  At most one timer is armed at any time.
* Flushes never overlap: a thread that finds a flush in progress marks the buffer as
  due and returns at once; the flushing thread drains it before it lets go.  Nothing
  here sleeps or waits for a render on another thread.  (The monitor's render lock can
  make a main-thread action such as clear() or the smoothing slider wait for the one
  render in progress: about half a millisecond in bench/bench_monitor.py.)
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

from ..events import Checkpoint, Error, Eval, Status

__all__ = ["FORCED", "Throttle", "downsample"]

_log = logging.getLogger(__name__)

#: Event types that are flushed immediately instead of waiting for the interval.
FORCED: tuple[type, ...] = (Eval, Checkpoint, Status, Error)


class Throttle:
    """Buffer events from any thread and pass them to ``sink`` in rate-limited batches.

    ``sink(batch)`` receives the events in arrival order.  It is called from the thread
    that pushed the event making the flush due, from the tail timer, or from
    :meth:`flush`; calls never overlap.
    """

    def __init__(
        self,
        sink: Callable[[list[Any]], None],
        *,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        tail_flush: bool = True,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
        self._sink = sink
        self.interval = float(interval)
        self._clock = clock
        self._tail_flush = tail_flush
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._last_flush = float("-inf")
        self._flushing = False
        self._again = False
        self._timer: threading.Timer | None = None
        self._closed = False
        self._paused = False
        #: Number of batches handed to the sink (for tests and the benchmark).
        self.flush_count = 0

    # -- producer side ---------------------------------------------------------------
    def push(self, event: Any) -> None:
        """Buffer one event; flush now if it is forced or the interval has elapsed."""
        with self._lock:
            if self._closed:
                return
            self._pending.append(event)
            if self._paused:
                return
            due = isinstance(event, FORCED) or (
                self._clock() - self._last_flush >= self.interval
            )
            if not due:
                self._arm_timer_locked()
                return
            if not self._claim_locked():
                return
        self._drain()

    def flush(self) -> None:
        """Hand everything buffered to the sink now (or have the running flush do it)."""
        with self._lock:
            if self._paused or not self._pending or not self._claim_locked():
                return
        self._drain()

    def pause(self) -> None:
        """Keep buffering but do not flush until :meth:`resume` (no timer, no sink calls)."""
        with self._lock:
            self._paused = True
            self._cancel_timer_locked()

    def resume(self) -> None:
        """Allow flushes again and flush what was buffered meanwhile."""
        with self._lock:
            self._paused = False
        self.flush()

    def close(self, *, final_flush: bool = True) -> None:
        """Stop accepting events and cancel the tail timer; deliver what is left if asked.

        With ``final_flush`` the buffered events are still delivered, by this thread or,
        when a flush is under way elsewhere, by that flush before it returns.
        """
        with self._lock:
            self._closed = True
            self._cancel_timer_locked()
            if not final_flush:
                self._pending.clear()
        if final_flush:
            self.flush()

    @property
    def pending(self) -> int:
        """How many events wait for the next flush."""
        with self._lock:
            return len(self._pending)

    # -- internals (call with self._lock held where the name says so) ----------------
    def _claim_locked(self) -> bool:
        """Become the flusher, or tell the current flusher to go round once more."""
        if self._flushing:
            self._again = True
            return False
        self._flushing = True
        self._cancel_timer_locked()
        return True

    def _drain(self) -> None:
        """Deliver batches until nothing due is left; only the claiming thread runs this."""
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                self._again = False
                self._last_flush = self._clock()
            if batch:
                self.flush_count += 1
                try:
                    self._sink(batch)
                except Exception:  # a broken view must never kill the training thread
                    _log.exception("monitor failed to render %d event(s)", len(batch))
            with self._lock:
                if self._again and self._pending:
                    continue
                self._flushing = False
                if self._pending:
                    self._arm_timer_locked()
                return

    def _arm_timer_locked(self) -> None:
        if not self._tail_flush or self._timer is not None or self._closed or self._paused:
            return
        delay = max(0.0, self.interval - (self._clock() - self._last_flush))
        timer = threading.Timer(delay, self._on_timer)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_timer_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed or self._paused or not self._pending or not self._claim_locked():
                return
        self._drain()


def downsample(
    x: Sequence[float], y: Sequence[float], *, max_points: int = 1000, keep_last: int = 200
) -> tuple[Any, Any]:
    """Reduce a series to at most ``max_points`` points, keeping the newest ``keep_last`` exact.

    Older points are grouped into buckets whose size is a power of two aligned to the
    start of the series, and each bucket keeps its lowest and highest point (in x order),
    so spikes survive and the shape of old data does not jitter as new points arrive.
    Returns two float64 numpy arrays; the input is returned unchanged (as arrays) when it
    already fits.
    """
    import numpy as np

    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D and the same length, got {xs.shape} and {ys.shape}")
    if keep_last < 0 or max_points < keep_last + 2:
        raise ValueError(
            f"need max_points >= keep_last + 2 (room for one min/max bucket), "
            f"got max_points={max_points}, keep_last={keep_last}"
        )
    n = xs.size
    if n <= max_points:
        return xs, ys
    n_old = n - keep_last
    n_buckets = (max_points - keep_last) // 2
    size = 1 << max(0, int(np.ceil(np.log2(n_old / n_buckets))))
    while -(-n_old // size) > n_buckets:  # guard against float rounding in log2
        size <<= 1
    full = n_old // size
    picks: list[Any] = []
    if full:
        block = ys[: full * size].reshape(full, size)
        base = np.arange(full) * size
        lo = base + block.argmin(axis=1)
        hi = base + block.argmax(axis=1)
        picks.append(np.stack([np.minimum(lo, hi), np.maximum(lo, hi)], axis=1).ravel())
    if full * size < n_old:
        rest = ys[full * size : n_old]
        lo, hi = sorted((int(rest.argmin()), int(rest.argmax())))
        picks.append(np.array([lo, hi]) + full * size)
    idx = np.concatenate(picks)
    # a flat bucket picks the same index twice; keep it once
    keep = np.ones(idx.size, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    idx = np.concatenate([idx[keep], np.arange(n_old, n)])
    return xs[idx], ys[idx]
