"""The harness itself, proven on a trivial notebook (a slider, a tiny anywidget, a bqplot line fed by
a thread) before any test relies on it for the real widget: if these fail, the set-up is broken,
not modx_widgets."""

from __future__ import annotations

from _frontends import NotebookPage, VoilaPage, line_points, wait_until, widget_error_texts

NOTEBOOK = "harness.ipynb"


def _round_trip_and_live_chart(page, no_cell_executing) -> None:
    page.wait_for_selector(".harness-slider", state="visible")
    clicker = page.locator(".harness-clicker")
    assert clicker.inner_text() == "clicks: 0"
    clicker.click()
    clicker.click()
    # The label is written by a kernel-side observer: it only changes if the clicks reached Python.
    wait_until(lambda: page.locator(".harness-echo").inner_text() == "kernel saw: slider=3 clicks=2",
               20, "the kernel to echo two clicks")
    first = wait_until(lambda: line_points(page, ".harness-chart"), 20, "the chart's first points")
    wait_until(lambda: line_points(page, ".harness-chart") > first and no_cell_executing(), 20,
               "the line to gain points while no cell is executing")
    assert widget_error_texts(page) == []


def test_lab_shows_ipywidgets_and_anywidget_that_round_trip_through_the_kernel(lab, page, console):
    nb = NotebookPage(page, lab, NOTEBOOK).open()
    nb.run_all()
    _round_trip_and_live_chart(page, nb.no_cell_executing)
    assert nb.error_outputs() == []
    assert console.widget_errors() == []


def test_notebook7_shows_the_same_widgets(notebook7, page, console):
    nb = NotebookPage(page, notebook7, NOTEBOOK).open()
    nb.run_all()
    _round_trip_and_live_chart(page, nb.no_cell_executing)
    assert console.widget_errors() == []


def test_voila_shows_the_same_widgets(voila_for, page, console):
    vp = VoilaPage(page, voila_for(NOTEBOOK)).open(".harness-clicker")
    _round_trip_and_live_chart(page, lambda: True)
    assert vp.error_outputs() == []
    assert console.widget_errors() == []
