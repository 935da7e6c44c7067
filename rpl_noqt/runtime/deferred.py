"""Modules PyRPL imports at load but needs only once it opens SSH: deferred.

``paramiko`` and ``scp`` (about half of a cold ``import pyrpl``) are used only
to log in to a board and upload files; a direct connection or the simulator
never needs them. PyRPL's modules are therefore served a :class:`DeferredModule`
for them: any attribute use loads the real module. Names taken with
``from paramiko import SSHException`` at import time become placeholders
that forward calls, and the moment the real module loads every placeholder
in PyRPL's globals is rebound to the real object (so an ``except SSHException``
clause, which needs the real class, sees it before any SSH call can raise).
"""

from __future__ import annotations

import importlib
import threading
import types
import weakref
from typing import Any

__all__ = ("DEFERRED_MODULES", "DeferredModule")

#: Top-level modules served deferred to PyRPL.
DEFERRED_MODULES = ("paramiko", "scp")


class _DeferredName:
    """``from <deferred> import Name``: forwards calls, replaced on load."""

    def __init__(self, module: DeferredModule, name: str) -> None:
        self._module = module
        self._name = name

    def _real(self) -> Any:
        return getattr(self._module._load(), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)

    def __repr__(self) -> str:
        return f"<deferred {self._module._name}.{self._name}>"


class DeferredModule(types.ModuleType):
    """Stands for a real module until something needs it."""

    def __init__(self, name: str) -> None:
        super().__init__(name, f"deferred import of {name} (rpl_noqt)")
        self._name = name
        self._real_module: types.ModuleType | None = None
        self._lock = threading.Lock()
        self._placeholders: list[_DeferredName] = []
        self._importers: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._importer_globals: list[dict[str, Any]] = []

    def placeholder(self, name: str, importer_globals: dict[str, Any] | None) -> _DeferredName:
        holder = _DeferredName(self, name)
        with self._lock:
            self._placeholders.append(holder)
            if importer_globals is not None and all(g is not importer_globals for g in self._importer_globals):
                self._importer_globals.append(importer_globals)
        return holder

    def _load(self) -> types.ModuleType:
        real = self._real_module
        if real is not None:
            return real
        real = importlib.import_module(self._name)
        with self._lock:
            self._real_module = real
            placeholders = {id(p): p for p in self._placeholders}
            for namespace in self._importer_globals:
                for key, value in list(namespace.items()):
                    if id(value) in placeholders and value is placeholders[id(value)]:
                        namespace[key] = getattr(real, value._name)
        return real

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._load(), attr)

    @property
    def loaded(self) -> bool:
        return self._real_module is not None
