"""Typed, immutable view of `params.json`, the single source of truth for every parameter.

The form, validation, templates, CLI and docs read parameters from here; nothing else
may spell out a parameter's default, range or options.  `load_schema()` checks the JSON
itself so that a bad edit to the schema fails loudly at import of the first user, not as
a confusing widget glitch later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

PARAM_TYPES = ("file", "dir", "bool", "int", "float", "choice", "multichoice", "str")
SECTIONS = ("data", "training", "lora", "optimization", "logging", "general")


class SchemaError(ValueError):
    """params.json is malformed (a developer error, not a user one)."""


@dataclass(frozen=True)
class ParamSpec:
    key: str
    section: str  # one of SECTIONS; "basic" for the left-hand basic config
    label: str
    type: str  # one of PARAM_TYPES
    default: Any
    required: bool
    fold: str  # fold group key (General, Optional, ...)
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: tuple[str, ...] | None = None
    must_exist: str | None = None  # "file" / "dir" when the path has to exist
    visible_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # ((key, allowed values), ...)

    @property
    def is_path(self) -> bool:
        return self.type in ("file", "dir")

    def is_visible(self, context: Mapping[str, Any]) -> bool:
        """True when every visibility rule holds for `context` (values plus training_type)."""
        return all(context.get(key) in allowed for key, allowed in self.visible_when)


@dataclass(frozen=True)
class FoldGroup:
    key: str
    label: str


@dataclass(frozen=True)
class SectionSpec:
    key: str
    label: str
    params: tuple[ParamSpec, ...]
    visible_when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def is_visible(self, context: Mapping[str, Any]) -> bool:
        return all(context.get(key) in allowed for key, allowed in self.visible_when)


@dataclass(frozen=True)
class Schema:
    version: int
    fold_groups: tuple[FoldGroup, ...]
    sections: tuple[SectionSpec, ...]
    basic: tuple[ParamSpec, ...]

    @property
    def params(self) -> dict[str, ParamSpec]:
        """Every training parameter by key, in schema order (basic config excluded)."""
        return {p.key: p for s in self.sections for p in s.params}

    def param(self, key: str) -> ParamSpec:
        try:
            return self.params[key]
        except KeyError:
            raise KeyError(f"unknown parameter {key!r}") from None

    def section(self, key: str) -> SectionSpec:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(f"unknown section {key!r}")

    def basic_param(self, key: str) -> ParamSpec:
        for p in self.basic:
            if p.key == key:
                return p
        raise KeyError(f"unknown basic parameter {key!r}")

    def defaults(self) -> dict[str, Any]:
        """A fresh dict of every parameter's default (lists copied, so callers may mutate)."""
        return {k: (list(p.default) if isinstance(p.default, list) else p.default) for k, p in self.params.items()}

    def visible(self, key: str, context: Mapping[str, Any]) -> bool:
        """Is parameter `key` in play for this context (section rule and its own rule)?"""
        p = self.param(key)
        return self.section(p.section).is_visible(context) and p.is_visible(context)


def _rules(raw: Mapping[str, Any] | None, where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise SchemaError(f"{where}: visible_when must map keys to lists of allowed values")
    return tuple((k, tuple(v)) for k, v in raw.items())


def _param(raw: Mapping[str, Any], section: str, folds: set[str]) -> ParamSpec:
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise SchemaError(f"a parameter in section {section!r} has no key")
    where = f"parameter {key!r}"
    ptype = raw.get("type")
    if ptype not in PARAM_TYPES:
        raise SchemaError(f"{where}: type {ptype!r} is not one of {PARAM_TYPES}")
    fold = raw.get("fold", "General")
    if fold not in folds:
        raise SchemaError(f"{where}: fold group {fold!r} is not declared")
    for text in ("label", "help"):
        if not isinstance(raw.get(text), str) or not raw[text].strip():
            raise SchemaError(f"{where}: needs a non-empty {text}")
    options = raw.get("options")
    if ptype in ("choice", "multichoice") and section != "basic" and not options:
        raise SchemaError(f"{where}: a {ptype} needs options")
    lo, hi = raw.get("min"), raw.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"{where}: min {lo} is above max {hi}")
    default = raw.get("default")
    if default is not None:
        if ptype == "bool" and not isinstance(default, bool):
            raise SchemaError(f"{where}: default must be a bool")
        if ptype in ("int", "float"):
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise SchemaError(f"{where}: default must be a number")
            if ptype == "int" and not isinstance(default, int):
                raise SchemaError(f"{where}: default must be an integer")
            if (lo is not None and default < lo) or (hi is not None and default > hi):
                raise SchemaError(f"{where}: default {default} outside [{lo}, {hi}]")
        if ptype == "choice" and options and default not in options:
            raise SchemaError(f"{where}: default {default!r} is not an option")
        if ptype == "multichoice" and (not isinstance(default, list) or any(d not in options for d in default)):
            raise SchemaError(f"{where}: default must be a list of options")
    must_exist = raw.get("must_exist")
    if must_exist not in (None, "file", "dir"):
        raise SchemaError(f"{where}: must_exist must be 'file' or 'dir'")
    return ParamSpec(
        key=key,
        section=section,
        label=raw["label"],
        type=ptype,
        default=default,
        required=bool(raw.get("required", False)),
        fold=fold,
        help=raw["help"],
        minimum=lo,
        maximum=hi,
        step=raw.get("step"),
        options=tuple(options) if options else None,
        must_exist=must_exist,
        visible_when=_rules(raw.get("visible_when"), where),
    )


def parse_schema(doc: Mapping[str, Any]) -> Schema:
    """Build and check a Schema from the decoded JSON document."""
    if not isinstance(doc.get("schema_version"), int):
        raise SchemaError("schema_version must be an integer")
    folds = tuple(FoldGroup(f["key"], f["label"]) for f in doc.get("fold_groups", []))
    fold_keys = {f.key for f in folds}
    section_raw = {s["key"]: s for s in doc.get("sections", [])}
    if tuple(section_raw) != SECTIONS:
        raise SchemaError(f"sections must be exactly {SECTIONS} in that order")
    by_section: dict[str, list[ParamSpec]] = {k: [] for k in SECTIONS}
    seen: set[str] = set()
    for raw in doc.get("params", []):
        section = raw.get("section")
        if section not in by_section:
            raise SchemaError(f"parameter {raw.get('key')!r}: unknown section {section!r}")
        spec = _param(raw, section, fold_keys)
        if spec.key in seen:
            raise SchemaError(f"parameter {spec.key!r} is declared twice")
        seen.add(spec.key)
        by_section[section].append(spec)
    basic = tuple(_param({**raw, "fold": "General"}, "basic", fold_keys) for raw in doc.get("basic", []))
    clash = seen & {b.key for b in basic}
    if clash:
        raise SchemaError(f"basic config keys clash with parameters: {sorted(clash)}")
    for spec in (p for ps in by_section.values() for p in ps):
        for rule_key, _ in spec.visible_when:
            if rule_key not in seen and rule_key not in {b.key for b in basic}:
                raise SchemaError(f"parameter {spec.key!r}: visible_when names unknown key {rule_key!r}")
    sections = tuple(
        SectionSpec(k, section_raw[k]["label"], tuple(by_section[k]), _rules(section_raw[k].get("visible_when"), k))
        for k in SECTIONS
    )
    return Schema(version=doc["schema_version"], fold_groups=folds, sections=sections, basic=basic)


@lru_cache(maxsize=1)
def load_schema() -> Schema:
    """The package's schema, parsed once per process."""
    text = resources.files("modx_widgets.schema").joinpath("params.json").read_text(encoding="utf-8")
    return parse_schema(json.loads(text))
