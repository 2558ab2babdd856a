"""Issue 2 in a real browser: the quickstart's PrepareWidget in JupyterLab shows the schema's form,
opens fold groups on click, rejects a bad value next to its field, and hides LoRA for pretrain.

The quickstart is opened and run once for the module; each test leaves the form as it found it.
"""

from __future__ import annotations

import pytest

from _frontends import NotebookPage, shot, wait_until, widget_error_texts
from _prepare_page import PreparePage
from modx_widgets.schema.spec import load_schema

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def prep(module_lab, module_page) -> PreparePage:
    nb = NotebookPage(module_page, module_lab, "quickstart.ipynb").open()
    nb.run_all()
    assert nb.error_outputs() == []
    widget = PreparePage(module_page).wait_rendered()
    widget.open_config()
    return widget


def _first_in(section: str, fold: str) -> str:
    return next(p.key for p in SCHEMA.section(section).params if p.fold == fold)


def test_config_drawer_shows_every_section_with_general_params_open(prep, module_console):
    assert prep.section_titles() == [s.label for s in SCHEMA.sections]  # sft: LoRA included
    prep.select_section(SCHEMA.section("data").label)
    assert prep.fold_is_open("data", "General")
    for spec in SCHEMA.section("data").params:
        if spec.fold == "General":
            assert prep.field(spec.key).is_visible(), f"{spec.key} should be shown in the open General group"
    # The quickstart's values reached the browser: the model path field shows what the notebook set.
    assert prep.field("model_path").locator("input").input_value().endswith("tiny-llama")
    assert widget_error_texts(prep.page) == [] and module_console.widget_errors() == []


def test_clicking_a_closed_fold_group_expands_it(prep):
    key = _first_in("training", "Advanced")
    prep.select_section(SCHEMA.section("training").label)
    assert not prep.fold_is_open("training", "Advanced")
    assert not prep.field(key).is_visible()
    prep.open_fold("training", "Advanced")
    prep.field(key).wait_for(state="visible", timeout=10_000)
    assert prep.fold_is_open("training", "Advanced")
    prep.field(key).scroll_into_view_if_needed()


def test_out_of_range_value_is_rejected_next_to_its_field_and_blocks_start(prep, artifacts):
    spec = SCHEMA.param("learning_rate")
    good = prep.field(spec.key).locator("input").input_value()
    prep.select_section(SCHEMA.section(spec.section).label)
    message = prep.field_message(spec.key)
    assert not message.is_visible()

    prep.set_field(spec.key, str(spec.maximum * 10))
    message.wait_for(state="visible", timeout=20_000)
    assert message.locator(".modx-error").count() == 1, message.inner_html()
    assert message.inner_text().strip()
    wait_until(lambda: spec.label in prep.problem_summary(), 10, "the problem listed near Start")
    task = prep.task_name()
    prep.click("Start")
    wait_until(lambda: "refused" in prep.message().lower(), 20, "Start to be refused")
    assert prep.task_state(task) == "Pending"
    message.scroll_into_view_if_needed()
    shot(prep.page, artifacts, "form_bad_value_rejected")

    prep.set_field(spec.key, good)
    message.wait_for(state="hidden", timeout=20_000)
    wait_until(lambda: spec.label not in prep.problem_summary(), 10, "the problem to leave the summary")


def test_switching_to_pretrain_hides_the_lora_section(prep, artifacts):
    lora = SCHEMA.section("lora").label
    label = SCHEMA.basic_param("training_type").label
    assert lora in prep.section_titles()
    prep.set_training_type("pretrain", label)
    others = [s.label for s in SCHEMA.sections if s.key != "lora"]
    # Every other tab keeps its title (a blank title is a bug users see, not a detail).
    wait_until(lambda: prep.section_titles() == others, 20, f"the tabs to read {others}")
    assert not prep.root.locator(".modx-section-lora").first.is_visible()
    prep.root.locator(".modx-drawer").scroll_into_view_if_needed()
    shot(prep.page, artifacts, "form_pretrain_without_lora")

    prep.set_training_type("sft", label)  # and back: it is the training type that decides
    everything = [s.label for s in SCHEMA.sections]
    wait_until(lambda: prep.section_titles() == everything, 20, f"the tabs to read {everything} again")
