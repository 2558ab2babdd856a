"""The PrepareWidget as a user sees it in the page: locators and actions on its CSS hooks.

Only stable hooks are used: the `modx-*` classes the widget adds with `add_class`, the parameter
keys and labels from the schema, and button captions.  The same helpers serve JupyterLab, Notebook 7
and Voila because the widget's DOM is identical in all three.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from _frontends import line_points, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

ROOT = ".modx-prepare"


class PreparePage:
    def __init__(self, page: Page) -> None:
        self.page = page

    # -- the widget as a whole ------------------------------------------------------------
    @property
    def root(self) -> Locator:
        return self.page.locator(ROOT).first

    def wait_rendered(self, timeout_s: float = 60) -> "PreparePage":
        self.page.wait_for_selector(f"{ROOT} .modx-task-panel", state="visible", timeout=timeout_s * 1000)
        return self

    def button(self, caption: str) -> Locator:
        """A button of the widget by its caption ('Start', 'Stop', 'Reset', 'Config Params', 'New task')."""
        return self.root.locator("button", has_text=re.compile(rf"^\s*{re.escape(caption)}\s*$")).first

    def click(self, caption: str) -> None:
        button = self.button(caption)
        wait_until(button.is_enabled, 30, f"the {caption!r} button to be enabled")
        button.click()

    def message(self) -> str:
        """The message line under Start/Stop (what the last action said)."""
        return self.root.locator(".modx-message").first.inner_text()

    # -- tasks ----------------------------------------------------------------------------
    def task_name(self) -> str:
        return self.root.locator(".modx-task-name input").first.input_value()

    def task_state(self, name: str) -> str | None:
        """The status tag of task `name` in the task list (None while it is not listed)."""
        row = self.root.locator(".modx-task-row", has=self.page.locator("button", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$")))
        if not row.count():
            return None
        return row.first.locator(".modx-status-badge").first.get_attribute("data-state")

    def wait_task_state(self, name: str, state: str, timeout_s: float) -> None:
        wait_until(lambda: self.task_state(name) == state, timeout_s, f"task {name} to be {state}", every_s=0.5)

    # -- monitor --------------------------------------------------------------------------
    def monitor_state(self) -> str | None:
        badge = self.root.locator(".modx-monitor .modx-status-badge").first
        return badge.get_attribute("data-state") if badge.count() else None

    def loss_points(self) -> int:
        """Points on the raw training-loss line (the loss chart's first mark)."""
        return line_points(self.page, f"{ROOT} .modx-loss-chart")

    def progress_text(self) -> str:
        loc = self.root.locator(".modx-progress-text").first
        return loc.inner_text() if loc.count() else ""

    # -- parameter form -------------------------------------------------------------------
    def open_config(self) -> None:
        """Open the Config Params drawer (a toggle: only clicked when it is closed)."""
        drawer = self.root.locator(".modx-drawer").first
        if not drawer.is_visible():
            self.button("Config Params").click()
        drawer.wait_for(state="visible")

    def section_titles(self) -> list[str]:
        tabs = self.root.locator(".modx-param-form .lm-TabBar-tab .lm-TabBar-tabLabel")
        return [t.strip() for t in tabs.all_inner_texts()]

    def select_section(self, title: str) -> None:
        self.root.locator(".modx-param-form .lm-TabBar-tab", has_text=re.compile(rf"^\s*{re.escape(title)}\s*$")).click()

    def fold(self, section: str, fold: str) -> Locator:
        """The accordion of fold group `fold` (e.g. 'Advanced') inside section `section` (e.g. 'training')."""
        return self.root.locator(f".modx-section-{section} .modx-fold-{fold}").first

    def fold_is_open(self, section: str, fold: str) -> bool:
        return self.fold(section, fold).locator(".jupyter-widget-Collapse-open").count() > 0

    def open_fold(self, section: str, fold: str) -> None:
        self.fold(section, fold).locator(".jupyter-widget-Collapse-header").first.click()

    def field(self, key: str) -> Locator:
        """The control of parameter `key` (the element carrying `modx-param-<key>`)."""
        return self.root.locator(f".modx-param-{key}").first

    def field_message(self, key: str) -> Locator:
        """The error/warning line in the same row as the control of `key`."""
        return self.root.locator(f".widget-hbox:has(> .modx-param-{key}) > .modx-field-message").first

    def set_field(self, key: str, text: str) -> None:
        """Type `text` into the control of `key` and commit it (Enter), as a user does."""
        box = self.field(key).locator("input").first
        box.fill(text)
        box.press("Enter")

    def problem_summary(self) -> str:
        """The list of problems shown near Start (empty when there is none)."""
        loc = self.root.locator(".modx-summary")
        texts = [loc.nth(i).inner_text() for i in range(loc.count()) if loc.nth(i).is_visible()]
        return "\n".join(t for t in texts if t.strip())

    def set_training_type(self, value: str, label: str) -> None:
        """Pick `value` in the basic config's training-type drop-down (found by its schema label)."""
        row = self.root.locator(".modx-task-panel .widget-hbox", has_text=label).first
        row.locator("select").select_option(value)


def start_and_watch_live(prep: PreparePage, no_cell_executing, *, start_timeout_s: float = 120,
                         run_timeout_s: float = 300, on_running=None) -> str:
    """Press Start on the task on screen and prove, from the page alone, that it trains live:
    its tag and the monitor's badge turn Running, the loss line gains points while no cell is
    executing, and both end Completed.  Returns the task name."""
    task = prep.task_name()
    assert prep.task_state(task) == "Pending", f"the quickstart task should start Pending, not {prep.task_state(task)}"
    prep.click("Start")
    prep.wait_task_state(task, "Running", start_timeout_s)
    wait_until(lambda: prep.monitor_state() in ("Running", "Completed"), 30, "the monitor badge to follow the run")
    # The first point needs transformers imported and the model loaded; later ones come every step.
    first = wait_until(prep.loss_points, start_timeout_s, "the first loss point", every_s=0.2)
    wait_until(lambda: no_cell_executing() and prep.loss_points() > first, 60,
               "the loss line to gain points while no cell is executing", every_s=0.2)
    if on_running is not None:
        on_running()
    prep.wait_task_state(task, "Completed", run_timeout_s)
    wait_until(lambda: prep.monitor_state() == "Completed", 30, "the monitor badge to say Completed")
    return task
