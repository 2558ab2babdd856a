"""The "Inspect data" panel: the data inspector's findings as plain HTML, computed off the kernel.

Pressing the button (or calling `inspect()`) reads the current form values through a
callback, runs `inspect_data` in a daemon thread and writes the result into a few HTML
widgets; presses while it works collapse into one rerun with the newest values.  A
"Use N" button puts the suggested max_seq_length into the form through another callback.
Nothing here decides anything about data: the numbers come from `inspect_data`, which is
imported on the first inspection (it brings numpy), so building the widget stays cheap.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

import ipywidgets as widgets

if TYPE_CHECKING:
    from ..inspect_data import DataInspection

__all__ = ["DataInspector", "histogram_html", "inspection_html"]

Request = Callable[[], "tuple[Mapping[str, Any], str]"]
ERROR_COLOUR = "#c62828"
BAR_HEIGHT_PX = 80
MAX_LISTED = 10


def _colours() -> dict[str, str]:
    from ..inspect_data import COLOURS

    return COLOURS


def histogram_html(result: DataInspection) -> str:
    """Token-length histogram as flex-box bars; bins beyond max_seq_length in red, a line at the limit."""
    colours = _colours()
    hist = result.histogram
    if not hist.counts:
        return ""
    peak = max(max(hist.counts), 1)
    limit = result.max_seq_length
    sft = result.training_type == "sft"
    bars = []
    for lo, hi, count in zip(hist.edges, hist.edges[1:], hist.counts):
        over = sft and lo >= limit
        colour = colours["bar_over"] if over else colours["bar"]
        height = 0 if count == 0 else max(round(BAR_HEIGHT_PX * count / peak), 2)
        edge = f"border-left:2px solid {colours['limit']};" if sft and lo == limit else ""
        bars.append(
            f'<div class="modx-bin{" modx-over" if over else ""}" title="{lo + 1}-{hi} tokens: {count}" '
            f'style="flex:1 1 0;display:flex;align-items:flex-end;{edge}">'
            f'<div style="width:100%;height:{height}px;background:{colour}"></div></div>'
        )
    caption = (
        f"token length per sample, 0-{hist.edges[-1]}; red line: max_seq_length {limit}, "
        f"{result.truncated} sample(s) beyond it"
        if sft
        else f"token length per document, 0-{hist.edges[-1]} (documents are packed, none is truncated)"
    )
    return (
        f'<div class="modx-histogram" style="display:flex;gap:1px;height:{BAR_HEIGHT_PX}px;'
        f'width:100%;max-width:480px;border-bottom:1px solid #999">{"".join(bars)}</div>'
        f'<div style="font-size:85%;color:#666">{html.escape(caption)}</div>'
    )


def _rejected_html(result: DataInspection) -> str:
    colours = _colours()
    if not result.rejected_count:
        return ""
    items = "".join(
        f"<li>line {p.line}: {html.escape(p.message)}</li>" for p in result.rejected[:MAX_LISTED]
    )
    more = result.rejected_count - min(len(result.rejected), MAX_LISTED)
    tail = f"<li>... and {more} more</li>" if more > 0 else ""
    return (
        f'<details class="modx-rejected"><summary style="color:{colours["limit"]}">'
        f"{result.rejected_count} rejected line(s)</summary><ul>{items}{tail}</ul></details>"
    )


def _examples_html(result: DataInspection) -> str:
    colours = _colours()
    if not result.examples:
        return ""
    legend = (
        f'<span style="background:{colours["trained"]};color:{colours["trained_text"]}">trained</span> '
        f'<span style="color:{colours["context"]}">context (no loss)</span> '
        f'<span style="color:{colours["cut"]};text-decoration:line-through">cut by max_seq_length</span>'
    )
    body = "".join(e.html() for e in result.examples)
    return (
        f'<details class="modx-examples"><summary>{len(result.examples)} example(s) as the model sees them</summary>'
        f'<div style="font-size:85%">{legend}</div>{body}</details>'
    )


def inspection_html(result: DataInspection) -> str:
    """The whole finding (summary, rejected lines, histogram, examples) as one HTML string."""
    head = html.escape(f"{result.path} at max_seq_length {result.max_seq_length}: {result.summary()}")
    return (
        f'<div class="modx-inspection-summary">{head}</div>'
        + _rejected_html(result)
        + histogram_html(result)
        + _examples_html(result)
    )


class DataInspector(widgets.VBox):
    """Button + findings.  `request()` returns (values, training_type) at the moment of the
    press; `apply_length(n)` sets max_seq_length in the form (the "Use N" button)."""

    def __init__(
        self, request: Request, apply_length: Callable[[int], None] | None = None, *, examples: int = 3
    ) -> None:
        self._request = request
        self._apply_length = apply_length
        self._examples = examples
        self._lock = threading.Lock()
        self._pending = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()
        self.result: DataInspection | None = None
        self.error: str | None = None

        self.button = widgets.Button(
            description="Inspect data", icon="search",
            tooltip="Check the training data with the model's tokenizer: usable lines, lengths, trained spans",
        )
        self.button.on_click(lambda _b: self.inspect())
        self.status = widgets.HTML("")
        self.status.add_class("modx-inspect-status")
        self.body = widgets.HTML("")
        self.body.add_class("modx-inspection")
        self.use_button = widgets.Button(description="Use", layout=widgets.Layout(display="none"))
        self.use_button.on_click(lambda _b: self.apply_suggestion())
        super().__init__([widgets.HBox([self.button, self.status, self.use_button]), self.body])
        self.add_class("modx-inspector")

    # -- actions ----------------------------------------------------------------------------
    def inspect(self) -> None:
        """Start inspecting the current values in the background (returns at once)."""
        with self._lock:
            self._pending = True
            self._done.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="modx-inspect-data", daemon=True)
                self._thread.start()
        self._set_status("Inspecting the data...", "#666")

    def wait(self, timeout: float | None = None) -> DataInspection | None:
        """Block until the inspection in progress ends; returns the result (None on error)."""
        self._done.wait(timeout)
        return self.result

    @property
    def busy(self) -> bool:
        return not self._done.is_set()

    def apply_suggestion(self) -> int | None:
        """Put the suggested max_seq_length into the form; returns it (None without a suggestion)."""
        result = self.result
        if result is None or result.suggested_max_seq_length is None or self._apply_length is None:
            return None
        self._apply_length(result.suggested_max_seq_length)
        return result.suggested_max_seq_length

    # -- worker -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._done.set()
                    return
                self._pending = False
            try:
                from ..inspect_data import inspect_data

                values, training_type = self._request()
                result = inspect_data(values, training_type, examples=self._examples)
            except Exception as exc:  # noqa: BLE001 - shown in the panel; a thread has nobody to raise to
                self.result, self.error = None, str(exc) or type(exc).__name__
                self._show_error(self.error)
            else:
                self.result, self.error = result, None
                self._show(result)

    # -- rendering (the only writers of these widgets) ----------------------------------------
    def _set_status(self, text: str, colour: str) -> None:
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def _show_error(self, message: str) -> None:
        self._set_status("Cannot inspect the data", ERROR_COLOUR)
        self.body.value = f'<span style="color:{ERROR_COLOUR}">{html.escape(message)}</span>'
        self.use_button.layout.display = "none"

    def _show(self, result: DataInspection) -> None:
        when = "cached" if result.cache_hit else f"{result.seconds:.1f} s"
        self._set_status(f"Inspected ({when})", "#2e7d32")
        self.body.value = inspection_html(result)
        n = result.suggested_max_seq_length
        show = n is not None and n != result.max_seq_length and self._apply_length is not None
        self.use_button.description = f"Use max_seq_length {n}" if show else "Use"
        self.use_button.tooltip = result.suggestion_note if show else ""
        self.use_button.layout.display = None if show else "none"
