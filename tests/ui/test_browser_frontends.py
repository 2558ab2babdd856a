"""The same smoke as in JupyterLab, in Notebook 7 and in Voila: the quickstart's widget renders,
Start trains the demo task live (badge Running, loss line growing with no cell executing) to
Completed, and no widget fails to display."""

from __future__ import annotations

from _frontends import NotebookPage, VoilaPage, shot, widget_error_texts
from _prepare_page import PreparePage, start_and_watch_live


def test_notebook7_trains_the_quickstart_task_live(notebook7, page, console, artifacts):
    nb = NotebookPage(page, notebook7, "quickstart.ipynb").open()
    nb.run_all()
    assert nb.error_outputs() == []
    prep = PreparePage(page).wait_rendered()
    prep.root.scroll_into_view_if_needed()

    def while_running() -> None:
        prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
        shot(page, artifacts, "notebook7_training_running")

    start_and_watch_live(prep, nb.no_cell_executing, on_running=while_running)
    prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
    assert widget_error_texts(page) == [] and console.widget_errors() == []


def test_voila_trains_the_quickstart_task_live(voila_for, page, console, artifacts):
    # Voila runs every cell while the page loads; the widget is the notebook's last output.
    voila = VoilaPage(page, voila_for("quickstart.ipynb")).open(".modx-prepare .modx-task-panel")
    assert voila.error_outputs() == []
    prep = PreparePage(page).wait_rendered()

    def while_running() -> None:
        prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
        shot(page, artifacts, "voila_training_running")

    # Nothing executes in Voila once the page has loaded, so every new point comes from the run.
    start_and_watch_live(prep, lambda: True, on_running=while_running)
    prep.root.locator(".modx-loss-chart").first.scroll_into_view_if_needed()
    assert widget_error_texts(page) == [] and console.widget_errors() == []
