"""What PyRPL gets for ``qtpy.QtWidgets``: an inert QApplication, placeholders.

``QApplication`` is the stand-in core application (PyRPL creates one at
import); every other name is a GUI placeholder that refuses to be used.
"""

from __future__ import annotations

from typing import Any

from .placeholders import placeholder_class
from .qtcore import QCoreApplication

__all__ = ("QApplication",)


class QApplication(QCoreApplication):
    """PyRPL's ``APP``: exists, runs nothing, owns no window."""


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    cls = placeholder_class(name, __name__)
    globals()[name] = cls
    return cls
