"""The left-hand column of the Prepare page: basic config and the task list.

This module only lays out widgets and forwards clicks; it decides nothing.  Every action
(select, delete, new task, template load/save/delete) is a callback supplied by the
PrepareWidget, which owns the workspace and the rules, so a button and a script call the
same code.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as widgets

from ..events import STATES
from ..schema.spec import Schema, load_schema
from .badges import StatusBadge

# Device choices that exist on every machine; GPUs are appended once they have been found.
BASE_DEVICES: tuple[tuple[str, str], ...] = (("auto", "auto"), ("cpu", "cpu"))
MESSAGE_COLOURS = {"info": "#444", "warning": "#b26a00", "error": "#c62828"}


@dataclass
class TaskActions:
    """What the panel's buttons do; each takes the task or template name it is about."""

    select: Callable[[str], Any]
    delete: Callable[[str], Any]
    new: Callable[[], Any]
    load_template: Callable[[str], Any]
    save_template: Callable[[str], Any]
    delete_template: Callable[[str], Any]


def _labelled(schema: Schema, key: str, control: widgets.DOMWidget, *extra: widgets.Widget) -> widgets.HBox:
    spec = schema.basic_param(key)
    control.tooltip = spec.help
    star = ' <span style="color:#c62828">*</span>' if spec.required else ""
    label = widgets.HTML(
        f'<span title="{html.escape(spec.help)}">{html.escape(spec.label)}{star}</span>',
        layout=widgets.Layout(width="9em", min_width="9em"),
    )
    return widgets.HBox([label, control, *extra])


class _TaskRow:
    """One line of the task list: the name (click to select), its status tag, a delete icon."""

    def __init__(self, name: str, state: str, problem: str | None, actions: TaskActions) -> None:
        self.name = name
        self.button = widgets.Button(
            description=f"\u26a0 {name}" if problem else name,  # a broken task is marked; the tooltip says why
            tooltip=problem or f"Open task {name}",
            layout=widgets.Layout(width="14em"),
        )
        self.button.on_click(lambda _b: actions.select(name))
        self.badge = StatusBadge(state if state in STATES else "Failed")
        self.delete = widgets.Button(icon="trash", tooltip=f"Delete task {name}", layout=widgets.Layout(width="36px"))
        self.delete.on_click(lambda _b: actions.delete(name))
        self.box = widgets.HBox([self.button, self.badge, self.delete])
        self.box.add_class("modx-task-row")
        self.problem = problem

    def set_state(self, state: str) -> None:
        state = state if state in STATES else "Failed"
        if self.badge.state != state:
            self.badge.state = state

    def set_selected(self, selected: bool) -> None:
        style = "info" if selected else ""
        if self.button.button_style != style:
            self.button.button_style = style


class TaskPanel(widgets.VBox):
    """Task name, template picker (with Save As and delete), temporary-template flag, training
    type, device, and the task list with a coloured status tag per task."""

    def __init__(self, actions: TaskActions, schema: Schema | None = None) -> None:
        schema = schema or load_schema()
        self._actions = actions
        self.task_name = widgets.Text(continuous_update=False, layout=widgets.Layout(width="17em"))
        self.task_name.add_class("modx-task-name")
        self.template = widgets.Dropdown(options=[], layout=widgets.Layout(width="calc(17em - 40px)"))
        self.delete_template_button = widgets.Button(
            icon="trash", tooltip="Delete the selected template (presets cannot be deleted)",
            layout=widgets.Layout(width="36px"),
        )
        self.delete_template_button.on_click(lambda _b: self._call(actions.delete_template, self.template.value))
        self.save_as_name = widgets.Text(placeholder="new template name", layout=widgets.Layout(width="11em"))
        self.save_as_button = widgets.Button(description="Save As", tooltip="Save the current parameters as a template")
        self.save_as_button.on_click(lambda _b: self._call(actions.save_template, self.save_as_name.value.strip()))
        self.temporary = widgets.Checkbox(
            description="Temporary template", indent=False,
            tooltip="Keep these parameters with the task only; the selected template is not changed on Start.",
        )
        self.training_type = widgets.Dropdown(
            options=list(schema.basic_param("training_type").options or ()), layout=widgets.Layout(width="17em")
        )
        self.device = widgets.Dropdown(options=list(BASE_DEVICES), layout=widgets.Layout(width="17em"))
        self.detached = widgets.Checkbox(
            description="Detached run", indent=False,
            tooltip="Train in a separate process that keeps going after a kernel restart or a closed browser; "
                    "a new widget re-attaches to it.  Device 'all' always trains this way (one process per GPU).",
        )
        self.new_button = widgets.Button(description="New task", icon="plus", tooltip="Create a new task")
        self.new_button.on_click(lambda _b: self._call(actions.new))
        self.task_list = widgets.VBox(layout=widgets.Layout(max_height="22em", overflow="auto"))
        self.task_list.add_class("modx-task-list")
        self.message = widgets.HTML("")
        self.message.add_class("modx-task-message")
        self._rows: dict[str, _TaskRow] = {}
        self._selected: str | None = None
        super().__init__(
            [
                widgets.HTML("<b>Basic Config</b>"),
                _labelled(schema, "task_name", self.task_name),
                _labelled(schema, "template", self.template, self.delete_template_button),
                widgets.HBox([self.save_as_name, self.save_as_button], layout=widgets.Layout(margin="0 0 0 9em")),
                widgets.HBox([self.temporary], layout=widgets.Layout(margin="0 0 0 9em")),
                _labelled(schema, "training_type", self.training_type),
                _labelled(schema, "device", self.device),
                widgets.HBox([self.detached], layout=widgets.Layout(margin="0 0 0 9em")),
                widgets.HBox([widgets.HTML("<b>Tasks</b>", layout=widgets.Layout(width="9em")), self.new_button]),
                self.task_list,
                self.message,
            ],
            layout=widgets.Layout(width="29em", min_width="29em", padding="0 12px 0 0"),
        )
        self.add_class("modx-task-panel")

    def _call(self, action: Callable[..., Any], *args: Any) -> None:
        """Run a button's action.  A refusal (ValueError) has already been shown by the action
        itself; anything else is unexpected and is shown here rather than lost in a log."""
        try:
            action(*args)
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001 - a click handler has nobody to raise to
            self.say(f"{type(exc).__name__}: {exc}", "error")

    # -- task list ------------------------------------------------------------------------
    def set_tasks(self, tasks: Iterable[tuple[str, str, str | None]]) -> None:
        """Show (name, state, problem) rows, reusing the rows that already exist."""
        rows: list[_TaskRow] = []
        for name, state, problem in tasks:
            row = self._rows.get(name)
            if row is None or row.problem != problem:
                row = _TaskRow(name, state, problem, self._actions)
            row.set_state(state)
            row.set_selected(name == self._selected)
            rows.append(row)
        self._rows = {r.name: r for r in rows}
        boxes = [r.box for r in rows]
        if list(self.task_list.children) != boxes:
            self.task_list.children = boxes

    def set_state(self, name: str, state: str) -> None:
        """Update one task's tag (called when a run reports a state change)."""
        row = self._rows.get(name)
        if row is not None:
            row.set_state(state)

    @property
    def task_names(self) -> list[str]:
        """Names currently listed (as of the last set_tasks)."""
        return list(self._rows)

    def state_of(self, name: str) -> str | None:
        row = self._rows.get(name)
        return row.badge.state if row is not None else None

    def set_selected(self, name: str | None) -> None:
        self._selected = name
        for row in self._rows.values():
            row.set_selected(row.name == name)

    # -- pickers --------------------------------------------------------------------------
    def set_templates(self, names: Sequence[str]) -> None:
        if tuple(self.template.options) != tuple(names):
            self.template.options = list(names)

    def set_devices(self, options: Sequence[tuple[str, str]]) -> None:
        """Replace the device choices, keeping the current choice if it is still offered."""
        options = list(options)
        if [tuple(o) for o in self.device.options] == options:
            return
        current = self.device.value
        values = [v for _, v in options]
        with self.device.hold_trait_notifications():
            self.device.options = options
            self.device.value = current if current in values else values[0]

    def ensure_device(self, device: str) -> None:
        """Make `device` selectable even before the GPU probe has finished (e.g. a saved task's cuda:1)."""
        values = [v for _, v in self.device.options]
        if device not in values:
            self.device.options = [*self.device.options, (device, device)]

    # -- messages -------------------------------------------------------------------------
    def say(self, text: str, level: str = "info") -> None:
        colour = MESSAGE_COLOURS.get(level, MESSAGE_COLOURS["info"])
        value = f'<span style="color:{colour}" class="modx-{level}">{html.escape(text)}</span>' if text else ""
        if self.message.value != value:
            self.message.value = value
