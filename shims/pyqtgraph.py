"""What PyRPL gets for ``pyqtgraph``: plot placeholders (no plotting without Qt)."""

from __future__ import annotations

from typing import Any

from .placeholders import placeholder_class


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    cls = placeholder_class(name, __name__)
    globals()[name] = cls
    return cls
