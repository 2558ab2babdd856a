"""The widgets: the Prepare page (`PrepareWidget`), its schema-generated form (`ParamForm`),
and the monitor pieces.  Exports are lazy so that `import modx_widgets.ui` stays cheap."""

from __future__ import annotations

from typing import Any

__all__ = ["ParamForm", "PrepareWidget", "StartRefused"]


def __getattr__(name: str) -> Any:
    if name in ("PrepareWidget", "StartRefused"):
        from . import prepare

        return getattr(prepare, name)
    if name == "ParamForm":
        from .form import ParamForm

        return ParamForm
    raise AttributeError(f"module 'modx_widgets.ui' has no attribute {name!r}")
