"""The status badge: spec colours per state, one colour source, shipped ESM that draws it."""

from __future__ import annotations

import colorsys
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import comm
import pytest
import traitlets

from modx_widgets.events import STATES
from modx_widgets.ui.badges import STATE_COLORS, StatusBadge

ROOT = Path(__file__).resolve().parent.parent
JS_SOURCE = ROOT / "js" / "badge.js"
SHIPPED = ROOT / "modx_widgets" / "static" / "badge.js"


class RecordingComm:
    """Stands in for a kernel comm and keeps every message a widget sends."""

    kernel = "present"

    def __init__(self, **kwargs):
        self.comm_id = uuid.uuid4().hex
        self.opened = kwargs.get("data") or {}
        self.messages: list[dict] = []

    def send(self, data=None, buffers=None, **kwargs):
        self.messages.append(data)

    def on_msg(self, callback):
        pass

    def close(self, *args, **kwargs):
        pass


@pytest.fixture
def comms(monkeypatch):
    made: list[RecordingComm] = []

    def create_comm(**kwargs):
        made.append(RecordingComm(**kwargs))
        return made[-1]

    monkeypatch.setattr(comm, "create_comm", create_comm)
    return made


def _hue_degrees(color: str) -> float:
    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


# The spec's colour names, as hue ranges on the colour wheel.
SPEC_HUES = {
    "Pending": (190, 250),  # blue
    "Running": (80, 160),  # green
    "Completed": (80, 160),  # green
    "Stopped": (20, 45),  # orange
    "Failed": (-15, 10),  # red (wraps around 0)
}


@pytest.mark.parametrize("state", STATES)
def test_each_state_is_drawn_in_the_spec_colour(state):
    badge = StatusBadge(state)
    assert badge.color == STATE_COLORS[state]
    hue = _hue_degrees(badge.color)
    hue = hue - 360 if hue > 180 + SPEC_HUES[state][1] else hue
    lo, hi = SPEC_HUES[state]
    assert lo <= hue <= hi, f"{state} drawn with {badge.color} (hue {hue:.0f})"


def test_every_state_has_a_colour_and_nothing_else_does():
    assert set(STATE_COLORS) == set(STATES)


def test_unknown_state_is_refused_with_the_valid_ones_listed():
    with pytest.raises(traitlets.TraitError, match="Pending, Running, Completed, Stopped, Failed"):
        StatusBadge("Done")


def test_changing_state_sends_one_update_with_only_the_state(comms):
    badge = StatusBadge("Pending", label="sft_20241201_143052")
    sent = comms[-1].messages
    before = len(sent)
    badge.state = "Running"
    assert len(sent) == before + 1
    assert sent[-1]["method"] == "update" and sent[-1]["state"] == {"state": "Running"}


def test_colours_reach_the_browser_in_the_opening_state(comms):
    StatusBadge("Stopped")
    opened = comms[-1].opened["state"]
    assert opened["_colors"] == dict(STATE_COLORS)
    assert opened["state"] == "Stopped"


def test_shipped_esm_is_identical_to_the_js_source():
    assert SHIPPED.read_text() == JS_SOURCE.read_text(), (
        "modx_widgets/static/badge.js is stale: run `python js/sync_static.py`"
    )


def test_the_widget_loads_the_shipped_esm():
    assert StatusBadge().get_state()["_esm"] == SHIPPED.read_text()


def test_esm_spells_no_state_colour_of_its_own():
    source = JS_SOURCE.read_text().lower()
    for color in STATE_COLORS.values():
        assert color.lower() not in source


_NODE_HARNESS = r"""
const mod = await import(process.argv[2]);
function node(tag) {
  return { tag, style: {}, dataset: {}, children: [], textContent: "", title: "", className: "",
           append(...c) { this.children.push(...c); }, animate() {} };
}
globalThis.document = { createElement: node };
const traits = JSON.parse(process.argv[3]);
const handlers = {};
const model = {
  get: (k) => traits[k],
  on: (ev, fn) => { handlers[ev] = fn; },
  off: (ev) => { delete handlers[ev]; },
};
const el = node("div");
const cleanup = mod.default.render({ model, el });
const badge = el.children[0];
const out = [{ state: badge.dataset.state, background: badge.style.background, text: badge.children[1].textContent }];
traits.state = "Failed";
handlers["change:state"]();
out.push({ state: badge.dataset.state, background: badge.style.background, text: badge.children[1].textContent });
cleanup();
out.push(Object.keys(handlers).length);
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to execute the ESM")
def test_esm_paints_state_colour_and_repaints_on_change(tmp_path):
    harness = tmp_path / "harness.mjs"
    harness.write_text(_NODE_HARNESS)
    traits = {"state": "Running", "label": "demo", "_colors": dict(STATE_COLORS)}
    result = subprocess.run(
        ["node", str(harness), SHIPPED.as_uri(), json.dumps(traits)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    first, second, handlers_left = json.loads(result.stdout)
    assert first == {"state": "Running", "background": STATE_COLORS["Running"], "text": "demo · Running"}
    assert second == {"state": "Failed", "background": STATE_COLORS["Failed"], "text": "demo · Failed"}
    assert handlers_left == 0
