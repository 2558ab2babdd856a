"""Issue 4 in JupyterLab: the quickstart task trains live in the page (badge, loss chart) while the
kernel is free, ends Completed, and a second task stopped from the Stop button ends Stopped."""

from __future__ import annotations

import pytest

from _frontends import NotebookPage, shot, wait_until, widget_error_texts
from _prepare_page import PreparePage, start_and_watch_live
from modx_widgets.schema.spec import load_schema

MAX_STEPS = load_schema().param("max_steps").maximum

# What a user would type to try Stop: a second task with the quickstart's values but a run far too
# long to finish on its own.
SECOND_TASK = f"""values = dict(studio.values)
second = studio.new_task("sft")
studio.set_values({{**values, "output_dir": str(DEMO / "runs" / second), "max_steps": {MAX_STEPS}}})
second"""


@pytest.fixture(scope="module")
def quickstart(module_lab, module_page) -> tuple[NotebookPage, PreparePage]:
    nb = NotebookPage(module_page, module_lab, "quickstart.ipynb").open()
    nb.run_all()
    assert nb.error_outputs() == []
    return nb, PreparePage(module_page).wait_rendered()


def test_start_trains_the_quickstart_task_live_until_completed(quickstart, module_console, artifacts):
    nb, prep = quickstart
    prep.root.locator(".modx-task-panel").scroll_into_view_if_needed()

    def while_running() -> None:
        prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
        shot(prep.page, artifacts, "lab_training_running")

    start_and_watch_live(prep, nb.no_cell_executing, on_running=while_running)
    # Every logged step is drawn: the quickstart logs each step, so points == the task's max_steps.
    max_steps = int(prep.field("max_steps").locator("input").input_value())
    wait_until(lambda: prep.loss_points() == max_steps, 20, f"{max_steps} loss points")
    assert "Completed" in prep.message() or "Completed" in prep.progress_text() or prep.monitor_state() == "Completed"
    prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
    assert widget_error_texts(prep.page) == [] and module_console.widget_errors() == []


def test_stop_button_ends_a_second_task_stopped(quickstart, module_console, artifacts):
    nb, prep = quickstart
    first = prep.task_name()
    first_state = prep.task_state(first)
    nb.run_code(SECOND_TASK)
    wait_until(lambda: prep.task_name() != first, 20, "the second task to be on screen")
    task = prep.task_name()
    prep.wait_task_state(task, "Pending", 20)
    prep.click("Start")
    prep.wait_task_state(task, "Running", 120)
    wait_until(prep.loss_points, 120, "the second task's first loss point", every_s=0.2)
    prep.click("Stop")
    prep.wait_task_state(task, "Stopped", 120)
    wait_until(lambda: prep.monitor_state() == "Stopped", 30, "the monitor badge to say Stopped")
    assert prep.task_state(first) == first_state  # the other task's tag is untouched
    prep.root.locator(".modx-task-panel").scroll_into_view_if_needed()
    shot(prep.page, artifacts, "lab_second_task_stopped")
    assert widget_error_texts(prep.page) == [] and module_console.widget_errors() == []
