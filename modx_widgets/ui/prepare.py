"""PrepareWidget: the Prepare page, and the only module that wires the rooms together.

Left: basic config and the task list (`tasks.py`).  Right: Config Params (a drawer holding
the schema-generated form), Start / Stop / Reset, a summary of what blocks Start, the
environment check, the expected number of checkpoints, and the live monitor.

The buttons call the same public methods a script calls (`start()`, `select_task()`, ...),
so there is one code path.  Values flow one way: form -> values dict -> validate -> errors
-> form labels and summary.  Anything slow (probing GPUs, counting data lines, checking the
environment, importing transformers) happens in background threads so that constructing
the widget stays fast and the kernel stays responsive.
"""

from __future__ import annotations

import html
import math
import os
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Mapping

import ipywidgets as widgets

from ..config.validate import validate
from ..events import FINAL_STATES
from ..schema.spec import load_schema
from ..store import Workspace
from ..store import StoreError, name_problem
from ..store.names import same_name
from .form import ERROR_COLOUR, ParamForm
from .monitor import RunMonitor
from .tasks import BASE_DEVICES, MESSAGE_COLOURS, TaskActions, TaskPanel

__all__ = ["PrepareWidget", "StartRefused", "estimate_total_steps", "estimate_checkpoints"]


class StartRefused(ValueError):
    """Start was refused; `.errors` maps each problem's key (a parameter, `task_name`,
    `env:<check>`, `run` ...) to its message, all of them at once."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        listed = "\n".join(f"  - {key}: {message}" for key, message in self.errors.items())
        super().__init__(f"cannot start, {len(self.errors)} problem(s) to fix first:\n{listed}")


# -- estimates ------------------------------------------------------------------------------


def estimate_total_steps(values: Mapping[str, Any], examples: int, devices: int = 1) -> int:
    """Optimizer steps the Trainer will take for `examples` usable training examples.

    Mirrors the Trainer's arithmetic (a partial accumulation at the end of an epoch still
    counts as a step); `values` must be complete, as validate() returns them."""
    if values["max_steps"] > 0:
        return int(values["max_steps"])
    n = examples
    if values["max_samples"] > 0:
        n = min(n, values["max_samples"])
    if not values.get("eval_file") and values["eval_split_ratio"] > 0:
        n -= math.ceil(n * values["eval_split_ratio"])
    if n <= 0:
        return 0
    batches = math.ceil(n / (values["per_device_train_batch_size"] * max(devices, 1)))
    per_epoch = max(math.ceil(batches / values["gradient_accumulation_steps"]), 1)
    return math.ceil(values["num_train_epochs"] * per_epoch)


def estimate_checkpoints(values: Mapping[str, Any], examples: int, devices: int = 1) -> int:
    """Checkpoints on disk at the end: total steps / save steps (or one per epoch), capped by
    save_total_limit.  Time-based saves (save_interval_minutes) come on top and are not counted."""
    total = estimate_total_steps(values, examples, devices)
    strategy = values["save_strategy"]
    if strategy == "no" or total == 0:
        return 0
    if strategy == "epoch":
        if values["max_steps"] > 0:
            per_epoch = estimate_total_steps({**values, "max_steps": -1, "num_train_epochs": 1}, examples, devices)
            count = math.ceil(total / per_epoch) if per_epoch else 0
        else:
            count = int(values["num_train_epochs"])
    else:
        count = total // values["save_steps"]
    return min(count, values["save_total_limit"])


# -- background work ------------------------------------------------------------------------


class _Latest:
    """Run `fn(*args)` in a daemon thread with the most recent arguments.  Requests made while
    it runs collapse into a single rerun, so a burst of edits costs at most two runs."""

    def __init__(self, fn: Callable[..., None], on_error: Callable[[BaseException], None]) -> None:
        self._fn = fn
        self._on_error = on_error
        self._lock = threading.Lock()
        self._args: tuple[Any, ...] | None = None
        self._thread: threading.Thread | None = None

    def request(self, *args: Any) -> None:
        with self._lock:
            self._args = args
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="modx-prepare-bg")
                self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                args, self._args = self._args, None
                if args is None:
                    self._thread = None
                    return
            try:
                self._fn(*args)
            except Exception as exc:  # noqa: BLE001 - shown in the widget, never lost in a thread
                self._on_error(exc)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until idle; True when nothing is left to do."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return True
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if thread.is_alive():
                return False


def _html_lines(lines: list[tuple[str, str]]) -> str:
    """(level, text) pairs as coloured lines."""
    return "<br>".join(
        f'<span style="color:{MESSAGE_COLOURS.get(level, MESSAGE_COLOURS["info"])}" class="modx-{level}">'
        f"{html.escape(text)}</span>"
        for level, text in lines
    )


# -- the widget -----------------------------------------------------------------------------


class PrepareWidget(widgets.VBox):
    """The Prepare page: create, select and delete tasks, choose templates, fill the folded
    parameter form, see what blocks Start, then Start / Stop / Reset with a live monitor.

    Every button has a method twin with the same effect, for scripts and tests."""

    def __init__(self, workspace: Workspace | str | os.PathLike[str] | None = None) -> None:
        from ..run import warmup_imports

        warmup_imports()
        self._ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self._schema = load_schema()
        self._lock = threading.RLock()
        self._syncing = 0  # >0 while the widget itself writes the basic-config controls
        self._loaded: str | None = None  # task whose record is on screen (None: an unsaved draft)
        self._auto_name: str | None = None  # the generated name, to regenerate it until edited
        self._template: str | None = None
        self._run: Any = None  # the TrainingRun this widget follows
        self._run_task: str | None = None
        self._errors: dict[str, str] = {}
        self._warnings: list[tuple[str, str]] = []
        self._clean: dict[str, Any] = {}
        self._examples: dict[tuple[str, float, str], int | str] = {}
        self._gpu_count = 0
        self._env_generation = 0

        self._panel = TaskPanel(
            TaskActions(
                select=self.select_task,
                delete=self.delete_task,
                new=self.new_task,
                load_template=self.load_template,
                save_template=self.save_template,
                delete_template=self.delete_template,
            ),
            self._schema,
        )
        self._form = ParamForm(self._panel.training_type.value, self._schema)
        self._build_right()
        super().__init__(
            [widgets.HBox([self._panel, self._right], layout=widgets.Layout(align_items="flex-start"))]
        )
        self.add_class("modx-prepare")

        self._env_worker = _Latest(self._check_environment_bg, self._background_failed)
        self._data_worker = _Latest(self._count_examples_bg, self._background_failed)
        self._device_worker = _Latest(self._warm_up_bg, self._background_failed)

        self._form.on_change(self._on_values_changed)
        self._panel.training_type.observe(self._on_training_type, names="value")
        self._panel.template.observe(self._on_template_picked, names="value")
        self._panel.task_name.observe(lambda _c: self._refresh(), names="value")
        self._panel.device.observe(lambda _c: self._refresh(), names="value")

        self._refresh_templates()
        self._refresh_tasks()
        if not self._reattach():
            self._new_draft(self._schema.basic_param("training_type").default)
        self._device_worker.request()

    # -- layout -----------------------------------------------------------------------------
    def _build_right(self) -> None:
        self._config_button = widgets.ToggleButton(
            description="Config Params", icon="sliders", tooltip="Show or hide the parameter drawer"
        )
        self._start_button = widgets.Button(description="Start", icon="play", button_style="success")
        self._stop_button = widgets.Button(description="Stop", icon="stop", button_style="warning", disabled=True)
        self._reset_button = widgets.Button(
            description="Reset", icon="undo", tooltip="Put back the selected template's values"
        )
        self._start_button.on_click(lambda _b: self._click(self.start))
        self._stop_button.on_click(lambda _b: self._click(self.stop))
        self._reset_button.on_click(lambda _b: self._click(self.reset))
        self._summary = widgets.HTML("")
        self._summary.add_class("modx-summary")
        for button, css in (
            (self._config_button, "modx-config-button"),
            (self._start_button, "modx-start"),
            (self._stop_button, "modx-stop"),
            (self._reset_button, "modx-reset"),
        ):
            button.add_class(css)
        self._message = widgets.HTML("")
        self._message.add_class("modx-message")
        self._env = widgets.HTML('<span style="color:#666">Environment check: running...</span>')
        self._env.add_class("modx-envcheck")
        self._checkpoints = widgets.HTML("")
        self._checkpoints.add_class("modx-checkpoints")
        from .inspector import DataInspector

        self._inspector = DataInspector(self._inspect_request, self._apply_length)
        from .tools import ToolsContext, ToolsPanel

        self._tools = ToolsPanel(
            lambda: ToolsContext(
                values=self._form.values,
                training_type=self.training_type,
                task_name=self.task_name or None,
                workspace_root=self._ws.root,
                device=self.device,
            )
        )
        self._tools.on_import(self._on_tools_values)
        self._tools_box = widgets.Accordion([self._tools], titles=("Memory estimate, export and import",))
        self._tools_box.add_class("modx-tools-box")
        self._drawer = widgets.VBox([self._form], layout=widgets.Layout(display="none"))
        self._drawer.add_class("modx-drawer")
        self._config_button.observe(self._on_drawer_toggle, names="value")
        # The monitor (bqplot, pandas: ~1 s to import cold) is built the first time a run or a
        # history needs it; until then its slot is empty and the import warms up in the background.
        self._monitor: RunMonitor | None = None
        self._monitor_slot = widgets.VBox()
        self._right = widgets.VBox(
            [
                widgets.HBox([self._config_button, self._start_button, self._stop_button, self._reset_button]),
                self._summary,
                self._message,
                self._checkpoints,
                self._env,
                self._inspector,
                self._tools_box,
                self._drawer,
                self._monitor_slot,
            ],
            layout=widgets.Layout(flex="1 1 auto"),
        )

    def _on_drawer_toggle(self, change: Mapping[str, Any]) -> None:
        self._drawer.layout.display = None if change["new"] else "none"

    def open_config(self, open: bool = True) -> None:
        """Show (or hide) the Config Params drawer."""
        self._config_button.value = open

    def _click(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except ValueError:
            pass  # already shown in the widget by the action itself
        except Exception as exc:  # noqa: BLE001 - a click handler has nobody to raise to
            self._say(f"{type(exc).__name__}: {exc}", "error")

    def _say(self, text: str, level: str = "info") -> None:
        """The one writer of the message line under Start."""
        value = _html_lines([(level, text)]) if text else ""
        if self._message.value != value:
            self._message.value = value

    # -- simple properties ------------------------------------------------------------------
    @property
    def workspace(self) -> Workspace:
        return self._ws

    @property
    def form(self) -> ParamForm:
        return self._form

    @property
    def monitor(self) -> RunMonitor:
        """The live/history view under the buttons (created on first use)."""
        with self._lock:
            if self._monitor is None:
                self._monitor = RunMonitor()
                self._monitor_slot.children = [self._monitor]
            return self._monitor

    @property
    def training_type(self) -> str:
        return self._panel.training_type.value

    @training_type.setter
    def training_type(self, value: str) -> None:
        options = self._panel.training_type.options
        if value not in options:
            raise ValueError(f"training type must be one of {', '.join(options)} (got {value!r})")
        self._panel.training_type.value = value

    @property
    def task_name(self) -> str:
        return self._panel.task_name.value.strip()

    @task_name.setter
    def task_name(self, value: str) -> None:
        self._panel.task_name.value = value

    @property
    def device(self) -> str:
        return self._panel.device.value

    @device.setter
    def device(self, value: str) -> None:
        self._panel.ensure_device(value)
        self._panel.device.value = value

    @property
    def temporary(self) -> bool:
        """The "Temporary template" box: when on, Start leaves the selected template untouched."""
        return self._panel.temporary.value

    @temporary.setter
    def temporary(self, value: bool) -> None:
        self._panel.temporary.value = bool(value)

    @property
    def detached(self) -> bool:
        """The "Detached run" box: when on, Start trains in a separate process that outlives the
        kernel (device "all" always does, one process per GPU)."""
        return self._panel.detached.value

    @detached.setter
    def detached(self, value: bool) -> None:
        self._panel.detached.value = bool(value)

    @property
    def template(self) -> str | None:
        return self._template

    @property
    def values(self) -> dict[str, Any]:
        """Every parameter's value as shown in the form."""
        return self._form.values

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Change some parameters (unknown keys or wrongly typed values raise ValueError and
        change nothing; out-of-range values are kept and shown as errors)."""
        self._form.set_values(values)

    @property
    def errors(self) -> dict[str, str]:
        """What would stop Start right now, by key (from validation of the current values)."""
        return dict(self._errors)

    @property
    def warnings(self) -> list[tuple[str, str]]:
        return list(self._warnings)

    @property
    def tasks(self) -> list[tuple[str, str]]:
        """(name, status) of every task in the workspace."""
        return [(t.name, t.state) for t in self._ws.list_tasks()]

    @property
    def templates(self) -> list[str]:
        return self._ws.templates()

    @property
    def status(self) -> str | None:
        """State of the task on screen; None while it is an unsaved draft."""
        name = self._loaded
        if name is None:
            return None
        if self._run is not None and self._run_task == name:
            return self._run.state
        try:
            return self._ws.read_status(name).state
        except StoreError:
            return None

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.is_alive()

    # -- data inspector ---------------------------------------------------------------------
    @property
    def inspector(self) -> Any:
        """The "Inspect data" panel (`ui.inspector.DataInspector`)."""
        return self._inspector

    def inspect_data(self, wait: float | None = 0) -> Any:
        """Inspect the training data with the current values in the background; with `wait`
        (seconds, None: until done) return the `DataInspection` (None while busy or on error)."""
        self._inspector.inspect()
        if wait is None or wait > 0:
            return self._inspector.wait(wait)
        return None

    def _inspect_request(self) -> tuple[dict[str, Any], str]:
        return validate(self._form.values, self.training_type, check_paths=False).values, self.training_type

    def _apply_length(self, length: int) -> None:
        self.set_values({"max_seq_length": length})

    # -- the refresh loop: values -> validate -> errors -> labels ---------------------------
    def _on_values_changed(self, changed: set[str]) -> None:
        if self._syncing:
            return
        self._refresh()
        if self.running and self._run_task == self._loaded:
            self._say("Changes apply to the next run of this task; the running one keeps its settings.", "warning")

    def _task_name_problem(self) -> str | None:
        name = self.task_name
        problem = name_problem(name, "task")
        if problem:
            return problem
        if name != self._loaded and any(same_name(name, t) for t in self._panel.task_names):
            return f"a task named {name!r} already exists: select it in the task list or choose another name"
        return None

    def _refresh(self) -> None:
        """Validate what is on screen and show every problem where it belongs."""
        if self._syncing:
            return
        result = validate(self._form.values, self.training_type, check_paths=True)
        errors = dict(result.errors)
        problem = self._task_name_problem()
        if problem:
            errors["task_name"] = problem
        self._errors = errors
        self._warnings = list(result.warnings)
        self._clean = result.values
        loose = self._form.show_problems(errors, result.warnings)
        self._show_summary(errors, loose)
        self._update_estimate()
        self._request_env_check()
        self._tools.refresh()

    def _on_tools_values(self, values: Mapping[str, Any], training_type: str, not_carried: list[str]) -> None:
        """Values from an imported LLaMA-Factory YAML or an applied memory fix go into the form."""
        if training_type != self.training_type:
            self.training_type = training_type
        self.set_values(dict(values))
        if not_carried:
            self._panel.say(f"Imported; not carried over: {', '.join(not_carried)}", "warning")

    def _label(self, key: str) -> str:
        if key in self._schema.params:
            return self._schema.param(key).label
        try:
            return self._schema.basic_param(key).label
        except KeyError:
            return key

    def _show_summary(self, errors: Mapping[str, str], loose: list[str]) -> None:
        lines = [("error", f"{self._label(k)}: {m}") for k, m in errors.items()]
        lines += [("warning", text) for text in loose]
        head = (
            f'<b style="color:{ERROR_COLOUR}">{len(errors)} problem(s) to fix before Start:</b><br>' if errors else ""
        )
        value = head + _html_lines(lines) if lines else ""
        if self._summary.value != value:
            self._summary.value = value

    # -- checkpoints estimate -----------------------------------------------------------------
    def _data_key(self) -> tuple[str, float, str] | None:
        path = self._clean.get("train_file")
        if not path or "train_file" in self._errors:
            return None
        try:
            return (str(path), os.stat(path).st_mtime, self.training_type)
        except OSError:
            return None

    def _estimate_text(self) -> str:
        key = self._data_key()
        if key is None:
            return "Expected checkpoints: known once the training data file is readable."
        if key not in self._examples:
            self._data_worker.request(key)
            return "Expected checkpoints: counting the training data..."
        count = self._examples[key]
        if isinstance(count, str):
            return f"Expected checkpoints: unknown ({count})"
        if set(self._errors) - {"task_name"}:
            return f"Training data: {count} usable example(s); checkpoints are estimated once the values are valid."
        devices = self._gpu_count if self.device == "all" else 1
        steps = estimate_total_steps(self._clean, count, devices)
        ckpts = estimate_checkpoints(self._clean, count, devices)
        rough = " (pre-training packs lines into blocks, so this is rough)" if self.training_type == "pretrain" else ""
        return (
            f"Expected checkpoints: {ckpts} ({steps} steps from {count} usable example(s), "
            f"kept at most {self._clean['save_total_limit']}){rough}"
        )

    def _update_estimate(self) -> None:
        """The one writer of the estimate line (main thread on edits, data thread when counted)."""
        with self._lock:
            value = f'<span style="color:#444">{html.escape(self._estimate_text())}</span>'
            if self._checkpoints.value != value:
                self._checkpoints.value = value

    def _count_examples_bg(self, key: tuple[str, float, str]) -> None:
        path, _mtime, training_type = key
        try:
            from ..data import check_file

            count: int | str = check_file(path, training_type).usable
        except Exception as exc:  # noqa: BLE001 - DataError or anything else: the estimate says why
            count = str(exc)
        with self._lock:
            self._examples[key] = count
            if self._data_key() == key:
                self._update_estimate()

    # -- environment and devices ------------------------------------------------------------
    def _request_env_check(self) -> None:
        with self._lock:
            self._env_generation += 1
            self._env_worker.request(self._env_generation, dict(self._clean), self.training_type, self.device)

    def _check_environment_bg(self, generation: int, values: dict[str, Any], training_type: str, device: str) -> None:
        from ..envcheck import check_environment

        report = check_environment(values, training_type, device)
        with self._lock:
            if generation == self._env_generation:  # a newer check (or Start's own) wins
                self._show_env(report)

    def _show_env(self, report: Any) -> None:
        """The one writer of the environment line; callers hold the lock."""
        lines = [(item.level, f"{item.name}: {item.detail}") for item in report.items if item.level != "info"]
        state = "ready" if report.ok else "blocks Start"
        colour = "#2e7d32" if report.ok else ERROR_COLOUR
        detail = "; ".join(f"{i.name} {i.detail}" for i in report.items if i.level == "info")
        value = (
            f'<details><summary>Environment check: <b style="color:{colour}">{state}</b>'
            f'{" (" + str(len(lines)) + " note(s))" if lines else ""}</summary>'
            f'<span style="color:#666;font-size:85%">{html.escape(detail)}</span></details>'
            + _html_lines(lines)
        )
        if self._env.value != value:
            self._env.value = value

    def _warm_up_bg(self) -> None:
        """List the GPUs for the device picker, then pre-import the monitor's chart library."""
        self._probe_devices()
        import bqplot  # noqa: F401  (so the first Start or history does not pay for it)

    def _probe_devices(self) -> None:
        from ..envcheck import probe_gpus

        gpus = probe_gpus()
        options = list(BASE_DEVICES)
        if gpus.available:
            options += [(f"cuda:{i} ({name})", f"cuda:{i}") for i, name in enumerate(gpus.names)]
            if len(gpus.names) > 1:
                options.append((f"all GPUs ({len(gpus.names)})", "all"))
        self._gpu_count = len(gpus.names) if gpus.available else 0
        with self._lock:
            current = self.device
            if current not in [v for _, v in options]:
                options.append((current, current))  # a saved task's device stays visible (envcheck flags it)
            self._panel.set_devices(options)

    def _background_failed(self, exc: BaseException) -> None:
        self._say(f"background check failed: {type(exc).__name__}: {exc}", "warning")

    def settle(self, timeout: float | None = 30) -> bool:
        """Wait for the background checks (devices, data count, environment) to finish;
        scripts and tests use it before reading the estimate or the environment result."""
        ok = True
        for worker in (self._device_worker, self._data_worker, self._env_worker):
            ok = worker.join(timeout) and ok
        return ok

    # -- basic config observers -------------------------------------------------------------
    def _on_training_type(self, change: Mapping[str, Any]) -> None:
        self._form.training_type = change["new"]
        if not self._syncing and self._loaded is None and self.task_name == self._auto_name:
            self._set_name(self._ws.default_task_name(change["new"]))
        self._refresh()

    def _on_template_picked(self, change: Mapping[str, Any]) -> None:
        if self._syncing or change["new"] is None or change["new"] == self._template:
            return
        try:
            self.load_template(change["new"])
        except ValueError:
            pass

    def _set_name(self, name: str, auto: bool = True) -> None:
        self._auto_name = name if auto else None
        self._syncing += 1
        try:
            self._panel.task_name.value = name
        finally:
            self._syncing -= 1

    def _show_basic(self, *, training_type: str, template: str | None, device: str, temporary: bool) -> None:
        """Write the basic-config controls without triggering their observers' side effects."""
        self._syncing += 1
        try:
            self._panel.training_type.value = training_type
            self._form.training_type = training_type
            self._template = template
            self._panel.template.value = template if template in self._panel.template.options else None
            self._panel.ensure_device(device)
            self._panel.device.value = device
            self._panel.temporary.value = temporary
        finally:
            self._syncing -= 1

    def _put_values(self, values: Mapping[str, Any]) -> None:
        """Replace every value (missing keys get their default); the caller refreshes once."""
        self._syncing += 1
        try:
            self._form.set_values({**self._schema.defaults(), **values})
        finally:
            self._syncing -= 1

    # -- templates --------------------------------------------------------------------------
    def _refresh_templates(self) -> None:
        self._syncing += 1
        try:
            self._panel.set_templates(self._ws.templates())
            if self._template in self._panel.template.options:
                self._panel.template.value = self._template
        finally:
            self._syncing -= 1

    def _fail(self, exc: Exception) -> None:
        """Show a refused task/template action under the task list (the caller re-raises)."""
        self._panel.say(str(exc), "error")

    def load_template(self, name: str) -> None:
        """Fill the form with template `name` (its training type too)."""
        try:
            record = self._ws.load_template(name)
        except StoreError as exc:
            self._fail(exc)
            raise
        self._show_basic(training_type=record.training_type, template=record.name, device=self.device,
                         temporary=self.temporary)
        self._put_values(record.values)
        if self._loaded is None and self.task_name == self._auto_name:
            self._set_name(self._ws.default_task_name(record.training_type))
        self._panel.say(f"Loaded template {record.name!r}.")
        self._refresh()

    def save_template(self, name: str) -> None:
        """Save the current values and training type as user template `name` (overwrites a user
        template of that name; presets are refused)."""
        try:
            self._ws.save_template(name, self.training_type, self.values)
        except StoreError as exc:
            self._fail(exc)
            raise
        self._template = name
        self._refresh_templates()
        self._panel.save_as_name.value = ""
        self._panel.say(f"Saved template {name!r}.")

    def delete_template(self, name: str) -> None:
        """Delete user template `name` (presets are refused).  The form keeps its values."""
        try:
            self._ws.delete_template(name)
        except StoreError as exc:
            self._fail(exc)
            raise
        if self._template == name:
            self._template = self._preset_for(self.training_type)
        self._refresh_templates()
        self._panel.say(f"Deleted template {name!r}.")

    def _preset_for(self, training_type: str) -> str | None:
        for name in self._ws.templates():
            try:
                record = self._ws.load_template(name)
            except StoreError:
                continue
            if record.preset and record.training_type == training_type:
                return record.name
        return None

    def reset(self) -> None:
        """Put back the values of the selected template (or the schema defaults if it is gone)."""
        if self._template is None:
            self._put_values({})
            self._say("No template selected: reset to the default values.")
        else:
            try:
                record = self._ws.load_template(self._template)
            except StoreError as exc:
                self._say(str(exc), "error")
                raise
            self._put_values(record.values)
            self._say(f"Reset to the values of template {record.name!r}.")
        self._refresh()

    # -- tasks ------------------------------------------------------------------------------
    def _refresh_tasks(self) -> None:
        with self._lock:
            infos = self._ws.list_tasks()
            self._panel.set_tasks([(t.name, t.state, t.problem) for t in infos])
            self._panel.set_selected(self._loaded)

    def _new_draft(self, training_type: str) -> None:
        template = self._template
        if template is None or self._template_type(template) != training_type:
            template = self._preset_for(training_type)
        record = self._ws.load_template(template) if template else None
        self._loaded = None
        self._monitor_follow(None)
        self._show_basic(training_type=training_type, template=template, device=self.device, temporary=False)
        self._put_values(record.values if record else {})
        self._set_name(self._ws.default_task_name(training_type))
        self._panel.set_selected(None)
        self._refresh()

    def _template_type(self, name: str) -> str | None:
        try:
            return self._ws.load_template(name).training_type
        except StoreError:
            return None

    def new_task(self, training_type: str | None = None) -> str:
        """Create a new Pending task (named `{training_type}_{timestamp}`) from the template,
        select it, and return its name."""
        training_type = training_type or self.training_type
        if training_type not in self._panel.training_type.options:
            problem = f"training type must be one of {', '.join(self._panel.training_type.options)}"
            self._panel.say(problem, "error")
            raise ValueError(problem)
        self._new_draft(training_type)
        try:
            self._ws.create_task(
                self.task_name, training_type, self._template, self.device, self._clean_for_store(), self.temporary
            )
        except StoreError as exc:
            self._fail(exc)
            raise
        self._loaded = self.task_name
        self._auto_name = None
        self._refresh_tasks()
        self._panel.say(f"Created task {self._loaded!r}.")
        self._refresh()
        return self._loaded

    def _clean_for_store(self) -> dict[str, Any]:
        """Values as the store keeps them: validate()'s complete, coerced dict."""
        return validate(self._form.values, self.training_type, check_paths=False).values

    def select_task(self, name: str) -> None:
        """Show task `name`: its basic config and values, and its run (live or history)."""
        try:
            record = self._ws.load_task(name)
        except StoreError as exc:
            self._fail(exc)
            raise
        self._loaded = record.name
        template = record.template if record.template in self._ws.templates() else None
        self._show_basic(training_type=record.training_type, template=template, device=record.device,
                         temporary=record.temporary)
        self._put_values(record.values)
        self._set_name(record.name, auto=False)
        self._panel.set_selected(record.name)
        self._panel.say("" if template or record.template is None else
                        f"Template {record.template!r} of this task no longer exists; Reset uses the defaults.",
                        "warning")
        self._refresh()  # first, so the monitor picks up this task's log level
        self._follow_task(record.name)

    def _follow_task(self, name: str) -> None:
        """Attach the monitor to the task's live run, or show its history."""
        from ..run import active_run

        run = self._run if self._run_task == name and self._run is not None else active_run(self._ws.root, name)
        if run is not None and run.is_alive():
            self._adopt(run, name)
            return
        self._monitor_follow(None)
        try:
            status = self._ws.read_status(name)
            if status.state in FINAL_STATES:
                self.monitor.show_history(self._ws.read_events(name), status)
        except StoreError as exc:
            self._say(f"cannot show the history of {name!r}: {exc}", "warning")
        self._sync_buttons()

    def delete_task(self, name: str) -> None:
        """Delete a task that is not running (a running task is refused with a message)."""
        if self._run is not None and self._run_task == name and self._run.is_alive():
            problem = f"task {name!r} is running: stop it first, then delete it"
            self._panel.say(problem, "error")
            raise StoreError(problem)
        try:
            self._ws.delete_task(name)
        except StoreError as exc:
            self._fail(exc)
            raise
        self._panel.say(f"Deleted task {name!r}.")
        if self._loaded == name:
            self._new_draft(self.training_type)
        self._refresh_tasks()
        self._refresh()

    # -- running ----------------------------------------------------------------------------
    def _monitor_follow(self, run: Any, name: str | None = None, fresh: bool = False) -> None:
        """Point the monitor at `run` (None: an empty monitor).  A run already under way is
        joined with the events it has written so far, so re-attaching loses nothing."""
        if run is None:
            if self._monitor is not None:
                self._monitor.detach()
                self._monitor.clear()
        elif self.monitor.run is not run:
            history = None if fresh or name is None else (lambda: self._ws.read_events(name))
            self.monitor.attach(run, history=history, log_level=self._clean.get("log_level"))

    def _adopt(self, run: Any, name: str, fresh: bool = False) -> None:
        """Follow `run` of task `name`: its status updates the task tag, the monitor attaches."""
        if self._run is not run:
            if self._run is not None:
                self._run.remove_listener(self._on_run_event)
            self._run, self._run_task = run, name
            run.add_listener(self._on_run_event)
        self._monitor_follow(run, name, fresh)
        self._panel.set_state(name, run.state)
        self._sync_buttons()

    def _reattach(self) -> bool:
        """A new widget in a kernel where a task is training picks that run up again."""
        from ..run import active_run, local_run

        tasks = self._ws.list_tasks()
        # This kernel's runs first, by the registry: a run is registered before its thread starts,
        # while status.json may still say Pending for a moment.
        for info in tasks:
            if local_run(self._ws.root, info.name) is not None:
                self.select_task(info.name)
                return True
        for info in tasks:
            if info.state != "Running":
                continue
            run = active_run(self._ws.root, info.name)
            if run is not None and run.is_alive():
                self.select_task(info.name)
                return True
        return False

    def _on_run_event(self, event: Any) -> None:
        """Called from the training thread: only status changes matter here, and they are rare."""
        if getattr(event, "kind", None) != "status":
            return
        with self._lock:
            if self._run_task is not None:
                self._panel.set_state(self._run_task, event.state)
            # the thread is still alive while it reports its final state, so say it explicitly
            self._sync_buttons(running=event.state not in FINAL_STATES)
            if event.state in FINAL_STATES and self._loaded == self._run_task:
                self._say(f"Task {self._run_task!r} ended: {event.state}"
                          + (f" ({event.message})" if event.message else ""),
                          "error" if event.state == "Failed" else "info")

    def _sync_buttons(self, running: bool | None = None) -> None:
        """Start is off while this widget's run trains; Stop is on only when that run is on screen."""
        running = self.running if running is None else running
        following = running and self._run_task == self._loaded
        self._start_button.disabled = running
        self._stop_button.disabled = not following

    def _problems_for_start(self) -> dict[str, str]:
        """Everything that stops Start: validation, the task name, the environment, a busy run."""
        from ..envcheck import check_environment

        self._refresh()
        problems = dict(self._errors)
        if self.running:
            problems["run"] = f"task {self._run_task!r} is still running: stop it or wait for it first"
        with self._lock:
            self._env_generation += 1  # results of older background checks are now stale
            report = check_environment(self._clean, self.training_type, self.device)
            self._show_env(report)
        for item in report.errors:
            problems[f"env:{item.name}"] = item.detail
        return problems

    def start(self) -> None:
        """Validate, check the environment, save the task and start training in the background.

        Refuses with StartRefused (a ValueError listing *every* problem, also shown in the
        widget).  Form, name and environment problems are found before anything is written;
        the run's own deeper checks (bad data lines, model folder, checkpoint) need the saved
        task, so after those the task stays Pending with its values."""
        problems = self._problems_for_start()
        if problems:
            self._refuse(problems)
        name = self.task_name
        values = dict(self._clean)
        try:
            if self._loaded == name:
                record = self._ws.load_task(name)
                self._ws.save_task(replace(record, training_type=self.training_type, template=self._template,
                                           device=self.device, values=values, temporary=self.temporary))
            else:
                self._ws.create_task(name, self.training_type, self._template, self.device, values, self.temporary)
            note = self._template_note()
        except StoreError as exc:
            self._say(str(exc), "error")
            raise
        self._loaded, self._auto_name = name, None
        self._refresh_tasks()

        from ..run import RunBusy, TaskInvalid, TrainingRun
        from ..run.launch import SubprocessRun, needs_subprocess

        outside = needs_subprocess(self.device, self.detached)
        run = SubprocessRun(self._ws, name) if outside else TrainingRun(self._ws, name)
        try:
            run.start()  # the run room's own checks (data lines, model folder, resume) may refuse
        except (TaskInvalid, RunBusy) as exc:
            problems = dict(exc.problems) if isinstance(exc, TaskInvalid) else {"run": str(exc)}
            self._refuse({k or "task": m for k, m in problems.items()}, saved=name)
        self._adopt(run, name, fresh=True)
        self._panel.set_state(name, run.state)
        self._sync_buttons()
        where = " in a separate process (it keeps going if the kernel restarts)" if outside else ""
        self._say(f"Started task {name!r}{where}." + (f" {note}" if note else ""))

    def _template_note(self) -> str:
        """Without "Temporary template" the store writes the values back into a user template
        when the task is saved; say so, since it changes something outside the task."""
        if self.temporary or self._template is None:
            return ""
        try:
            if self._ws.load_template(self._template).preset:
                return ""
        except StoreError:
            return ""
        return f"Template {self._template!r} now holds these values (tick Temporary template to leave it alone)."

    def _refuse(self, problems: dict[str, str], saved: str | None = None) -> None:
        """Show every problem (beside its field and in the summary) and raise StartRefused."""
        self._form.show_problems(problems, self._warnings)
        self._show_summary(problems, [])
        where = f" Task {saved!r} is saved as Pending; fix them and press Start again." if saved else ""
        self._say(f"Start refused: {len(problems)} problem(s), listed above.{where}", "error")
        self._reveal_first(problems)
        raise StartRefused(problems)

    def _reveal_first(self, problems: Mapping[str, str]) -> None:
        first = next((k for k in problems if k in self._form.fields and self._form.is_visible(k)), None)
        if first is not None:
            self.open_config(True)
            self._form.reveal(first)

    def stop(self) -> None:
        """Ask the running task to stop; it saves a resumable checkpoint and ends Stopped.

        For a run in a separate process, pressing Stop again kills its processes at once (no
        checkpoint; the task ends Failed)."""
        if not self.running:
            self._say("Nothing is running.")
            return
        if getattr(self._run, "stopping", False):
            try:
                self._run.stop()  # second press: kill
            except RuntimeError as exc:
                self._say(str(exc), "error")
                raise
            self._say(f"Killed the processes of task {self._run_task!r}.", "warning")
            return
        self._run.stop()
        again = " Press Stop again to kill it at once." if hasattr(self._run, "kill") else ""
        self._say(f"Stopping task {self._run_task!r} (a checkpoint is saved first)...{again}")

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the followed run ends (or `timeout` s pass) and return its state."""
        if self._run is None:
            return self.status
        state = self._run.wait(timeout)
        with self._lock:
            self._panel.set_state(self._run_task, state)
            self._sync_buttons()
        return state
