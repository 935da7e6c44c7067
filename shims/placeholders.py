"""Inert stand-ins for GUI classes: importable, subclassable, never usable.

PyRPL imports widget classes at module load (``_widget_class = ScopeWidget``)
even when no GUI is wanted. A placeholder satisfies the import; creating one,
or calling anything on it, raises :class:`~rpl_noqt.errors.GuiUnavailableError`
naming what was requested and how to avoid it.
"""

from __future__ import annotations

import types
from typing import Any, NoReturn

from rpl_noqt.errors import GuiUnavailableError

__all__ = ("GuiPlaceholderMeta", "placeholder_class", "placeholder_module", "is_placeholder")

_HINT = (
    "rpl_noqt runs PyRPL without Qt, so it has no widgets, dialogs or plots. "
    "Construct PyRPL with gui=False (rpl_noqt.connect() does), and plot the data "
    "yourself (for example with matplotlib)."
)


def _refuse(what: str) -> NoReturn:
    raise GuiUnavailableError(f"PyRPL requested the GUI element {what}. {_HINT}")


class _GuiMember:
    """``QFileDialog.getSaveFileName`` or ``QFileDialog.DontConfirmOverwrite``:
    harmless to look up or pass around, refuses to be called."""

    __slots__ = ("_qualname",)

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self._qualname)

    def __getattr__(self, name: str) -> _GuiMember:
        if name.startswith("__"):
            raise AttributeError(name)
        return _GuiMember(f"{self._qualname}.{name}")

    def __or__(self, other: object) -> _GuiMember:  # flag combinations in class bodies
        return self

    __ror__ = __or__

    def __repr__(self) -> str:
        return f"<GUI placeholder {self._qualname}>"


class GuiPlaceholderMeta(type):
    """Metaclass of placeholders: unknown class attributes are GUI members."""

    def __getattr__(cls, name: str) -> _GuiMember:
        if name.startswith("__"):
            raise AttributeError(name)
        return _GuiMember(f"{cls.__qualname__}.{name}")

    def __repr__(cls) -> str:
        return f"<GUI placeholder class {cls.__module__}.{cls.__qualname__}>"


class _GuiPlaceholder(metaclass=GuiPlaceholderMeta):
    """Base of every placeholder class: instantiation refuses."""

    _rpl_noqt_placeholder = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse(type(self).__qualname__)

    @classmethod
    def instance(cls) -> None:
        """``QApplication.instance()``-style lookups find nothing."""
        return None


def placeholder_class(name: str, module: str) -> type:
    """A new placeholder class called ``name``, reported as living in ``module``."""
    return GuiPlaceholderMeta(name, (_GuiPlaceholder,), {"__module__": module, "__qualname__": name})


def is_placeholder(obj: object) -> bool:
    """Whether ``obj`` is a placeholder class or member."""
    return isinstance(obj, (GuiPlaceholderMeta, _GuiMember))


class _PlaceholderModule(types.ModuleType):
    """A module whose every public name is a placeholder class (made once, cached)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        cls = placeholder_class(name, self.__name__)
        setattr(self, name, cls)
        return cls


def placeholder_module(name: str, *, package: bool = False, doc: str | None = None) -> types.ModuleType:
    """A module of placeholders; ``package=True`` lets submodules be imported under it."""
    module = _PlaceholderModule(name, doc or f"GUI placeholders standing in for {name} (rpl_noqt).")
    if package:
        module.__path__ = []
    return module
