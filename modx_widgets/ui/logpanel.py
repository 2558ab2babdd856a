"""The run-log panel: the run's Message events, filtered by the task's log level.

Output widgets captured with ``with out:`` from a background thread end up in whatever
cell happens to be executing, and ``Output.append_stdout`` resends the whole output list
on every line.  This panel instead keeps a bounded buffer of messages and, when asked to
render, writes a single ``HTML`` value (one writer, one trait, one message per flush).
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from typing import Iterable, Sequence

from ..events import Message

__all__ = ["LogPanel", "log_levels", "visible_messages"]


def log_levels() -> tuple[str, ...]:
    """The log levels from least to most severe, as the schema lists them for log_level."""
    from ..schema.spec import load_schema

    options = load_schema().params["log_level"].options
    if not options:
        raise RuntimeError("schema parameter 'log_level' has no options")
    return tuple(options)


def visible_messages(messages: Iterable[Message], level: str, levels: Sequence[str]) -> list[Message]:
    """Messages at ``level`` or more severe; a message with an unknown level counts as the
    second level (info), so nothing the run says is silently lost at the default level."""
    if level not in levels:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(levels)}")
    rank = {name: i for i, name in enumerate(levels)}
    floor = rank[level]
    fallback = min(1, len(levels) - 1)
    return [m for m in messages if rank.get(m.level, fallback) >= floor]


_LEVEL_COLORS = {"debug": "#8c8c8c", "warning": "#d48806", "error": "#cf1322"}


def _format(message: Message) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(message.time))
    level = html.escape(message.level)
    color = _LEVEL_COLORS.get(message.level)
    style = f' style="color:{color}"' if color else ""
    return (
        f'<div class="modx-log-line" data-level="{level}"{style}>'
        f"{stamp} {level.upper():<7} {html.escape(message.text)}</div>"
    )


class LogPanel:
    """A level selector over a scrolling, bounded view of the run's messages.

    ``add`` only buffers; ``render`` writes the HTML once, and only when something
    changed.  Both are called under the monitor's render lock; the level selector takes
    the same lock, so a change on the main thread never races a flush.
    """

    def __init__(
        self,
        *,
        level: str | None = None,
        max_lines: int = 300,
        keep: int = 5000,
        lock: threading.RLock | None = None,
    ) -> None:
        import ipywidgets as w

        from ..schema.spec import load_schema

        self.levels = log_levels()
        self._lock = lock if lock is not None else threading.RLock()
        self.max_lines = max_lines
        self._messages: deque[Message] = deque(maxlen=keep)
        self._dirty = True
        self.level_picker = w.Dropdown(
            options=list(self.levels),
            value=level if level is not None else load_schema().params["log_level"].default,
            description="Log level",
            layout=w.Layout(width="220px"),
        )
        self.view = w.HTML(value=self._html([]))
        self.view.add_class("modx-log")
        self.level_picker.observe(self._on_level, names="value")
        self.widget = w.VBox([self.level_picker, self.view], layout=w.Layout(width="100%"))

    @property
    def level(self) -> str:
        return self.level_picker.value

    @level.setter
    def level(self, value: str) -> None:
        if value not in self.levels:
            raise ValueError(f"unknown log level {value!r}; expected one of {', '.join(self.levels)}")
        self.level_picker.value = value

    def add(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self._messages.append(m)
            self._dirty = True

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._dirty = True
            self.render()

    def lines(self) -> list[Message]:
        """The messages the panel shows now (newest last, at most ``max_lines``)."""
        return visible_messages(self._messages, self.level, self.levels)[-self.max_lines :]

    def render(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            self.view.value = self._html(self.lines())

    def _html(self, shown: list[Message]) -> str:
        body = "".join(_format(m) for m in shown) or '<div style="color:#8c8c8c">(no log lines yet)</div>'
        # column-reverse keeps the scroll position pinned to the newest line
        return (
            '<div class="modx-log-scroll" style="max-height:14em;overflow:auto;display:flex;'
            'flex-direction:column-reverse;border:1px solid #e0e0e0;border-radius:4px;padding:4px 8px">'
            '<div style="font-family:var(--jp-code-font-family, monospace);font-size:0.85em;'
            f'line-height:1.4;white-space:pre-wrap">{body}</div></div>'
        )

    def _on_level(self, change: dict) -> None:
        with self._lock:
            self._dirty = True
            self.render()
