"""The parameter form is the schema made visible: one control per parameter, nothing hand-listed."""

from __future__ import annotations

import html

import comm
import ipywidgets as widgets
import pytest
from comm.base_comm import BaseComm

from modx_widgets.schema.spec import load_schema
from modx_widgets.ui.form import ParamForm

SCHEMA = load_schema()
CONTROL_TYPES = {
    "file": widgets.Text,
    "dir": widgets.Text,
    "str": widgets.Text,
    "bool": widgets.Checkbox,
    "int": widgets.IntText,
    "float": widgets.FloatText,
    "choice": widgets.Dropdown,
    "multichoice": widgets.TagsInput,
}


@pytest.fixture(scope="module")
def form() -> ParamForm:
    return ParamForm()


@pytest.fixture
def fresh() -> ParamForm:
    return ParamForm()


def _descendants(widget: widgets.Widget) -> list[widgets.Widget]:
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _descendants(child)
    return found


def _shown_sections(form: ParamForm) -> list[str]:
    return [SCHEMA.section(k).label for k in form.visible_sections()]


@pytest.mark.parametrize("key", list(SCHEMA.params))
def test_each_parameter_has_one_control_with_the_schema_default(form, key):
    spec = SCHEMA.param(key)
    field = form.fields[key]
    assert type(field.control) is CONTROL_TYPES[spec.type]
    assert field.get() == spec.default
    assert spec.label in html.unescape(field.label.value)
    assert field.control.tooltip == spec.help
    assert html.escape(spec.help) in field.help.value


def test_the_form_has_exactly_the_schema_parameters_in_schema_order(form):
    assert set(form.fields) == set(SCHEMA.params)
    assert list(form.values) == list(SCHEMA.params)
    assert form.values == SCHEMA.defaults()


@pytest.mark.parametrize("key", list(SCHEMA.params))
def test_each_parameter_sits_in_its_sections_fold_group(form, key):
    spec = SCHEMA.param(key)
    section_box = form._sections[spec.section]
    accordion = form._folds[(spec.section, spec.fold)]
    assert accordion in section_box.children
    assert form.fields[key].box in _descendants(accordion)
    fold_label = next(f.label for f in SCHEMA.fold_groups if f.key == spec.fold)
    assert accordion.titles == (fold_label,)


def test_only_general_fold_groups_start_open(form):
    for (section, fold), accordion in form._folds.items():
        assert (accordion.selected_index == 0) == (fold == "General"), (section, fold)


def test_required_fields_carry_a_red_asterisk_and_optional_ones_do_not(form):
    for key, field in form.fields.items():
        assert ("*</span>" in field.label.value) == SCHEMA.param(key).required, key


def test_choice_and_multichoice_controls_offer_exactly_the_schema_options(form):
    for key, spec in SCHEMA.params.items():
        if spec.type == "choice":
            assert tuple(form.fields[key].control.options) == spec.options
        if spec.type == "multichoice":
            assert tuple(form.fields[key].control.allowed_tags) == spec.options


def test_out_of_range_value_is_kept_not_clamped(fresh):
    spec = next(p for p in SCHEMA.params.values() if p.type == "int" and p.maximum is not None)
    too_big = int(spec.maximum) + 1
    fresh.set_values({spec.key: too_big})
    assert fresh.values[spec.key] == too_big


def test_an_error_is_shown_next_to_its_field_and_cleared_when_gone(fresh):
    fresh.show_problems({"lora_r": "must be at most 512"})
    field = fresh.fields["lora_r"]
    row = field.box.children[0]
    assert field.message in row.children and row.children.index(field.message) > row.children.index(field.control)
    assert "must be at most 512" in field.message.value
    assert field.message.layout.display is None
    assert fresh.problems() == {"lora_r": ("error", "must be at most 512")}
    fresh.show_problems({})
    assert field.message.value == "" and field.message.layout.display == "none"
    assert fresh.problems() == {}


def test_warnings_show_beside_their_field_and_loose_ones_are_returned(fresh):
    loose = fresh.show_problems({}, [("warmup_ratio", "warmup steps win"), ("", "general note")])
    assert loose == ["general note"]
    assert fresh.problems() == {"warmup_ratio": ("warning", "warmup steps win")}
    assert "modx-warning" in fresh.fields["warmup_ratio"].message.value


def test_an_error_wins_over_a_warning_on_the_same_field(fresh):
    fresh.show_problems({"max_steps": "too many"}, [("max_steps", "overrides epochs")])
    assert fresh.problems()["max_steps"] == ("error", "too many")


def test_lora_section_is_hidden_for_pretrain_and_back_for_sft(fresh):
    assert "LoRA Config" in _shown_sections(fresh)
    fresh.training_type = "pretrain"
    assert "LoRA Config" not in _shown_sections(fresh)
    assert "LoRA Config" not in fresh.tabs.titles
    assert fresh._sections["lora"] not in fresh.tabs.children
    assert not fresh.is_visible("lora_r")
    fresh.training_type = "sft"
    assert "LoRA Config" in fresh.tabs.titles
    assert fresh.is_visible("lora_r")


def test_switching_type_keeps_the_selected_tab(fresh):
    fresh.tabs.selected_index = list(fresh.visible_sections()).index("general")
    fresh.training_type = "pretrain"
    assert fresh.current_section() == "general"


def test_attach_lora_reveals_the_adapter_path(fresh):
    field = fresh.fields["lora_adapter_path"]
    assert not field.visible and field.box.layout.display == "none"
    fresh.set_values({"attach_lora": True})
    assert field.visible and field.box.layout.display is None
    fresh.fields["attach_lora"].control.value = False  # as the user would untick it
    assert not field.visible


def test_set_values_refuses_unknown_keys_and_bad_types_without_changing_anything(fresh):
    before = fresh.values
    with pytest.raises(ValueError, match="no_such_key"):
        fresh.set_values({"lora_r": 8, "no_such_key": 1})
    with pytest.raises(ValueError, match="lora_r"):
        fresh.set_values({"seed": 7, "lora_r": "eight"})
    with pytest.raises(ValueError, match="optim"):
        fresh.set_values({"optim": "not_an_optimizer"})
    with pytest.raises(ValueError, match="lora_target_modules"):
        fresh.set_values({"lora_target_modules": ["q_proj", "nonsense"]})
    assert fresh.values == before


def test_set_values_coerces_what_a_template_file_may_hold(fresh):
    fresh.set_values({"lora_r": "32", "learning_rate": 1, "num_train_epochs": 3.0, "train_file": "  "})
    values = fresh.values
    assert values["lora_r"] == 32 and values["num_train_epochs"] == 3
    assert values["learning_rate"] == 1.0 and values["train_file"] is None


def test_listeners_hear_one_batched_change_per_set_values(fresh):
    heard: list[set[str]] = []
    fresh.on_change(heard.append)
    fresh.set_values({"lora_r": 8, "seed": 1, "optim": "sgd"})
    assert heard == [{"lora_r", "seed", "optim"}]
    fresh.fields["seed"].control.value = 2  # a user edit is reported on its own
    assert heard[-1] == {"seed"}


def test_setting_a_value_to_what_it_already_is_reports_nothing(fresh):
    heard: list[set[str]] = []
    fresh.on_change(heard.append)
    fresh.set_values({"seed": fresh.values["seed"]})
    assert heard == []


def test_reveal_selects_the_tab_and_opens_the_fold_group(fresh):
    spec = next(p for p in SCHEMA.params.values() if p.fold != "General" and p.section != "data")
    fresh.reveal(spec.key)
    assert fresh.current_section() == spec.section
    assert fresh.is_open(spec.section, spec.fold)


class _RecordingComm(BaseComm):
    sent: list[dict] = []

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if msg_type == "comm_msg":
            _RecordingComm.sent.append(data)


@pytest.fixture
def recording_comm(monkeypatch):
    _RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: _RecordingComm(*a, **k))
    return _RecordingComm.sent


def test_showing_the_same_problems_again_sends_no_messages(recording_comm):
    form = ParamForm()
    problems = ({"lora_r": "too big", "seed": "negative"}, [("warmup_ratio", "ignored")])
    recording_comm.clear()
    form.show_problems(*problems)
    first = len(recording_comm)
    assert first > 0
    form.show_problems(*problems)
    assert len(recording_comm) == first


def test_switching_training_type_sends_tab_children_before_their_titles(recording_comm):
    form = ParamForm()
    recording_comm.clear()
    form.training_type = "pretrain"
    updates = [m.get("state", {}) for m in recording_comm]
    children_at = next(i for i, m in enumerate(updates) if "children" in m)
    titles_at = next(i for i, m in enumerate(updates) if "titles" in m)
    assert children_at < titles_at
    assert len(updates[children_at]["children"]) == len(updates[titles_at]["titles"]) == 5
