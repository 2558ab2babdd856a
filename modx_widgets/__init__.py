"""modx_widgets: the Prepare page of a fine-tuning studio, as a Jupyter widget.

Importing the package stays cheap: no ML library and no widget library is imported
until `PrepareWidget` is first touched.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["PrepareWidget", "Workspace", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "PrepareWidget":
        from .ui.prepare import PrepareWidget

        return PrepareWidget
    if name == "Workspace":
        from .store import Workspace

        return Workspace
    raise AttributeError(f"module 'modx_widgets' has no attribute {name!r}")
