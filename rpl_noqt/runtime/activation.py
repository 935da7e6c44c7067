"""``activate()``: make every later ``import pyrpl`` Qt-free. Idempotent.

Side effects of activation, all recorded in :func:`patch_record`:

1. the installed pyrpl's version is checked against the tested ones;
2. :class:`~rpl_noqt.runtime.importer.PyrplImportRedirector` is put first on
   ``sys.meta_path`` (PyRPL's modules get the Qt stand-ins, nobody else does);
3. post-import hooks patch, when PyRPL's modules load: the config
   ``MemoryTree`` (pending saves are flushed at exit and on ``close``; saves
   are atomic and a lost YAML is restored from its ``.bak``:
   :mod:`rpl_noqt.board.configfile`), ``SignalLauncher`` (attribute changes
   are also broadcast as :data:`rpl_noqt.events.attribute_changed`), the
   board client and locks (:mod:`rpl_noqt.runtime.threadsafe`) and the attribute
   value checks (:mod:`rpl_noqt.board.values`).

Nothing runs at import of :mod:`rpl_noqt`; nothing starts a thread until PyRPL
starts a timer or a coroutine. ``RPL_NOQT_DISABLE=1`` turns activation into a
logged no-op (for comparing against upstream).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
import weakref
from typing import Any

from . import lockin, loop, threadsafe
from ..board import configfile, values
from .._compat import check_pyrpl_version
from ..errors import ActivationError
from .importer import PyrplImportRedirector, find_pyrpl_dir
from .patching import PatchRecord

__all__ = ("activate", "deactivate", "flush_configs", "is_active", "patch_record")

logger = logging.getLogger(__name__)

DISABLE_ENV = "RPL_NOQT_DISABLE"

_lock = threading.RLock()
_record = PatchRecord()
_redirector: PyrplImportRedirector | None = None
_config_trees: weakref.WeakSet[Any] = weakref.WeakSet()


def patch_record() -> PatchRecord:
    """Everything rpl_noqt replaced so far (``print()`` it for a table)."""
    return _record


def is_active() -> bool:
    return _redirector is not None and _redirector in sys.meta_path


def activate() -> PatchRecord:
    """Serve PyRPL the Qt stand-ins from now on; returns the patch record.

    Call it (or ``import rpl_noqt.auto``) before anything imports pyrpl.
    Raises :class:`~rpl_noqt.errors.ActivationError` if pyrpl is already
    imported with real Qt, and
    :class:`~rpl_noqt.errors.UnsupportedPyrplVersionError` for an untested
    pyrpl version.
    """
    global _redirector
    with _lock:
        if is_active():
            return _record
        if os.environ.get(DISABLE_ENV):
            logger.warning("%s is set: rpl_noqt is not activated; PyRPL will use real Qt", DISABLE_ENV)
            return _record
        version = check_pyrpl_version()
        pyrpl_dir = find_pyrpl_dir()
        _refuse_if_imported_with_qt(pyrpl_dir)
        redirector = _redirector or PyrplImportRedirector(pyrpl_dir, _record, extra_dirs=_user_lockbox_dirs)
        sys.meta_path.insert(0, redirector)
        _redirector = redirector
        _record.note("import", "sys.meta_path[0]", redirector,
                     f"import redirection for pyrpl {version} installed at {pyrpl_dir}")
    redirector.when_imported("pyrpl.memory", _patch_memory)
    # before threadsafe's hooks: its board-lock wrapper must end up outside the atomic save
    redirector.when_imported("pyrpl.memory", lambda m: configfile.install(m, _record))
    redirector.when_imported("pyrpl.modules", _patch_signal_launcher)
    threadsafe.install(redirector, _record)
    values.install(redirector, _record)
    lockin.install(redirector, _record)
    logger.debug("rpl_noqt activated for pyrpl %s", version)
    return _record


def deactivate() -> None:
    """Remove the import redirection and undo attribute patches (mainly for tests).

    PyRPL modules already imported keep the stand-ins they were served; remove
    them from ``sys.modules`` to import them afresh.
    """
    global _redirector
    with _lock:
        if _redirector is not None and _redirector in sys.meta_path:
            sys.meta_path.remove(_redirector)
        _redirector = None
        _record.undo_attributes()
        _record.clear()


def _user_lockbox_dirs() -> list[str]:
    """Where PyRPL imports user lockbox models from, asked at each import.

    PyRPL fixes ``$PYRPL_USER_DIR/lockbox`` when ``pyrpl.directories`` is
    imported; before that, the environment says where it will be (it may be
    set after activation, as a notebook's first cell does).
    """
    directories = sys.modules.get("pyrpl.directories")
    folder = getattr(directories, "user_lockbox_dir", None)
    if folder is None:
        user_dir = os.environ.get("PYRPL_USER_DIR") or os.path.join(os.path.expanduser("~"), "pyrpl_user_dir")
        folder = os.path.join(user_dir, "lockbox")
    return [folder]


def _refuse_if_imported_with_qt(pyrpl_dir: str) -> None:
    pyrpl_module = sys.modules.get("pyrpl")
    if pyrpl_module is not None:
        importers = [
            name for name, module in list(sys.modules.items())
            if isinstance(module, types.ModuleType) and name != "pyrpl" and not name.startswith(("pyrpl.", "rpl_noqt"))
            and any(value is pyrpl_module for value in list(vars(module).values()))
        ]
        qt = [name for name in ("PyQt5", "PyQt6", "PySide2", "PySide6") if name in sys.modules]
        raise ActivationError(
            "pyrpl was imported before rpl_noqt was activated, so it already runs on "
            f"{'real Qt (' + ', '.join(qt) + ')' if qt else 'real Qt'}"
            + (f"; imported by: {', '.join(sorted(importers))}" if importers else "")
            + ". Activate first: put 'import rpl_noqt.auto' (or rpl_noqt.activate()) before "
            "anything that imports pyrpl, e.g. as the first import of your script or plugin; "
            "in a notebook, restart the kernel."
        )
    # A failed earlier 'import pyrpl' (no Qt binding) leaves half-imported
    # submodules behind; they ran without the stand-ins, so forget them.
    stale = [name for name, module in list(sys.modules.items())
             if (name.startswith("pyrpl.") or _inside(getattr(module, "__file__", None), pyrpl_dir))]
    for name in stale:
        del sys.modules[name]
    if stale:
        logger.info("forgot %d module(s) left by an earlier failed 'import pyrpl': %s", len(stale), ", ".join(stale))


def _inside(path: str | None, directory: str) -> bool:
    if not path:
        return False
    real, base = os.path.realpath(path), os.path.realpath(directory)
    return real.startswith(base + os.sep)


# -- post-import hooks ------------------------------------------------------------------
def _patch_memory(memory_module: types.ModuleType) -> None:
    tree_cls = memory_module.MemoryTree
    if _record.is_patched(tree_cls, "__init__"):
        return
    original_init = tree_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _config_trees.add(self)

    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    __init__.__doc__ = original_init.__doc__
    _record.patch_attribute(tree_cls, "__init__", __init__,
                            "registers each config tree so a pending delayed save is flushed at exit and on close")
    loop.at_shutdown(flush_configs)


#: How long an exit-time flush waits for a board lock before writing anyway.
FLUSH_LOCK_TIMEOUT_S = 5.0


def flush_configs(trees: Any = None) -> int:
    """Write every config tree with a pending delayed save now; returns how many.

    Waits at most :data:`FLUSH_LOCK_TIMEOUT_S` for a board held by a stuck
    thread, then writes without the lock (logged) rather than hang the exit.
    """
    written = 0
    for tree in list(_config_trees if trees is None else trees):
        timer = getattr(tree, "_savetimer", None)
        if timer is None or not timer.isActive():
            continue
        lock = tree.__dict__.get(threadsafe.LOCK_ATTR)
        locked = lock is None or lock.acquire(timeout=FLUSH_LOCK_TIMEOUT_S)
        try:
            if locked:
                tree._write_to_file()
            else:
                logger.error("board lock %s held by %s for %.1f s: writing %s without it",
                             lock.name, lock.holder(), lock.held_for(), getattr(tree, "_filename", "?"))
                locked_save = type(tree)._write_to_file  # threadsafe's lock around the atomic save
                getattr(locked_save, "__wrapped__", locked_save)(tree)
            written += 1
        except Exception:
            logger.exception("could not flush config file %s", getattr(tree, "_filename", "?"))
        finally:
            if locked and lock is not None:
                lock.release()
    return written


def _patch_signal_launcher(modules_module: types.ModuleType) -> None:
    from ..shims.qtcore import QObject

    launcher = modules_module.SignalLauncher
    if not issubclass(launcher, QObject):
        raise ActivationError("pyrpl.modules.SignalLauncher was not built on rpl_noqt's QObject stand-in")
    _record.note("attribute", "pyrpl.modules.SignalLauncher.__bases__", QObject,
                 "SignalLauncher and all subclasses are plain Python objects with typed signals (no QObject)")
    if _record.is_patched(launcher, "__init__"):
        return
    original_init = launcher.__init__
    # bound once here: an import statement in the slot cost ~1 us on every attribute set
    from ..events import attribute_changed

    def __init__(self: Any, module: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, module, *args, **kwargs)
        self.update_attribute_by_name.connect(self._rpl_noqt_broadcast)

    def _rpl_noqt_broadcast(self: Any, name: str, value: list[Any]) -> None:
        if attribute_changed.receivers:
            attribute_changed.send(self.module, name=name, value=value[0] if len(value) == 1 else value)

    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    _record.patch_attribute(launcher, "_rpl_noqt_broadcast", _rpl_noqt_broadcast,
                            "forwards update_attribute_by_name to rpl_noqt.events.attribute_changed")
    _record.patch_attribute(launcher, "__init__", __init__,
                            "connects the attribute-change broadcast for every module")
