"""bqplot charts of a run: built once, then only the data of existing marks changes.

Rebuilding figures on every update makes the browser re-create SVG nodes and loses zoom
and hover state, so :class:`RunCharts` creates every figure, scale, axis and mark in its
constructor and :meth:`RunCharts.render` assigns new ``x``/``y`` arrays inside
``hold_sync()`` (one comm message per changed mark).  Every array goes through
:func:`~modx_widgets.ui.throttle.downsample`, so a chart never receives more than
``max_points`` points however long the run is.

bqplot is imported when the first :class:`RunCharts` is created, not at module import.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Iterable

import numpy as np

from .throttle import downsample

__all__ = ["RunCharts", "Series", "ema"]

# Colours of the chart lines; the badge colours live in badges.py.
_TRAIN_RAW = "#9ecae1"
_TRAIN_SMOOTH = "#1f77b4"
_EVAL = "#ff7f0e"
_LR = "#2ca02c"
_GRAD = "#9467bd"
_CKPT = "#555555"
_BEST = "#d62728"


class Series:
    """(x, y) pairs with increasing x, in amortised-growth numpy buffers.

    Appending is O(1) and reading gives views, so a render never converts a 100,000-item
    Python list.  ``version`` changes on every mutation, which lets a renderer skip marks
    whose data did not change since the last push; ``rewrites`` changes only when points
    are removed, which tells incremental consumers (the smoothing) to start over.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0
        self.version = 0
        self.rewrites = 0

    def __len__(self) -> int:
        return self._n

    def append(self, x: float, y: float | None) -> None:
        """Add one point; non-finite y values are dropped (a chart cannot draw them).

        A point at or before the last x first removes the points from x on: a run resumed
        from an earlier checkpoint (or restarted) replaces what it supersedes instead of
        drawing a line back in time.
        """
        if y is None or not math.isfinite(y):
            return
        if self._n and x <= self._x[self._n - 1]:
            self.truncate(x)
        if self._n == self._x.size:
            self._x = np.resize(self._x, self._n * 2)
            self._y = np.resize(self._y, self._n * 2)
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1
        self.version += 1

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        for x, y in points:
            self.append(x, y)

    def truncate(self, x: float) -> None:
        """Remove the points whose x is at or after ``x``."""
        n = int(np.searchsorted(self._x[: self._n], x, side="left"))
        if n != self._n:
            self._n = n
            self.version += 1
            self.rewrites += 1

    def clear(self) -> None:
        self._n = 0
        self.version += 1
        self.rewrites += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self._n]

    def last(self) -> tuple[float, float] | None:
        return (float(self._x[self._n - 1]), float(self._y[self._n - 1])) if self._n else None


def ema(values: Iterable[float], weight: float, *, state: tuple[float, int] = (0.0, 0)) -> tuple[list[float], tuple[float, int]]:
    """Debiased exponential moving average (TensorBoard's loss smoothing).

    ``weight`` 0 returns the values unchanged; values near 1 smooth heavily.  ``state``
    (running sum, count) lets a caller continue a series where the previous call ended,
    so live updates cost O(new points).  Returns (smoothed values, new state).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    acc, count = state
    out: list[float] = []
    for v in values:
        acc = acc * weight + (1.0 - weight) * v
        count += 1
        out.append(acc / (1.0 - weight**count))
    return out, (acc, count)


def empty() -> np.ndarray:
    """A fresh empty float array: the starting data of every mark."""
    return np.empty(0, dtype=np.float64)


def _small_line_chart(bq: Any, w: Any, title: str, colour: str, tick_format: str, left: int, css: str) -> tuple[Any, Any]:
    """One half-width chart with a single line (learning rate, grad norm), built once."""
    scales = {"x": bq.LinearScale(), "y": bq.LinearScale()}
    line = bq.Lines(x=empty(), y=empty(), scales=scales, colors=[colour])
    figure = bq.Figure(
        marks=[line],
        axes=[bq.Axis(scale=scales["x"], label="step"),
              bq.Axis(scale=scales["y"], side="left", tick_format=tick_format)],
        title=title, animation_duration=0,
        fig_margin={"top": 40, "bottom": 40, "left": left, "right": 20},
        layout=w.Layout(width="50%", height="220px"),
    )
    figure.add_class(css)
    return line, figure


class RunCharts:
    """The loss, learning-rate and grad-norm figures plus their two controls.

    ``render(data)`` reads ``data.train_loss``, ``data.eval_loss``, ``data.learning_rate``,
    ``data.grad_norm`` (:class:`Series`), ``data.checkpoints`` (list of steps) and
    ``data.best_eval`` ((step, loss) or None).  Renders and control changes are
    serialised by ``lock`` (the monitor passes its render lock, so a slider moved on the
    main thread never interleaves with a flush from the training thread).
    """

    def __init__(
        self,
        *,
        max_points: int = 1000,
        keep_last: int = 200,
        smoothing: float = 0.6,
        lock: threading.RLock | None = None,
    ) -> None:
        import bqplot as bq
        import ipywidgets as w

        self._lock = lock if lock is not None else threading.RLock()
        self.max_points = max_points
        self.keep_last = keep_last
        self._smooth_y = Series()
        self._smooth_state: tuple[float, int] = (0.0, 0)
        self._smooth_source: tuple[int, int] | None = None
        self._rendered: dict[str, Any] = {}
        self._data: Any = None

        self._x_loss = bq.LinearScale()
        self._y_linear = bq.LinearScale()
        self._y_log = bq.LogScale()
        loss_scales = {"x": self._x_loss, "y": self._y_linear}
        self.train_raw = bq.Lines(
            x=empty(), y=empty(), scales=loss_scales, colors=[_TRAIN_RAW], stroke_width=1,
            labels=["train loss"], display_legend=True,
        )
        self.train_smooth = bq.Lines(
            x=empty(), y=empty(), scales=loss_scales, colors=[_TRAIN_SMOOTH], stroke_width=2,
            labels=["smoothed"], display_legend=True,
        )
        self.eval_line = bq.Lines(
            x=empty(), y=empty(), scales=loss_scales, colors=[_EVAL], stroke_width=2,
            marker="circle", marker_size=24, labels=["eval loss"], display_legend=True,
            visible=False,
        )
        self.ckpt_marks = bq.Scatter(
            x=empty(), y=empty(), scales=loss_scales, colors=[_CKPT], marker="triangle-down",
            default_size=48, labels=["checkpoint"], display_legend=True, visible=False,
        )
        self.best_mark = bq.Scatter(
            x=empty(), y=empty(), scales=loss_scales, colors=[_BEST], marker="diamond",
            default_size=96, labels=["best eval"], display_legend=True, visible=False,
        )
        self._loss_marks = [self.train_raw, self.train_smooth, self.eval_line, self.ckpt_marks, self.best_mark]
        self._loss_y_axis = bq.Axis(scale=self._y_linear, side="left", label="loss", tick_format=".3g")
        self.loss_figure = bq.Figure(
            marks=self._loss_marks,
            axes=[bq.Axis(scale=self._x_loss, label="step"), self._loss_y_axis],
            title="Loss", animation_duration=0, legend_location="top-right",
            fig_margin={"top": 40, "bottom": 40, "left": 60, "right": 20},
            layout=w.Layout(width="100%", height="300px"),
        )
        self.loss_figure.add_class("modx-loss-chart")

        self.lr_line, self.lr_figure = _small_line_chart(bq, w, "Learning rate", _LR, ".1e", 70, "modx-lr-chart")
        self.grad_line, self.grad_figure = _small_line_chart(bq, w, "Grad norm", _GRAD, ".3g", 60, "modx-grad-chart")

        self.smoothing = w.FloatSlider(
            value=smoothing, min=0.0, max=0.99, step=0.01, description="Smoothing",
            continuous_update=False, readout_format=".2f",
            tooltip="Weight of the moving average drawn over the raw training loss (0 = off).",
        )
        self.log_scale = w.Checkbox(value=False, description="Log-scale loss", indent=False)
        self.smoothing.observe(self._on_smoothing, names="value")
        self.log_scale.observe(self._on_log_scale, names="value")

        self.widget = w.VBox(
            [w.HBox([self.smoothing, self.log_scale]), self.loss_figure,
             w.HBox([self.lr_figure, self.grad_figure], layout=w.Layout(width="100%"))],
            layout=w.Layout(width="100%"),
        )

    # -- public ------------------------------------------------------------------------
    @property
    def marks(self) -> list[Any]:
        """Every mark of every figure (the same objects for the life of the charts)."""
        return [*self._loss_marks, self.lr_line, self.grad_line]

    def render(self, data: Any) -> None:
        """Push the series that changed since the last render to their existing marks."""
        with self._lock:
            self._render(data)

    def _render(self, data: Any) -> None:
        self._data = data
        self._extend_smoothing(data.train_loss)
        self._put("train_raw", self.train_raw, data.train_loss)
        self._put("train_smooth", self.train_smooth, self._smooth_y)
        self._put("eval", self.eval_line, data.eval_loss, visible=len(data.eval_loss) > 0)
        self._put("lr", self.lr_line, data.learning_rate)
        self._put("grad", self.grad_line, data.grad_norm)
        self._put_points("ckpt", self.ckpt_marks, self._checkpoint_points(data))
        best = data.best_eval
        self._put_points("best", self.best_mark, [best] if best else [])

    def reset(self) -> None:
        """Empty every mark (same objects), e.g. before showing another task."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._smooth_y.clear()
        self._smooth_state = (0.0, 0)
        self._smooth_source = None
        self._rendered.clear()
        empty = np.empty(0, dtype=np.float64)
        for mark in self.marks:
            with mark.hold_sync():
                mark.x = empty
                mark.y = empty
                if mark in (self.eval_line, self.ckpt_marks, self.best_mark):
                    mark.visible = False
        self._data = None

    # -- internals -----------------------------------------------------------------------
    def _extend_smoothing(self, train: Series) -> None:
        source = (id(train), train.rewrites)
        if source != self._smooth_source:  # other data, or points were replaced: start over
            self._smooth_source = source
            self._smooth_y.clear()
            self._smooth_state = (0.0, 0)
        done = len(self._smooth_y)
        new = train.y[done:]
        if new.size:
            values, self._smooth_state = ema(new.tolist(), self.smoothing.value, state=self._smooth_state)
            self._smooth_y.extend(zip(train.x[done:].tolist(), values))

    def _checkpoint_points(self, data: Any) -> list[tuple[float, float]]:
        """Place each checkpoint on the smoothed loss curve at (or just before) its step."""
        sx, sy = self._smooth_y.x, self._smooth_y.y
        points = []
        for step in data.checkpoints:
            if not sx.size:
                break
            i = max(0, int(np.searchsorted(sx, step, side="right")) - 1)
            points.append((float(step), float(sy[i])))
        return points

    def _put(self, key: str, mark: Any, series: Series, **traits: Any) -> None:
        """Send a series to its mark (downsampled) with any other traits in one message."""
        stamp = (id(series), series.version)
        if self._rendered.get(key) == stamp:
            return
        self._rendered[key] = stamp
        x, y = downsample(series.x, series.y, max_points=self.max_points, keep_last=self.keep_last)
        with mark.hold_sync():
            mark.x = x
            mark.y = y
            for name, value in traits.items():
                setattr(mark, name, value)

    def _put_points(self, key: str, mark: Any, points: list[tuple[float, float]]) -> None:
        """Send a few marker points (hidden, legend included, while there are none)."""
        if self._rendered.get(key) == points:
            return
        self._rendered[key] = points
        arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        with mark.hold_sync():
            mark.x = arr[:, 0].copy()
            mark.y = arr[:, 1].copy()
            mark.visible = bool(points)

    def _on_smoothing(self, change: dict) -> None:
        with self._lock:
            self._smooth_y.clear()
            self._smooth_state = (0.0, 0)
            if self._data is not None:
                self._render(self._data)

    def _on_log_scale(self, change: dict) -> None:
        scale = self._y_log if change["new"] else self._y_linear
        with self._lock:
            for mark in self._loss_marks:
                mark.scales = {"x": self._x_loss, "y": scale}
            self._loss_y_axis.scale = scale
