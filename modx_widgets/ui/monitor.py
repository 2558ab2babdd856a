"""The live view of a training run: badge, progress, charts, run log and failure card.

Data flows one way: the run calls a listener with each event (on the training thread);
the listener only hands the event to a :class:`~modx_widgets.ui.throttle.Throttle`; the
throttle passes batches to :meth:`RunMonitor._sink`, which folds them into a widget-free
:class:`RunData` and then renders the widgets inside ``hold_sync()`` blocks.  One render
lock serialises renders with the few main-thread actions (clear, history, controls), so
every trait has exactly one writer at a time and nothing ever uses ``with out:``.

bqplot is imported when the first RunMonitor is created.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as w

from ..events import STATES, Checkpoint, Error, Eval, Log, Message, Progress, Status
from .badges import StatusBadge
from .throttle import Throttle

__all__ = ["RunData", "RunMonitor", "format_duration", "progress_text"]

_log = logging.getLogger(__name__)

_AUTO = object()  # attach(history=...) left out: decide from the run
_BAR_STYLE = {"Pending": "", "Running": "info", "Completed": "success", "Stopped": "warning", "Failed": "danger"}


class RunData:
    """Everything the monitor knows about one run, folded from its events (no widgets)."""

    def __init__(self) -> None:
        from .charts import Series

        self.train_loss = Series()
        self.eval_loss = Series()
        self.learning_rate = Series()
        self.grad_norm = Series()
        self.checkpoints: list[int] = []
        self.best_eval: tuple[float, float] | None = None
        self.progress: Progress | None = None
        self.last_log: Log | None = None
        self.last_eval: Eval | None = None
        self.state = "Pending"
        self.status_message = ""
        self.status_hint = ""
        self.error: Error | None = None
        self.started: float | None = None
        self.ended: float | None = None

    def apply(self, event: Any) -> None:
        """Fold one event in; Message events are ignored here (the log panel keeps them)."""
        if isinstance(event, Progress):
            self.progress = event
        elif isinstance(event, Log):
            self.last_log = event
            last = self.train_loss.last()
            if last is not None and event.step <= last[0]:
                self._rewind(event.step)
            self.train_loss.append(event.step, event.loss)
            self.learning_rate.append(event.step, event.learning_rate)
            self.grad_norm.append(event.step, event.grad_norm)
        elif isinstance(event, Eval):
            self.last_eval = event
            self.eval_loss.append(event.step, event.eval_loss)
            self._update_best_eval()
        elif isinstance(event, Checkpoint):
            self.checkpoints = [s for s in self.checkpoints if s < event.step]
            self.checkpoints.append(event.step)
        elif isinstance(event, Status):
            self.state = event.state
            self.status_message, self.status_hint = event.message, event.hint
            if event.state == "Running":  # (re)started: the latest run is the one shown
                self.started, self.ended, self.error = event.time, None, None
            if event.state in ("Completed", "Stopped", "Failed"):
                self.ended = event.time
        elif isinstance(event, Error):
            self.error = event

    def _rewind(self, step: int) -> None:
        """A resumed or restarted run logs a step again: forget what it supersedes."""
        for series in (self.train_loss, self.learning_rate, self.grad_norm, self.eval_loss):
            series.truncate(step)
        self.checkpoints = [s for s in self.checkpoints if s < step]
        self._update_best_eval()

    def _update_best_eval(self) -> None:
        ev = self.eval_loss  # a few points per run: recomputing is cheaper than bookkeeping
        if len(ev):
            i = int(ev.y.argmin())
            self.best_eval = (float(ev.x[i]), float(ev.y[i]))
        else:
            self.best_eval = None

    @property
    def failure(self) -> tuple[str, str, str] | None:
        """(message, hint, traceback) when the run failed, else None."""
        if self.error is not None:
            return self.error.message, self.error.hint, self.error.traceback
        if self.state == "Failed":
            return self.status_message or "the run failed", self.status_hint, ""
        return None


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None or nonsense -> ``–``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(data: RunData) -> str:
    """One line: step / total, epoch, elapsed, ETA, tokens/s and current learning rate."""
    p, log = data.progress, data.last_log
    parts: list[str] = []
    if p is not None:
        parts.append(f"step {p.step:,} / {p.max_steps:,}")
        parts.append(f"epoch {p.epoch:.2f}")
        parts.append(f"elapsed {format_duration(p.elapsed_s)}")
        eta = p.eta_s
        if eta is None and p.step > 0 and p.max_steps >= p.step:
            eta = p.elapsed_s / p.step * (p.max_steps - p.step)
        if data.state == "Running":
            parts.append(f"ETA {format_duration(eta)}")
    elif log is not None:
        parts.append(f"step {log.step:,}")
        parts.append(f"epoch {log.epoch:.2f}")
    if p is None and data.started is not None and data.ended is not None:
        parts.append(f"elapsed {format_duration(data.ended - data.started)}")
    tps = p.tokens_per_s if p is not None and p.tokens_per_s is not None else (log.tokens_per_s if log else None)
    if tps is not None and math.isfinite(tps):
        parts.append(f"{tps:,.0f} tokens/s")
    lr = p.learning_rate if p is not None and p.learning_rate is not None else (log.learning_rate if log else None)
    if lr is not None and math.isfinite(lr):
        parts.append(f"lr {lr:.2e}")
    return " · ".join(parts) if parts else "waiting for the first step"


def summary_text(data: RunData) -> str:
    """Final metrics of a run (last training loss, best eval, checkpoints), or ''."""
    parts: list[str] = []
    last = data.train_loss.last()
    if last is not None:
        parts.append(f"last train loss <b>{last[1]:.4g}</b> (step {int(last[0]):,})")
    if data.best_eval is not None:
        parts.append(f"best eval loss <b>{data.best_eval[1]:.4g}</b> (step {int(data.best_eval[0]):,})")
    if data.last_eval is not None:
        extra = {k: v for k, v in data.last_eval.metrics.items() if k != "eval_loss" and isinstance(v, (int, float))}
        parts.extend(f"{html.escape(k)} {v:.4g}" for k, v in list(extra.items())[:4])
    if data.checkpoints:
        parts.append(f"{len(data.checkpoints)} checkpoint(s), last at step {data.checkpoints[-1]:,}")
    return " · ".join(parts)


def _failure_html(message: str, hint: str, traceback: str) -> str:
    out = [f'<div style="font-weight:600">Training failed: {html.escape(message)}</div>']
    if hint:
        out.append(f'<div class="modx-failure-hint" style="margin-top:4px">{html.escape(hint)}</div>')
    if traceback:
        out.append(
            '<details style="margin-top:4px"><summary>Traceback</summary>'
            f'<pre style="font-size:0.8em;white-space:pre-wrap">{html.escape(traceback)}</pre></details>'
        )
    return (
        '<div class="modx-failure-card" style="border:1px solid #ffa39e;background:#fff1f0;'
        f'color:#5c0011;border-radius:6px;padding:8px 12px">{"".join(out)}</div>'
    )


def _as_epoch_seconds(value: Any) -> float | None:
    """Accept a float timestamp, a datetime or an ISO string (status files vary)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _task_log_level(workspace: Any, task_name: str) -> str | None:
    """The task's log_level, or None when it cannot be read (the panel keeps its own)."""
    try:
        return workspace.load_task(task_name).values.get("log_level")
    except Exception:  # a missing or corrupt task must not stop the monitor
        _log.debug("could not read log_level of %r", task_name, exc_info=True)
        return None


class RunMonitor(w.VBox):
    """Live (``attach``) or recorded (``show_history``) view of one training run.

    Listeners registered with :meth:`on_state` receive the new state string whenever it
    changes; during a live run they are called from the thread that flushed the update
    (usually the training thread), so they should only set widget traits.
    """

    def __init__(
        self,
        *,
        log_level: str | None = None,
        max_points: int = 1000,
        keep_last: int = 200,
        flush_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        tail_flush: bool = True,
        **kwargs: Any,
    ) -> None:
        from .charts import RunCharts
        from .logpanel import LogPanel

        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._flush_interval = flush_interval
        self._clock = clock
        self._tail_flush = tail_flush
        self._generation = 0
        self._run: Any = None
        self._listener: Callable[[Any], None] | None = None
        self._throttle: Throttle | None = None
        self._cutoff: float | None = None
        self._state_callbacks: list[Callable[[str], None]] = []
        self._data = RunData()
        self._state = "Pending"

        self.badge = StatusBadge("Pending")
        self.progress_bar = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="240px"))
        self.progress_label = w.HTML(value=progress_text(self._data))
        self.progress_label.add_class("modx-progress-text")
        progress_row = w.HBox(
            [self.badge, self.progress_bar, self.progress_label],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )
        progress_row.add_class("modx-progress")
        self.failure_card = w.HTML(value="", layout=w.Layout(display="none"))
        self.failure_card.add_class("modx-failure")
        self.summary = w.HTML(value="", layout=w.Layout(display="none"))
        self.summary.add_class("modx-run-summary")
        self.charts = RunCharts(max_points=max_points, keep_last=keep_last, lock=self._lock)
        self.log_panel = LogPanel(level=log_level, lock=self._lock)
        self.children = (progress_row, self.failure_card, self.summary, self.charts.widget, self.log_panel.widget)
        self.add_class("modx-monitor")
        #: Number of batches rendered from live events (for tests and the benchmark).
        self.flush_count = 0

    # -- public API ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The state shown now (one of events.STATES)."""
        return self._state

    @property
    def data(self) -> RunData:
        """What the monitor has folded from the events so far (replaced by clear())."""
        return self._data

    @property
    def run(self) -> Any:
        """The run this monitor is attached to, or None."""
        return self._run

    def on_state(self, callback: Callable[[str], None]) -> Callable[[str], None]:
        """Call ``callback(state)`` after each state change; returns the callback."""
        self._state_callbacks.append(callback)
        return callback

    def attach(
        self,
        run: Any,
        *,
        history: Iterable[Any] | Callable[[], Iterable[Any]] | None | object = _AUTO,
        log_level: str | None = None,
    ) -> None:
        """Follow ``run`` live (anything with ``add_listener``/``remove_listener``).

        ``history`` (events, or a function returning them) lets the view start from what
        a run already under way has done.  It is read *after* subscribing, and live
        events it already contains are skipped, so nothing is lost or drawn twice.
        ``None`` means none (a run just started).  Left out, it is the task's stored
        events when ``run`` is a ``TrainingRun`` already Running, so re-attaching a new
        widget to ``active_run(...)`` needs nothing else.  ``log_level`` defaults to the
        task's own setting.
        """
        for name in ("add_listener", "remove_listener"):
            if not callable(getattr(run, name, None)):
                raise TypeError(f"attach() needs a run with add_listener/remove_listener; {run!r} has no {name}()")
        self.detach()
        self.clear()
        ws, task = getattr(run, "workspace", None), getattr(run, "task_name", None)
        if log_level is None and ws is not None and task is not None:
            log_level = _task_log_level(ws, task)
        if log_level is not None:
            self.log_panel.level = log_level
        if history is _AUTO:
            running = ws is not None and task is not None and getattr(run, "state", None) == "Running"
            history = (lambda: ws.read_events(task)) if running else None  # read after subscribing
        gen = self._generation
        throttle = Throttle(
            lambda batch: self._sink(gen, batch),
            interval=self._flush_interval,
            clock=self._clock,
            tail_flush=self._tail_flush,
        )
        throttle.pause()
        self._throttle, self._run, self._listener = throttle, run, throttle.push
        run.add_listener(self._listener)
        try:
            past = list(history() if callable(history) else history) if history is not None else []  # type: ignore[call-overload, arg-type]
            if past:
                with self._lock:
                    self._apply(past)
                    self._cutoff = max(getattr(e, "time", float("-inf")) for e in past)
            state = getattr(run, "state", None)
            if isinstance(state, str) and state in STATES:
                with self._lock:
                    self._data.state = state
            with self._lock:
                self._render()
            self._notify_state()
        finally:
            throttle.resume()

    def detach(self) -> None:
        """Stop following the current run; what was received so far stays on screen."""
        run, listener, throttle = self._run, self._listener, self._throttle
        self._run = self._listener = self._throttle = None
        if run is not None and listener is not None:
            try:
                run.remove_listener(listener)
            except Exception:  # a finished run may have dropped its listeners already
                _log.debug("remove_listener failed", exc_info=True)
        if throttle is not None:
            throttle.close(final_flush=True)

    def flush(self) -> None:
        """Render whatever the current run sent since the last update (e.g. in tests)."""
        if self._throttle is not None:
            self._throttle.flush()

    def show_history(self, events: Iterable[Any], status: Any = None) -> None:
        """Show a finished (or orphaned) task from its stored events and status record.

        ``status`` may be a store ``StatusRecord`` (state, message, hint, step,
        max_steps, started, ended), a state string, or None (the events decide).
        """
        self.detach()
        self.clear()
        with self._lock:
            self._apply(list(events))
            self._apply_status_record(status)
            self._render()
        self._notify_state()

    def clear(self) -> None:
        """Empty every view (marks are kept and emptied) and return to Pending."""
        with self._lock:
            self._generation += 1
            self._cutoff = None
            self._data = RunData()
            self.charts.reset()
            self.log_panel.clear()
            self._render()
        self._notify_state()

    # -- event path ----------------------------------------------------------------------
    def _sink(self, generation: int, batch: list[Any]) -> None:
        """Throttle callback: fold a batch in and render once (skips stale generations)."""
        with self._lock:
            if generation != self._generation:
                return
            if self._cutoff is not None:
                cutoff = self._cutoff
                batch = [e for e in batch if isinstance(e, (Progress, Message)) or e.time > cutoff]
            self._apply(batch)
            self._render()
            self.flush_count += 1
        self._notify_state()

    def _apply(self, events: Sequence[Any]) -> None:
        messages = []
        for event in events:
            if isinstance(event, Message):
                messages.append(event)
            else:
                self._data.apply(event)
        if messages:
            self.log_panel.add(messages)

    def _apply_status_record(self, status: Any) -> None:
        if status is None:
            return
        if isinstance(status, str):
            state, message, hint = status, "", ""
        else:
            state = getattr(status, "state", None)
            message, hint = getattr(status, "message", "") or "", getattr(status, "hint", "") or ""
        if state not in STATES:
            raise ValueError(f"unknown task state {state!r}; expected one of {', '.join(STATES)}")
        data = self._data
        data.state = state
        if message or hint:
            data.status_message, data.status_hint = message, hint
        started = _as_epoch_seconds(getattr(status, "started", None))
        ended = _as_epoch_seconds(getattr(status, "ended", None))
        data.started = started if started is not None else data.started
        data.ended = ended if ended is not None else data.ended
        step, max_steps = getattr(status, "step", None), getattr(status, "max_steps", None)
        if data.progress is None and isinstance(step, int) and isinstance(max_steps, int) and max_steps > 0:
            elapsed = (data.ended - data.started) if data.started and data.ended else 0.0
            epoch = data.last_log.epoch if data.last_log else 0.0
            data.progress = Progress(step=step, max_steps=max_steps, epoch=epoch, elapsed_s=elapsed)

    def _render(self) -> None:
        """Write every widget from ``self._data``; caller holds the render lock."""
        data = self._data
        self.charts.render(data)
        self.log_panel.render()
        p = data.progress
        step = p.step if p else (data.last_log.step if data.last_log else 0)
        total = p.max_steps if p and p.max_steps > 0 else max(step, 1)
        if data.state == "Completed" and p is not None:
            step = total
        with self.progress_bar.hold_sync():
            self.progress_bar.max = max(total, 1)
            self.progress_bar.value = min(step, self.progress_bar.max)
            self.progress_bar.bar_style = _BAR_STYLE.get(data.state, "")
        self.progress_label.value = progress_text(data)
        if data.state != self.badge.state:
            self.badge.state = data.state
        failure = data.failure
        card = _failure_html(*failure) if failure else ""
        with self.failure_card.hold_sync():
            self.failure_card.value = card
            self.failure_card.layout.display = None if failure else "none"
        final = data.state in ("Completed", "Stopped", "Failed")
        summary = summary_text(data) if final else ""
        self.summary.value = summary
        self.summary.layout.display = None if summary else "none"

    def _notify_state(self) -> None:
        with self._lock:
            state = self._data.state
            if state == self._state:
                return
            self._state = state
        for callback in list(self._state_callbacks):
            try:
                callback(state)
            except Exception:
                _log.exception("on_state callback %r failed", callback)
