"""The parameter form, generated entirely from the schema.

Nothing here knows a parameter by name: every control, default, range, option, fold group
and visibility rule comes from `load_schema()`, so adding a parameter to `params.json` adds
it to the form.  Data flows one way: the controls hold what the user typed, `.values` reads
them into a plain dict, validation (elsewhere) turns that dict into problems, and
`show_problems()` writes those problems into the error line beside each field.  The form
never validates on its own, so a script and the widget see the same rules.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Iterable, Mapping

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from ..schema.spec import ParamSpec, Schema, SectionSpec, load_schema

ERROR_COLOUR = "#c62828"
WARNING_COLOUR = "#b26a00"
HELP_COLOUR = "#666"
LABEL_WIDTH = "15em"
CONTROL_WIDTH = "20em"

ChangeCallback = Callable[[set[str]], None]


def _display(visible: bool) -> str | None:
    return None if visible else "none"


def _placeholder(spec: ParamSpec) -> str:
    return "/path/to/folder" if spec.type == "dir" else "/path/to/file"


def _make_control(spec: ParamSpec) -> widgets.DOMWidget:
    """The one input widget that fits this parameter's type (IntText, not BoundedIntText, so an
    out-of-range number stays visible and gets an error instead of being clamped silently)."""
    layout = widgets.Layout(width=CONTROL_WIDTH)
    if spec.type in ("file", "dir"):
        return widgets.Text(placeholder=_placeholder(spec), continuous_update=False, layout=layout)
    if spec.type == "str":
        return widgets.Text(continuous_update=False, layout=layout)
    if spec.type == "bool":
        return widgets.Checkbox(indent=False, layout=widgets.Layout(width="auto"))
    if spec.type == "int":
        return widgets.IntText(step=int(spec.step or 1), layout=layout)
    if spec.type == "float":
        return widgets.FloatText(step=spec.step, layout=layout)
    if spec.type == "choice":
        return widgets.Dropdown(options=list(spec.options or ()), layout=layout)
    if spec.type == "multichoice":
        return widgets.TagsInput(allowed_tags=list(spec.options or ()), allow_duplicates=False, layout=layout)
    raise ValueError(f"parameter {spec.key!r}: no control for type {spec.type!r}")  # schema.py forbids this


def _coerce(spec: ParamSpec, value: Any) -> Any:
    """Turn a programmatic value into what the control holds, or raise a ValueError naming the key.

    Only *type* problems are refused here (a control cannot hold them); an out-of-range
    number is accepted so that validation can show it as an error next to the field."""
    where = f"{spec.key} ({spec.label})"
    if spec.type in ("file", "dir", "str"):
        return "" if value is None else str(value)
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if spec.type == "int":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a whole number, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{where} must be a whole number, got {value!r}")
    if spec.type == "float":
        if isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a number, got {value!r}") from None
    options = list(spec.options or ())
    if spec.type == "choice":
        if value in options:
            return value
        raise ValueError(f"{where} must be one of {', '.join(options)}; got {value!r}")
    # multichoice
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{where} must be a list drawn from {', '.join(options)}; got {value!r}")
    items = list(value)
    unknown = [v for v in items if v not in options]
    if unknown:
        raise ValueError(f"{where}: {', '.join(map(str, unknown))} not allowed; choose from {', '.join(options)}")
    return list(dict.fromkeys(items))


class SharedLooks:
    """Layout and style objects that every field row may share because none of them is ever
    changed per field.  A form has ~50 rows; sharing saves ~200 widget models (and their comm
    messages), which is most of what makes PrepareWidget() slow to construct."""

    def __init__(self) -> None:
        self.label = widgets.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH)
        self.help = widgets.Layout(margin=f"0 0 6px {LABEL_WIDTH}")
        self.row = widgets.Layout()
        self.html = HTMLStyle()


class ParamField:
    """One parameter's row: label (with a red asterisk when required), control, an error line
    beside the control and a short help line under it.  Keeping them together is what lets a
    rejected value be shown right where it was typed."""

    def __init__(self, spec: ParamSpec, shared: "SharedLooks | None" = None) -> None:
        self.spec = spec
        looks = shared or SharedLooks()
        star = f' <span style="color:{ERROR_COLOUR}" title="required">*</span>' if spec.required else ""
        self.label = widgets.HTML(
            f'<div title="{html.escape(spec.help)}" style="line-height:1.35">{html.escape(spec.label)}{star}</div>',
            layout=looks.label,
            style=looks.html,
        )
        self.control = _make_control(spec)
        self.control.tooltip = spec.help
        self.control.add_class(f"modx-param-{spec.key}")
        self.message = widgets.HTML(
            "", layout=widgets.Layout(display="none", flex="1 1 0%", min_width="12em"), style=looks.html
        )
        self.message.add_class("modx-field-message")
        self.help = widgets.HTML(
            f'<div style="color:{HELP_COLOUR};font-size:85%;line-height:1.35">{html.escape(spec.help)}</div>',
            layout=looks.help,
            style=looks.html,
        )
        self.box = widgets.VBox(
            [widgets.HBox([self.label, self.control, self.message], layout=looks.row), self.help],
            layout=widgets.Layout(margin="2px 0"),
        )
        self._shown: tuple[str, str] = ("", "")
        self._visible = True
        self.set(spec.default)

    @property
    def key(self) -> str:
        return self.spec.key

    def get(self) -> Any:
        """The control's value in schema terms (empty path -> None, tags -> list)."""
        value = self.control.value
        if self.spec.type in ("file", "dir"):
            return value.strip() or None
        if self.spec.type == "multichoice":
            return list(value)
        return value

    def set(self, value: Any) -> None:
        coerced = _coerce(self.spec, value)
        if self.control.value != coerced:
            self.control.value = coerced

    @property
    def problem(self) -> tuple[str, str]:
        """(level, text) currently shown next to the field; level is error/warning or ''."""
        return self._shown

    def show(self, error: str | None = None, warning: str | None = None) -> None:
        """Write the error (red) or else the warning (orange) beside the control; '' clears it."""
        shown = ("error", error) if error else ("warning", warning) if warning else ("", "")
        if shown == self._shown:
            return
        self._shown = shown
        level, text = shown
        colour = ERROR_COLOUR if level == "error" else WARNING_COLOUR
        with self.message.hold_sync():
            self.message.value = (
                f'<div style="color:{colour};margin-left:8px;line-height:1.35" class="modx-{level}">'
                f"{'&#9888;' if level == 'error' else '&#9432;'} {html.escape(text)}</div>"
                if level
                else ""
            )
            self.message.layout.display = _display(bool(level))

    @property
    def visible(self) -> bool:
        return self._visible

    @visible.setter
    def visible(self, visible: bool) -> None:
        if visible != self._visible:
            self._visible = visible
            self.box.layout.display = _display(visible)


class ParamForm(widgets.VBox):
    """All six sections as tabs; inside each, one accordion per fold group (General open).

    `training_type` is the only outside fact the form needs: it decides which sections and
    fields are in play (the LoRA tab exists only for SFT)."""

    def __init__(self, training_type: str = "sft", schema: Schema | None = None) -> None:
        self.schema = schema or load_schema()
        self.fields: dict[str, ParamField] = {}
        self._looks = SharedLooks()
        self._callbacks: list[ChangeCallback] = []
        self._quiet = 0
        self._pending: set[str] = set()
        self._training_type = training_type
        self._rule_keys = {k for p in self.schema.params.values() for k, _ in p.visible_when}
        self._sections: dict[str, widgets.VBox] = {}
        self._folds: dict[tuple[str, str], widgets.Accordion] = {}
        fold_labels = {f.key: f.label for f in self.schema.fold_groups}
        for section in self.schema.sections:
            self._sections[section.key] = self._build_section(section, fold_labels)
        self.tabs = widgets.Tab()
        self._shown_sections: tuple[str, ...] = ()
        super().__init__([self.tabs])
        self.add_class("modx-param-form")
        self._apply_visibility()

    # -- construction ---------------------------------------------------------------------
    def _build_section(self, section: SectionSpec, fold_labels: Mapping[str, str]) -> widgets.VBox:
        accordions = []
        for fold in fold_labels:
            specs = [p for p in section.params if p.fold == fold]
            if not specs:
                continue
            rows = []
            for spec in specs:
                field = ParamField(spec, self._looks)
                field.control.observe(lambda _change, key=spec.key: self._on_control(key), names="value")
                self.fields[spec.key] = field
                rows.append(field.box)
            acc = widgets.Accordion(
                [widgets.VBox(rows)], titles=(fold_labels[fold],), selected_index=0 if fold == "General" else None
            )
            acc.add_class(f"modx-fold-{fold}")
            self._folds[(section.key, fold)] = acc
            accordions.append(acc)
        box = widgets.VBox(accordions)
        box.add_class(f"modx-section-{section.key}")
        return box

    # -- values ---------------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        """Every parameter's current value, keyed and ordered as in the schema."""
        return {key: self.fields[key].get() for key in self.schema.params}

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Put `values` into the controls; keys not given keep their value.

        All keys and types are checked before anything changes, so a bad dict leaves the
        form as it was.  Listeners hear about the change once, after every control is set."""
        unknown = [k for k in values if k not in self.fields]
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(map(str, unknown))}")
        coerced = {k: _coerce(self.fields[k].spec, v) for k, v in values.items()}
        with self.quiet():
            for key, value in coerced.items():
                self.fields[key].set(value)

    def quiet(self) -> "_Quiet":
        """Context manager: batch control changes and notify listeners once at the end."""
        return _Quiet(self)

    def on_change(self, callback: ChangeCallback) -> None:
        """Call `callback(changed_keys)` after the user (or set_values) changes values."""
        self._callbacks.append(callback)

    def _on_control(self, key: str) -> None:
        self._pending.add(key)
        if not self._quiet:
            self._flush()

    def _flush(self) -> None:
        changed, self._pending = self._pending, set()
        if not changed:
            return
        if changed & self._rule_keys:
            self._apply_visibility()
        for callback in list(self._callbacks):
            callback(changed)

    # -- visibility -----------------------------------------------------------------------
    @property
    def training_type(self) -> str:
        return self._training_type

    @training_type.setter
    def training_type(self, value: str) -> None:
        if value != self._training_type:
            self._training_type = value
            self._apply_visibility()

    def context(self) -> dict[str, Any]:
        """What visibility rules are evaluated against: the values plus the training type."""
        return {**self.values, "training_type": self._training_type}

    def is_visible(self, key: str) -> bool:
        """Is this parameter on screen (its section shown and its own rule true)?"""
        return self.schema.visible(key, self.context())

    def visible_sections(self) -> tuple[str, ...]:
        return self._shown_sections

    def _apply_visibility(self) -> None:
        ctx = self.context()
        for field in self.fields.values():
            field.visible = field.spec.is_visible(ctx)
        for (section, fold), acc in self._folds.items():
            keys = [p.key for p in self.schema.section(section).params if p.fold == fold]
            show = any(self.fields[k].visible for k in keys)
            if (acc.layout.display is None) != show:
                acc.layout.display = _display(show)
        shown = tuple(s.key for s in self.schema.sections if s.is_visible(ctx))
        if shown != self._shown_sections:
            current = self.current_section()
            self._shown_sections = shown
            # Children first, then titles, as separate messages: sent together in one
            # hold_sync() the front end sometimes applied the titles before the new children
            # and left blank tab titles (seen in JupyterLab in Chromium).
            self.tabs.children = [self._sections[k] for k in shown]
            self.tabs.titles = [self.schema.section(k).label for k in shown]
            self.tabs.selected_index = shown.index(current) if current in shown else 0

    # -- navigation -----------------------------------------------------------------------
    def current_section(self) -> str | None:
        index = self.tabs.selected_index
        return self._shown_sections[index] if index is not None and index < len(self._shown_sections) else None

    def reveal(self, key: str) -> None:
        """Bring a field into view: select its tab and open its fold group."""
        spec = self.fields[key].spec
        if spec.section in self._shown_sections:
            self.tabs.selected_index = self._shown_sections.index(spec.section)
        self._folds[(spec.section, spec.fold)].selected_index = 0

    def is_open(self, section: str, fold: str) -> bool:
        return self._folds[(section, fold)].selected_index == 0

    # -- problems -------------------------------------------------------------------------
    def show_problems(self, errors: Mapping[str, str], warnings: Iterable[tuple[str, str]] = ()) -> list[str]:
        """Show each error (red) or warning (orange) beside its field and clear the rest.

        Returns the warnings that belong to no field (key '' or unknown) so the caller can
        show them in its summary."""
        by_key: dict[str, list[str]] = {}
        loose: list[str] = []
        for key, text in warnings:
            if key in self.fields:
                by_key.setdefault(key, []).append(text)
            else:
                loose.append(text)
        for key, field in self.fields.items():
            field.show(errors.get(key), " ".join(by_key.get(key, ())) or None)
        return loose

    def problems(self) -> dict[str, tuple[str, str]]:
        """What is displayed now: key -> (level, text) for every field showing something."""
        return {k: f.problem for k, f in self.fields.items() if f.problem[0]}


class _Quiet:
    def __init__(self, form: ParamForm) -> None:
        self.form = form

    def __enter__(self) -> ParamForm:
        self.form._quiet += 1
        return self.form

    def __exit__(self, *exc: object) -> None:
        self.form._quiet -= 1
        if not self.form._quiet:
            self.form._flush()
