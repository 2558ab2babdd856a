"""The read-only system templates shipped as package data (`modx_widgets/presets/*.json`).

A preset file holds only the values that differ from the schema defaults, so a change of a
default in params.json reaches the presets without editing them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from .errors import StoreError
from .names import same_name
from .records import TemplateRecord, template_from_json

# File order is the order shown to the user.
PRESET_FILES = ("sft.json", "pretrain.json")


def _preset_text(filename: str) -> str:
    return resources.files("modx_widgets").joinpath("presets", filename).read_text(encoding="utf-8")


def raw_preset(filename: str) -> dict:
    """The preset document exactly as shipped (tests check it holds only non-default values)."""
    doc = json.loads(_preset_text(filename))
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise StoreError(f"preset {filename} is malformed: it needs a 'name'")
    return doc


@lru_cache(maxsize=1)
def _presets() -> tuple[TemplateRecord, ...]:
    records = []
    for filename in PRESET_FILES:
        doc = raw_preset(filename)
        records.append(template_from_json(doc, f"presets/{filename}", doc["name"], preset=True))
    return tuple(records)


def preset_names() -> list[str]:
    return [p.name for p in _presets()]


def find_preset(name: str) -> TemplateRecord | None:
    """The preset called `name` (case-insensitive), as a fresh record the caller may mutate."""
    for preset in _presets():
        if same_name(preset.name, name):
            return TemplateRecord(preset.name, preset.training_type, _copy(preset.values), True)
    return None


def _copy(values: dict) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in values.items()}
