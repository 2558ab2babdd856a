"""The "Tools" panel: memory estimate, export and LLaMA-Factory import, next to the form.

Why a separate panel: the estimate and the exporters already exist as plain functions
(`modx_widgets.estimate`, `modx_widgets.export`); this module only shows what they return
and hands value changes back.  It never decides anything itself.

How it is wired (PrepareWidget owns the wiring)::

    panel = ToolsPanel(lambda: ToolsContext(values=w.values, training_type=w.training_type,
                                            task_name=w.task_name or None,
                                            workspace_root=w.workspace.root, device=w.device))
    panel.on_import(lambda values, training_type, not_carried: ...)  # set training type, then set_values
    # on every value change:  panel.refresh()

`refresh()` and the export buttons return at once: the work runs in a daemon thread, and
calls that arrive while it runs collapse into one rerun with the newest request (the context
is read in that thread, at the moment the work starts).  Import and "Apply fix" run on the
caller's thread because they hand values to the form, which belongs to the kernel's thread.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import ipywidgets as widgets

from ..estimate import EstimateError, MemoryEstimate, estimate_memory, format_bytes
from ..export import (
    LAUNCHERS,
    ExportError,
    from_llamafactory_yaml,
    to_cli_command,
    to_llamafactory_yaml,
    to_python_script,
    training_arguments_json,
)

__all__ = ["EXPORTS", "ImportCallback", "ToolsContext", "ToolsPanel", "estimate_html"]

ImportCallback = Callable[[dict[str, Any], str, list[str]], None]

# export kind -> button label; the order is the order of the buttons
EXPORTS: dict[str, str] = {
    "script": "Python script",
    "command": "Command line",
    "yaml": "LLaMA-Factory YAML",
    "json": "TrainingArguments JSON",
}
_RED, _GREEN, _GREY = "#c62828", "#2e7d32", "#666"
_PART_COLOURS = ("#5c6bc0", "#26a69a", "#ffa726", "#ab47bc")
_BAR_WIDTH_PX = 360


@dataclass(frozen=True)
class ToolsContext:
    """What the panel needs to know about the task being edited, read when work starts.

    `device_free_bytes` replaces the free memory the device reports (plan for another
    machine, or force a verdict in tests); None asks the device.
    """

    values: Mapping[str, Any]
    training_type: str
    task_name: str | None
    workspace_root: Path
    device: str
    device_free_bytes: int | None = None


class _Latest:
    """A daemon thread that runs `job(request)` for the newest request; requests made while it
    runs collapse into one more run.  `delay` lets a burst of requests settle first."""

    def __init__(self, name: str, job: Callable[[Any], None], delay: float = 0.0) -> None:
        self._name, self._job, self._delay = name, job, delay
        self._lock = threading.Lock()
        self._pending = False
        self._request: Any = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._done.set()

    def submit(self, request: Any = None) -> None:
        with self._lock:
            self._request, self._pending = request, True
            self._done.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def busy(self) -> bool:
        return not self._done.is_set()

    def _loop(self) -> None:
        while True:
            if self._delay:
                time.sleep(self._delay)
            with self._lock:
                if not self._pending:
                    self._thread = None
                    self._done.set()
                    return
                request, self._pending = self._request, False
            self._job(request)


def _coloured(text: str, colour: str) -> str:
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


def estimate_html(est: MemoryEstimate) -> str:
    """Parameter counts and a per-part table with bars scaled against the free memory."""
    parts = (
        ("Weights", est.weight_bytes, "every base tensor in float32, plus the LoRA adapter"),
        ("Gradients", est.gradient_bytes, "one per trainable parameter"),
        ("Optimizer state", est.optimizer_bytes, "depends on the optimizer (optim)"),
        ("Activations", max(est.activation_bytes, est.step_scratch_bytes),
         "kept for the backward pass: batch x length x layers"),
    )
    scale = max(est.total_bytes, est.free_bytes or 0, 1)
    rows = []
    for (label, size, why), colour in zip(parts, _PART_COLOURS):
        width = round(_BAR_WIDTH_PX * size / scale)
        rows.append(
            f'<tr class="modx-estimate-part" title="{html.escape(why)}"><td>{label}</td>'
            f'<td style="text-align:right;padding:0 8px">{html.escape(format_bytes(size))}</td>'
            f'<td><div style="width:{width}px;height:10px;background:{colour}"></div></td></tr>'
        )
    total_width = round(_BAR_WIDTH_PX * est.total_bytes / scale)
    over = est.fits is False
    rows.append(
        f'<tr class="modx-estimate-total"><td><b>Estimated peak</b></td>'
        f'<td style="text-align:right;padding:0 8px"><b>{html.escape(format_bytes(est.total_bytes))}</b></td>'
        f'<td><div style="width:{total_width}px;height:10px;background:{_RED if over else "#455a64"}"></div></td></tr>'
    )
    if est.free_bytes is not None:
        free_width = round(_BAR_WIDTH_PX * est.free_bytes / scale)
        rows.append(
            f'<tr class="modx-estimate-free"><td>Free on {html.escape(est.device)}</td>'
            f'<td style="text-align:right;padding:0 8px">{html.escape(format_bytes(est.free_bytes))}</td>'
            f'<td><div style="width:{free_width}px;height:10px;border:1px solid {_GREEN}"></div></td></tr>'
        )
    share = 100 * est.trainable_params / max(est.total_params, 1)
    head = (
        f'<div class="modx-estimate-params">Parameters: <b>{est.total_params:,}</b> total, '
        f"<b>{est.trainable_params:,}</b> trainable ({share:.2f}%)</div>"
    )
    if est.fits is None:
        verdict = _coloured(
            f"Free memory on {est.device} is unknown (a GPU's is read only once torch is loaded): no verdict.", _GREY
        )
    elif est.fits:
        free = format_bytes(est.free_bytes or 0)
        verdict = _coloured(f"Fits: {format_bytes(est.total_bytes)} of {free} free.", _GREEN)
    else:
        verdict = ""  # the warning widget says it, next to the Apply fix button
    notes = "".join(f'<div style="color:{_GREY};font-size:90%">{html.escape(n)}</div>' for n in est.notes)
    table = f'<table class="modx-estimate-table" style="border-collapse:collapse">{"".join(rows)}</table>'
    return head + table + (f"<div>{verdict}</div>" if verdict else "") + notes


class ToolsPanel(widgets.VBox):
    """Memory estimate, export buttons and LLaMA-Factory import for the task in `context()`.

    Results are kept as attributes for notebooks and tests: `estimate` (the last
    MemoryEstimate or None), `estimate_note` (why there is none), `export_error`,
    `import_error`.  `wait()` blocks until background work has settled.
    """

    def __init__(self, context: Callable[[], ToolsContext], *, debounce: float = 0.15) -> None:
        self._context = context
        self._callbacks: list[ImportCallback] = []
        self.estimate: MemoryEstimate | None = None
        self.estimate_note: str | None = None
        self._estimate_type: str | None = None  # training type the shown estimate was made for
        self.export_error: str | None = None
        self.import_error: str | None = None
        self._shown_export = ""  # the export text as produced (the text area reverts edits to it)
        self._estimator = _Latest("modx-tools-estimate", self._run_estimate, delay=debounce)
        self._exporter = _Latest("modx-tools-export", self._run_export)

        # (1) memory estimate
        self.estimate_view = widgets.HTML("")
        self.estimate_view.add_class("modx-estimate")
        self.estimate_warning = widgets.HTML("", layout=widgets.Layout(display="none"))
        self.estimate_warning.add_class("modx-estimate-warning")
        self.apply_button = widgets.Button(
            description="Apply fix", icon="wrench", button_style="warning",
            layout=widgets.Layout(display="none", width="auto"),
        )
        self.apply_button.add_class("modx-apply-fix")
        self.apply_button.on_click(lambda _b: self.apply_fix())
        estimate_box = widgets.VBox([
            widgets.HTML("<b>Memory estimate</b>"), self.estimate_view,
            widgets.HBox([self.estimate_warning, self.apply_button]),
        ])
        estimate_box.add_class("modx-estimate-section")

        # (2) export
        self.export_buttons: dict[str, widgets.Button] = {}
        for kind, label in EXPORTS.items():
            button = widgets.Button(description=label, layout=widgets.Layout(width="auto"))
            button.add_class(f"modx-export-{kind}")
            button.on_click(lambda _b, kind=kind: self.export(kind))
            self.export_buttons[kind] = button
        self.launcher = widgets.Dropdown(
            options=list(LAUNCHERS), value=LAUNCHERS[0], description="launcher",
            layout=widgets.Layout(width="16em"),
        )
        self.launcher.add_class("modx-export-launcher")
        self.export_status = widgets.HTML("")
        self.export_status.add_class("modx-export-status")
        self.export_text = widgets.Textarea(
            "", placeholder="Press an export button; the text appears here to copy.",
            layout=widgets.Layout(width="100%", height="16em"),
        )
        self.export_text.add_class("modx-export-text")
        self.export_text.observe(self._keep_read_only, names="value")
        self.export_note = widgets.HTML("")
        self.export_note.add_class("modx-export-note")
        export_box = widgets.VBox([
            widgets.HTML("<b>Export</b>"),
            widgets.HBox([*self.export_buttons.values(), self.launcher, self.export_status]),
            self.export_note, self.export_text,
        ])
        export_box.add_class("modx-export-section")

        # (3) import
        self.import_text = widgets.Textarea(
            "", placeholder="Paste a LLaMA-Factory training YAML (llamafactory-cli train ...) here.",
            layout=widgets.Layout(width="100%", height="10em"),
        )
        self.import_text.add_class("modx-import-text")
        self.import_button = widgets.Button(description="Import", icon="upload", layout=widgets.Layout(width="auto"))
        self.import_button.add_class("modx-import-button")
        self.import_button.on_click(lambda _b: self.import_yaml())
        self.import_message = widgets.HTML("")
        self.import_message.add_class("modx-import-message")
        import_box = widgets.VBox([
            widgets.HTML("<b>Import a LLaMA-Factory YAML</b>"), self.import_text,
            widgets.HBox([self.import_button]), self.import_message,
        ])
        import_box.add_class("modx-import-section")

        super().__init__([estimate_box, export_box, import_box])
        self.add_class("modx-tools")

    # -- public actions ---------------------------------------------------------------------
    def on_import(self, callback: ImportCallback) -> None:
        """Register `callback(values, training_type, not_carried)`: called on Import (complete
        values) and on Apply fix (only the changed values, `not_carried` empty)."""
        self._callbacks.append(callback)

    def refresh(self) -> None:
        """Re-estimate memory for the current context in the background (returns at once)."""
        self._estimator.submit()

    def export(self, kind: str) -> None:
        """Fill the export text with `kind` (a key of EXPORTS) in the background (returns at once)."""
        if kind not in EXPORTS:
            raise ValueError(f"export kind must be one of {', '.join(EXPORTS)}, got {kind!r}")
        self.export_status.value = _coloured(f"Preparing {EXPORTS[kind]}...", _GREY)
        self._exporter.submit((kind, self.launcher.value))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the estimate and export in progress are done; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        for worker in (self._estimator, self._exporter):
            left = None if end is None else max(end - time.monotonic(), 0.0)
            if not worker.wait(left):
                return False
        return True

    @property
    def busy(self) -> bool:
        return self._estimator.busy or self._exporter.busy

    def apply_fix(self) -> dict[str, Any] | None:
        """Hand the shown estimate's fix to the import callbacks; returns the value changes
        (None when there is nothing to apply)."""
        est = self.estimate
        if est is None or not est.fixes or self._estimate_type is None:
            return None
        changes: dict[str, Any] = {}
        for fix in est.fixes:  # later steps supersede earlier ones on the same keys
            changes.update(fix.changes)
        if not self._callbacks:
            message = "Nothing receives the fix (no on_import callback is registered)."
            self.estimate_warning.value = _coloured(message, _RED)
            return None
        self.apply_button.layout.display = "none"
        if not self._hand_back(dict(changes), self._estimate_type, [], self.estimate_warning):
            return None
        self.refresh()
        return changes

    def import_yaml(self, text: str | None = None) -> tuple[dict[str, Any], str, list[str]] | None:
        """Read a LLaMA-Factory YAML (the import box unless `text` is given) and hand its values
        to the callbacks; returns (values, training_type, not_carried), None on error."""
        text = self.import_text.value if text is None else text
        if not text.strip():
            self._show_import_error("Paste a LLaMA-Factory training YAML into the box first.")
            return None
        try:
            values, training_type, not_carried = from_llamafactory_yaml(text)
        except ExportError as exc:
            self._show_import_error(f"Cannot import: {exc}")
            return None
        if not self._callbacks:
            self._show_import_error("Nothing receives imported values (no on_import callback is registered).")
            return None
        if not self._hand_back(values, training_type, list(not_carried), self.import_message):
            self.import_error = "the form refused the imported values"
            return None
        self.import_error = None
        listed = "".join(f"<li>{html.escape(n)}</li>" for n in not_carried)
        self.import_message.value = (
            _coloured(f"Imported a {training_type} task.", _GREEN)
            + (f"<div>Not carried over:</div><ul>{listed}</ul>" if listed else " Everything carried over.")
        )
        return values, training_type, list(not_carried)

    # -- hand-back --------------------------------------------------------------------------
    def _hand_back(self, values: dict[str, Any], training_type: str, notes: list[str], where: widgets.HTML) -> bool:
        """Call every import callback; a refusal (e.g. set_values raising) is shown in `where`."""
        for callback in list(self._callbacks):
            try:
                callback(dict(values), training_type, list(notes))
            except Exception as exc:  # noqa: BLE001 - shown next to the button that caused it
                where.value = _coloured(f"The form did not take the values: {exc}", _RED)
                where.layout.display = None
                return False
        return True

    def _show_import_error(self, message: str) -> None:
        self.import_error = message
        self.import_message.value = _coloured(message, _RED)

    # -- estimate (background thread) --------------------------------------------------------
    def _run_estimate(self, _request: Any) -> None:
        try:
            ctx = self._context()
            model_path = str(ctx.values.get("model_path") or "").strip()
            if not model_path:
                self._show_estimate(None, "Set model_path to see the parameter count and a memory estimate.", None)
                return
            est = estimate_memory(
                model_path, dict(ctx.values), ctx.training_type, ctx.device_free_bytes, device=ctx.device or "auto"
            )
        except EstimateError as exc:
            self._show_estimate(None, f"No memory estimate: {exc}", None)
        except Exception as exc:  # noqa: BLE001 - a thread has nobody to raise to; say it in the panel
            self._show_estimate(None, f"No memory estimate: {exc or type(exc).__name__}", None)
        else:
            self._show_estimate(est, None, ctx.training_type)

    def _show_estimate(self, est: MemoryEstimate | None, note: str | None, training_type: str | None) -> None:
        self.estimate, self.estimate_note, self._estimate_type = est, note, training_type
        with self.hold_sync():
            if est is None:
                self.estimate_view.value = _coloured(note or "", _GREY)
            else:
                self.estimate_view.value = estimate_html(est)
            warning = est.warning if est is not None and est.fits is False else None
            self.estimate_warning.value = _coloured(warning, _RED) if warning else ""
            self.estimate_warning.layout.display = None if warning else "none"
            fixes = est.fixes if warning and est is not None else ()
            self.apply_button.tooltip = "; ".join(f.description for f in fixes)
            self.apply_button.layout.display = None if fixes else "none"

    # -- export (background thread) ----------------------------------------------------------
    def _run_export(self, request: tuple[str, str]) -> None:
        kind, launcher = request
        try:
            ctx = self._context()
            text, note = self._produce(kind, launcher, ctx)
        except Exception as exc:  # noqa: BLE001 - ExportError and StoreError are messages for the user
            self.export_error = str(exc) or type(exc).__name__
            self._set_export("", "")
            self.export_status.value = _coloured(f"{EXPORTS[kind]}: {self.export_error}", _RED)
        else:
            self.export_error = None
            self._set_export(text, note)
            self.export_status.value = _coloured(f"{EXPORTS[kind]} ready", _GREEN)

    def _produce(self, kind: str, launcher: str, ctx: ToolsContext) -> tuple[str, str]:
        """(text, note as HTML) for one export of the context's task."""
        values = dict(ctx.values)
        if kind == "yaml":
            text, not_carried = to_llamafactory_yaml(values, ctx.training_type)
            if not not_carried:
                return text, _coloured("Every setting of this task carries over to LLaMA-Factory.", _GREY)
            listed = "".join(f"<li>{html.escape(n)}</li>" for n in not_carried)
            return text, f"<div>Not carried over to LLaMA-Factory:</div><ul>{listed}</ul>"
        if kind == "json":
            text = training_arguments_json(values, ctx.training_type, device=ctx.device or "auto")
            note = f"What transformers.TrainingArguments gets on this machine (device {ctx.device})."
            return text, _coloured(note, _GREY)
        record = self._record(ctx)
        if kind == "script":
            note = "Save as a .py file and run it with python: it needs transformers, peft and datasets only."
            script = to_python_script(record) if record is not None else to_python_script(values, ctx.training_type)
            return script, _coloured(note, _GREY)
        if record is None or not ctx.task_name:
            raise ExportError("the command runs a task saved in the workspace: create or select a task first")
        text = to_cli_command(record, ctx.workspace_root, launcher=launcher)
        return text, _coloured(self._command_note(ctx), _GREY)

    @staticmethod
    def _record(ctx: ToolsContext) -> Any:
        """A TaskRecord of the form's current values (name and device go into the script and command)."""
        from ..store.records import TaskRecord

        if not ctx.task_name:
            return None
        return TaskRecord(
            name=ctx.task_name, training_type=ctx.training_type, template=None,
            device=ctx.device or "auto", values=dict(ctx.values),
        )

    @staticmethod
    def _command_note(ctx: ToolsContext) -> str:
        from ..store import Workspace

        saved = (Workspace(ctx.workspace_root).task_dir(str(ctx.task_name)) / "task.json").is_file()
        where = "" if saved else " (not saved yet: Start saves it)"
        return f"The command trains task {ctx.task_name!r}{where} as saved in the workspace, not the unsaved form."

    def _set_export(self, text: str, note: str) -> None:
        with self.hold_sync():
            self._shown_export = text
            self.export_text.value = text
            self.export_note.value = note

    def _keep_read_only(self, change: dict[str, Any]) -> None:
        """Edits typed into the export box are reverted: it shows what the exporter produced."""
        if change["new"] != self._shown_export:
            self.export_text.value = self._shown_export
