"""Serve PyRPL, and only PyRPL, the Qt stand-ins.

A meta-path finder sits first on ``sys.meta_path``. For a module whose file
lies inside the installed ``pyrpl`` package (``pyrpl.*``, and the top-level
modules PyRPL makes importable by appending its folder to ``sys.path``, such as
``pyrpl_utils``) it asks the other finders for the real spec and wraps the
loader. The wrapper seeds the module's globals with a private ``__builtins__``
before the module's own code runs; in it:

* ``__import__`` serves ``qtpy`` (QtCore, QtWidgets, QtGui), ``qasync`` and
  ``pyqtgraph`` from :mod:`rpl_noqt.shims` and refuses direct Qt bindings;
  every other import passes through untouched;
* ``paramiko`` and ``scp`` are deferred until PyRPL first uses SSH
  (:mod:`rpl_noqt.runtime.deferred`);
* ``input`` raises instead of prompting (a plugin thread must never hang on
  stdin);
* IPython's ``get_ipython`` is absent, so PyRPL never runs ``%gui qt``.

Two kinds of module are *served* instead of executed: ``pyrpl.async_utils``
(replaced by :mod:`rpl_noqt.shims.async_utils`) and ``pyrpl.widgets.*``
(placeholder modules). Nothing on disk is modified and no other module in the
process sees a stand-in: ``sys.modules["qtpy"]`` stays whatever it was.

Functions and classes capture their module's ``__builtins__`` when they are
created, so the redirection also holds for imports inside PyRPL functions, and
survives ``importlib.reload``. Post-import hooks (:meth:`PyrplImportRedirector.when_imported`)
run after a module's code, outside any lock, or at once if it was already
imported.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

from .deferred import DEFERRED_MODULES, DeferredModule
from ..errors import ActivationError
from .patching import PatchRecord

__all__ = ("PyrplImportRedirector", "PromptRefused")

logger = logging.getLogger(__name__)

#: Qt bindings PyRPL must never reach directly.
_REFUSED_ROOTS = ("PyQt5", "PyQt6", "PySide2", "PySide6", "sip", "shiboken2", "shiboken6")
#: Names IPython adds to builtins; hidden so PyRPL's isnotebook() is False.
_HIDDEN_BUILTINS = ("get_ipython", "display", "__IPYTHON__")


class PromptRefused(RuntimeError):
    """PyRPL tried to ask a question on stdin."""


def _standin_table() -> dict[str, types.ModuleType]:
    from ..shims import pyqtgraph, qasync, qtcore, qtgui, qtpy, qtwidgets

    return {
        "qtpy": qtpy,
        "qtpy.QtCore": qtcore,
        "qtpy.QtWidgets": qtwidgets,
        "qtpy.QtGui": qtgui,
        "qasync": qasync,
        "pyqtgraph": pyqtgraph,
    }


def _refuse_input(prompt: object = "") -> str:
    raise PromptRefused(
        f"PyRPL asked on stdin: {str(prompt).strip()!r}. rpl_noqt never prompts (a "
        "plugin thread would hang): pass the setting explicitly, e.g. "
        "rpl_noqt.connect(hostname, config=...) or Pyrpl(config=..., hostname=...)."
    )


class _FromProxy:
    """What ``from <deferred> import A, B`` receives: placeholders for A and B."""

    def __init__(self, module: DeferredModule, names: Sequence[str], importer_globals: dict[str, Any] | None) -> None:
        for name in names:
            setattr(self, name, module.placeholder(name, importer_globals))


class _ScopedLoader(importlib.abc.Loader):
    """Runs the real loader with PyRPL's private builtins in the module globals."""

    def __init__(self, inner: importlib.abc.Loader, redirector: PyrplImportRedirector) -> None:
        self._self_inner = inner
        self._self_redirector = redirector

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        create = getattr(self._self_inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__dict__["__builtins__"] = self._self_redirector.builtins
        # restore the real loader on the module and its spec (introspection,
        # inspect.getsource, pytest) before running its code
        module.__loader__ = self._self_inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._self_inner
        self._self_inner.exec_module(module)  # type: ignore[attr-defined]
        self._self_redirector._run_hooks(module.__name__, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._self_inner, name)


class _ServedLoader(importlib.abc.Loader):
    """Hands importlib a ready-made module (a shim or a placeholder module)."""

    def __init__(self, module: types.ModuleType, redirector: PyrplImportRedirector) -> None:
        self._module = module
        self._redirector = redirector

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self._module

    def exec_module(self, module: types.ModuleType) -> None:
        self._redirector._run_hooks(module.__name__, module)


class PyrplImportRedirector(importlib.abc.MetaPathFinder):
    """The finder; one instance, installed by :func:`rpl_noqt.activate`."""

    def __init__(self, pyrpl_dir: str, record: PatchRecord,
                 extra_dirs: Sequence[str] | Callable[[], Sequence[str]] = ()) -> None:
        self.pyrpl_dir = os.path.realpath(pyrpl_dir)
        # folders of user code PyRPL imports (lockbox models): asked at each import, since
        # $PYRPL_USER_DIR may be set after activation (a notebook's first cell)
        self._extra_dirs_source = extra_dirs
        self._real_paths: dict[str, str] = {}
        self.record = record
        self._standins = _standin_table()
        self._deferred_modules: dict[str, DeferredModule] = {}
        self._top_level_names = self._scan_top_level(self.pyrpl_dir)
        self._hooks: dict[str, list[Callable[[types.ModuleType], None]]] = {}
        self._hooks_lock = threading.RLock()
        self._busy = threading.local()
        self.builtins = self._make_builtins()

    @property
    def extra_dirs(self) -> tuple[str, ...]:
        source = self._extra_dirs_source
        dirs = source() if callable(source) else source
        real = self._real_paths
        out = []
        for d in dirs:
            r = real.get(d)
            if r is None:
                r = real[d] = os.path.realpath(d)
            out.append(r)
        return tuple(out)

    # -- the private builtins -------------------------------------------------------
    def _make_builtins(self) -> dict[str, Any]:
        scoped = dict(builtins.__dict__)
        for name in _HIDDEN_BUILTINS:
            scoped.pop(name, None)
        scoped["__import__"] = self._scoped_import
        scoped["input"] = _refuse_input
        self.record.note("builtin", "__import__ (in PyRPL modules)", self._scoped_import,
                         "serves qtpy/qasync/pyqtgraph stand-ins to PyRPL only; refuses direct Qt bindings")
        self.record.note("builtin", "input (in PyRPL modules)", _refuse_input,
                         "PyRPL prompts on stdin when settings are missing; a clear error instead of a hang")
        self.record.note("builtin", "get_ipython (in PyRPL modules)", "hidden",
                         "keeps PyRPL from running '%gui qt' in IPython/Jupyter")
        return scoped

    def _scoped_import(self, name: str, globals: dict[str, Any] | None = None, locals: Any = None,
                       fromlist: Sequence[str] | None = (), level: int = 0) -> types.ModuleType:
        if level == 0:
            root = name.partition(".")[0]
            if root in DEFERRED_MODULES and name == root:
                return self._deferred(root, fromlist, globals)
            if root in ("qtpy", "qasync", "pyqtgraph"):
                importer = (globals or {}).get("__name__", "?")
                return self._standin(name, fromlist, importer)
            if root in _REFUSED_ROOTS:
                raise ImportError(
                    f"{(globals or {}).get('__name__', 'PyRPL')} imports {name}, a Qt binding; under "
                    "rpl_noqt PyRPL is served no Qt. Please report this PyRPL call site."
                )
        return builtins.__import__(name, globals, locals, fromlist, level)

    def _standin(self, name: str, fromlist: Sequence[str] | None, importer: str) -> types.ModuleType:
        module = self._standins.get(name)
        if module is None:  # e.g. qtpy.QtSvg, pyqtgraph.exporters: GUI only
            from ..shims.placeholders import placeholder_module

            module = self._standins[name] = placeholder_module(name, package=True)
        self.record.note("import", name, module.__name__, "Qt stand-in served to PyRPL", served_to=importer)
        if fromlist:
            if name == "qtpy":  # 'from qtpy import QtTest': a submodule we do not model
                for item in fromlist:
                    if item.startswith("Qt") and not hasattr(module, item):
                        setattr(module, item, self._standin(f"qtpy.{item}", ("*",), importer))
            return module
        return self._standins[name.partition(".")[0]]

    def _deferred(self, name: str, fromlist: Sequence[str] | None, importer_globals: dict[str, Any] | None) -> Any:
        real = sys.modules.get(name)
        if real is not None and not isinstance(real, DeferredModule):
            return real  # somebody already paid for it: use the real module
        module = self._deferred_modules.get(name)
        if module is None:
            module = self._deferred_modules[name] = DeferredModule(name)
        self.record.note("import", name, "rpl_noqt.runtime.deferred.DeferredModule",
                         "loaded when PyRPL first uses SSH (direct connections never do)",
                         served_to=(importer_globals or {}).get("__name__", "?"))
        if not fromlist or module.loaded:
            return module if not module.loaded else module._load()
        return _FromProxy(module, fromlist, importer_globals)

    # -- finder ---------------------------------------------------------------------------
    @staticmethod
    def _scan_top_level(directory: str) -> frozenset[str]:
        names = set()
        for entry in os.listdir(directory):
            stem, ext = os.path.splitext(entry)
            if ext == ".py" or (not ext and os.path.isdir(os.path.join(directory, entry))):
                names.add(stem)
        return frozenset(names)

    def _candidate(self, fullname: str) -> bool:
        root = fullname.partition(".")[0]
        if root == "pyrpl" or root in self._top_level_names:
            return True
        return any(os.path.exists(os.path.join(d, root + ".py")) or os.path.isdir(os.path.join(d, root))
                   for d in self.extra_dirs)

    def _relative_path(self, origin: str | None) -> str | None:
        if not origin:
            return None
        real = os.path.realpath(origin)
        for base in (self.pyrpl_dir, *self.extra_dirs):
            if real == base or real.startswith(base + os.sep):
                return os.path.relpath(real, self.pyrpl_dir) if base == self.pyrpl_dir else "<extra>"
        return None

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if getattr(self._busy, "active", False) or not self._candidate(fullname):
            return None
        if fullname == "pyrpl.widgets" or fullname.startswith("pyrpl.widgets."):
            # never executed, so never looked up on disk: every name is a placeholder package
            served = self._served_module(fullname, "widgets")
            assert served is not None
            return importlib.machinery.ModuleSpec(fullname, _ServedLoader(served, self), is_package=True)
        spec = self._find_real_spec(fullname, path, target)
        if spec is None:
            return None
        rel = self._relative_path(spec.origin)
        if rel is None:
            return None
        served = self._served_module(fullname, rel)
        if served is not None:
            is_pkg = spec.submodule_search_locations is not None
            return importlib.machinery.ModuleSpec(fullname, _ServedLoader(served, self), is_package=is_pkg)
        if spec.loader is None:
            return spec
        spec.loader = _ScopedLoader(spec.loader, self)
        return spec

    def _find_real_spec(self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None) -> importlib.machinery.ModuleSpec | None:
        self._busy.active = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    return spec
            return None
        finally:
            self._busy.active = False

    def _served_module(self, fullname: str, rel: str) -> types.ModuleType | None:
        parts = rel.replace(os.sep, "/").split("/")
        if parts == ["async_utils.py"]:
            from ..shims import async_utils

            self.record.note("module", fullname, async_utils,
                             "PyRPL's qasync/Qt event-loop helpers, replaced by the background asyncio loop",
                             served_to=fullname)
            return async_utils
        if parts[0] == "widgets":
            from ..shims.placeholders import placeholder_module

            self.record.note("module", "pyrpl.widgets.*", "rpl_noqt.shims.placeholders",
                             "GUI modules are not executed; their classes are inert placeholders",
                             served_to=fullname)
            return placeholder_module(fullname, package=True)
        return None

    # -- post-import hooks ------------------------------------------------------------
    def when_imported(self, name: str, hook: Callable[[types.ModuleType], None]) -> None:
        """Run ``hook(module)`` once ``name`` is imported (now, if it already is)."""
        module = sys.modules.get(name)
        if module is not None:
            hook(module)
            return
        with self._hooks_lock:
            self._hooks.setdefault(name, []).append(hook)

    def _run_hooks(self, name: str, module: types.ModuleType) -> None:
        with self._hooks_lock:
            hooks = self._hooks.pop(name, [])
        for hook in hooks:  # outside the lock: a hook may import more modules
            hook(module)

    # -- ownership ----------------------------------------------------------------------
    def serves(self, module: types.ModuleType) -> bool:
        """Whether ``module`` was loaded through this redirector."""
        return module.__dict__.get("__builtins__") is self.builtins or isinstance(
            getattr(module, "__loader__", None), _ServedLoader
        ) or module.__name__.startswith("rpl_noqt.")


def find_pyrpl_dir() -> str:
    """Folder of the installed pyrpl package, found without importing it."""
    spec = importlib.machinery.PathFinder.find_spec("pyrpl")
    if spec is None or not spec.submodule_search_locations:
        raise ActivationError("pyrpl is not importable: pip install 'pyrpl==0.9.9.1'")
    return list(spec.submodule_search_locations)[0]
