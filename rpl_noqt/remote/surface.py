"""Server side: run a client's get, set or call on the board, through the registry only.

This module knows nothing of LECO or sockets: the actor hands it a request's
decoded arguments and the requester's LECO name, it answers a value or
raises the same exceptions an in-process user would see (ValueError from a
bad value, BoardConnectionError from the link, ...) plus
:class:`~rpl_noqt.errors.BoardLockedError` and
:class:`~rpl_noqt.remote.errors.RemoteNameError`. Every name a client sends
is first resolved in the :class:`~rpl_noqt.remote.registry.Registry`; only
the names the registry holds are ever looked up on a PyRPL object.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import BoardLockedError, CallCancelledError
from .errors import RemoteNameError
from .registry import MethodSpec, ModuleSpec, Registry

__all__ = ("BoardSurface", "LockTable")

logger = logging.getLogger(__name__)


class LockTable:
    """Who holds which LECO lock on this board: the board (None), a module or one attribute.

    LECO's locking semantics: a lock on ``asg0`` covers ``asg0.frequency``,
    a lock on the board covers everything, and only the holder may use (or
    release) what it locked. Unlike pyleco's LockingActor, taking a lock is
    also refused while another client holds a lock inside it (a board lock
    while someone holds ``asg0``), so two clients never both believe they
    own ``asg0``. Thread-safe: the listener and the workers check it at once.
    """

    def __init__(self, board: str) -> None:
        self.board = board
        self._locks: dict[str | None, str] = {}
        self._mutex = threading.Lock()

    def holders(self) -> dict[str | None, str]:
        with self._mutex:
            return dict(self._locks)

    def lock(self, requester: str, resource: str | None) -> bool:
        with self._mutex:
            return self._conflict(requester, resource, inside=True) is None and \
                self._locks.setdefault(resource, requester) == requester

    def unlock(self, requester: str, resource: str | None) -> bool:
        with self._mutex:
            if self._locks.get(resource) != requester:
                return False
            del self._locks[resource]
            return True

    def force_unlock(self, resource: str | None) -> str | None:
        with self._mutex:
            return self._locks.pop(resource, None)

    def release_all(self, requester: str) -> int:
        with self._mutex:
            mine = [r for r, holder in self._locks.items() if holder == requester]
            for r in mine:
                del self._locks[r]
            return len(mine)

    def check(self, requester: str, path: str, operation: str) -> None:
        """Raise BoardLockedError if another client holds a lock covering ``path``."""
        if not self._locks:  # the common case, without the mutex
            return
        with self._mutex:
            conflict = self._conflict(requester, path, inside=False)
        if conflict is not None:
            resource, holder = conflict
            raise BoardLockedError(self.board, holder, resource, operation=f"{operation} {path}")

    def holder_covering(self, path: str) -> tuple[str | None, str] | None:
        """(resource, holder) of a lock that covers ``path``, whoever holds it; None if free."""
        if not self._locks:
            return None
        with self._mutex:
            return self._conflict("", path, inside=False)

    def _conflict(self, requester: str, resource: str | None, *, inside: bool) -> tuple[str | None, str] | None:
        parts = [] if resource is None else resource.split(".")
        for i in range(len(parts) + 1):
            covering = None if i == 0 else ".".join(parts[:i])
            holder = self._locks.get(covering)
            if holder is not None and holder != requester:
                return covering, holder
        if inside:
            prefix = None if resource is None else resource + "."
            for locked, holder in self._locks.items():
                if holder != requester and locked is not None and (prefix is None or locked.startswith(prefix)):
                    return locked, holder
        return None


class BoardSurface:
    """The registry's names bound to one board's module objects, with lock checks."""

    def __init__(self, registry: Registry, modules: Mapping[str, Any], board: str) -> None:
        self.registry = registry
        self._modules = dict(modules)
        self.board = board
        self.locks = LockTable(board)

    def check_resource(self, resource: object) -> str | None:
        """A lock resource a client named: None (the board), a module, or module.attribute/method."""
        if resource is None:
            return None
        if not isinstance(resource, str):
            raise RemoteNameError(f"a lock resource is a module name or 'module.name', got {resource!r}")
        if "." in resource:
            module_name, name = resource.split(".", 1)
            module = self.registry.module(module_name)
            if name not in module.attributes and name not in module.methods:
                raise RemoteNameError(f"{module_name} has no remote attribute or method {name!r} to lock")
        else:
            self.registry.module(resource)
        return resource

    # -- the three operations ------------------------------------------------------------
    def get(self, paths: Sequence[str]) -> dict[str, Any]:
        if isinstance(paths, str) or not isinstance(paths, Sequence):
            raise RemoteNameError(f"get_parameters takes a list of 'module.attribute' names, got {paths!r}")
        resolved = [(path, *self.registry.attribute(path)) for path in paths]  # all refused before any read
        return {path: getattr(self._modules[module.name], attribute.name) for path, module, attribute in resolved}

    def set(self, values: Mapping[str, Any], requester: str) -> None:
        if not isinstance(values, Mapping):
            raise RemoteNameError(f"set_parameters takes a {{'module.attribute': value}} dict, got {values!r}")
        resolved = []
        for path, value in values.items():
            module, attribute = self.registry.attribute(path)
            if not attribute.writable:
                raise RemoteNameError(f"{path} is read-only over a remote session")
            self.locks.check(requester, path, "set")
            resolved.append((module, attribute, value))
        for module, attribute, value in resolved:  # in order, as a script would
            setattr(self._modules[module.name], attribute.name, value)

    def call(self, path: str, args: Sequence[Any], kwargs: Mapping[str, Any], requester: str) -> Any:
        module, method = self.registry.method(path)
        args, kwargs = _bind(module, method, args, kwargs)
        if method.writes:
            self.locks.check(requester, path, "call")
        try:
            return getattr(self._modules[module.name], method.name)(*args, **kwargs)
        except asyncio.CancelledError:  # PyRPL's run was renewed under this call: say so, as an Exception
            raise CallCancelledError(module.name, method.name, detail="the acquisition was restarted (a setting "
                                     "of the module changed, or another single() started)") from None

    def call_long(self, path: str, args: Sequence[Any], kwargs: Mapping[str, Any], requester: str,
                  control: Any) -> Any:
        """As :meth:`call`, watched and cancellable through ``control`` (:mod:`.longcall`) when supported."""
        from .longcall import run_long_call, supports

        module, method = self.registry.method(path)
        if not supports(module.kind, method.name):
            return self.call(path, args, kwargs, requester)
        args, kwargs = _bind(module, method, args, kwargs)
        if method.writes:
            self.locks.check(requester, path, "call")
        return run_long_call(self._modules[module.name], method.name, list(args), dict(kwargs), control)

    def is_long(self, path: object) -> bool:
        """Whether a call_action on ``path`` may run long (the actor then gives it to a worker)."""
        try:
            return self.registry.method(path)[1].long  # type: ignore[arg-type]
        except RemoteNameError:
            return False  # refused quickly, inline


def _bind(module: ModuleSpec, method: MethodSpec, args: object, kwargs: object) -> tuple[list[Any], dict[str, Any]]:
    args = [] if args is None else args
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise RemoteNameError(f"{module.name}.{method.name}: args must be a list and kwargs a dict")
    allowed = module.setup_attributes if method.params is None else method.params
    if method.params is None and args:
        raise RemoteNameError(f"{module.name}.{method.name} takes keywords only ({', '.join(allowed)})")
    if len(args) > len(allowed):
        raise RemoteNameError(f"{module.name}.{method.name} takes at most {len(allowed)} argument(s), "
                              f"got {len(args)}")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise RemoteNameError(f"{module.name}.{method.name} has no remote keyword {', '.join(map(repr, unknown))} "
                              f"(allowed: {', '.join(allowed) or 'none'})")
    twice = sorted(set(kwargs) & set(allowed[:len(args)]))
    if twice:
        raise RemoteNameError(f"{module.name}.{method.name} got {', '.join(twice)} both by position and by keyword")
    return args, kwargs
