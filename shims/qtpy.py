"""What PyRPL gets for ``qtpy``: the binding-neutral names plus the stand-ins."""

from __future__ import annotations

from . import qtcore as QtCore  # noqa: N812 - qtpy's names
from . import qtgui as QtGui  # noqa: N812
from . import qtwidgets as QtWidgets  # noqa: N812

__all__ = ("API", "API_NAME", "PYQT5", "PYQT6", "PYSIDE2", "PYSIDE6", "QT_VERSION", "QtCore", "QtGui", "QtWidgets")

#: pyrpl.pyrpl refuses to load when API_NAME is None; ours names the stand-in.
API = API_NAME = "rpl_noqt"
QT_VERSION = None
PYQT5 = PYQT6 = PYSIDE2 = PYSIDE6 = False
