"""A coloured status tag for a task, as a tiny anywidget.

The state names come from :mod:`modx_widgets.events` and the colours from the product
spec (Pending blue, Running and Completed green, Stopped orange, Failed red).  The
colours are defined once, in :data:`STATE_COLORS`, and sent to the browser as a trait;
the ESM in ``static/badge.js`` (source ``js/badge.js``) only draws what it is given.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import anywidget
import traitlets as t

from ..events import STATES

__all__ = ["STATE_COLORS", "StatusBadge"]

#: The one definition of the status colours (CSS colours, keyed by events.STATES).
STATE_COLORS: Mapping[str, str] = MappingProxyType(
    {
        "Pending": "#1677ff",  # blue
        "Running": "#52c41a",  # green
        "Completed": "#389e0d",  # green (a shade darker, so "done" reads as settled)
        "Stopped": "#fa8c16",  # orange
        "Failed": "#f5222d",  # red
    }
)
assert set(STATE_COLORS) == set(STATES), "every state needs a colour"

_STATIC = Path(__file__).resolve().parent.parent / "static"


class StatusBadge(anywidget.AnyWidget):
    """A pill showing a task state (one of ``events.STATES``) in the spec's colour.

    ``label`` is optional text shown before the state (e.g. the task name).
    """

    _esm = _STATIC / "badge.js"
    state = t.Unicode("Pending").tag(sync=True)
    label = t.Unicode("").tag(sync=True)
    _colors = t.Dict(dict(STATE_COLORS)).tag(sync=True)

    def __init__(self, state: str = "Pending", label: str = "", **kwargs: Any) -> None:
        super().__init__(state=state, label=label, **kwargs)
        self.add_class("modx-status-badge")

    @t.validate("state")
    def _check_state(self, proposal: dict) -> str:
        value = proposal["value"]
        if value not in STATES:
            raise t.TraitError(f"unknown task state {value!r}; expected one of {', '.join(STATES)}")
        return value

    @property
    def color(self) -> str:
        """The CSS colour the badge is drawn with for its current state."""
        return self._colors[self.state]
