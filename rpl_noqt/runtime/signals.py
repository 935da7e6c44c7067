"""A typed, thread-safe signal with the surface of Qt's ``Signal``.

PyRPL declares ``QtCore.Signal(str, list)`` class attributes and calls
``connect`` / ``disconnect`` / ``emit`` on them; this module provides the same
surface in pure Python, so PyRPL needs no QObject and no Qt event loop.

When the checks run
-------------------
* ``connect``: the slot must be callable and able to take the signal's
  arguments (a slot that *requires* more positional arguments than the signal
  carries raises ``TypeError``; a slot taking fewer receives the first ones,
  as in Qt). If the slot's parameters are annotated with plain classes, they
  must be compatible with the signal's declared types.
* ``emit``: the number of arguments must equal the number of declared types
  (``TypeError`` otherwise). The *types* of the values are checked only in
  strict mode (:func:`set_strict_checks`, or ``RPL_NOQT_STRICT_SIGNALS=1``),
  which the test suite turns on; the default skips it because it would
  double the cost of every emit.

Threads
-------
``emit`` takes no lock: it iterates an immutable snapshot of the connections.
``connect`` / ``disconnect`` replace that snapshot under a lock, so they are
safe while another thread emits; a slot disconnected during an emit running in
another thread may receive that one in-flight emission (as in Qt).
Direct connections run the slot in the emitting thread. Queued connections
(``connect(slot, QtCore.Qt.QueuedConnection)`` or ``queued=True``) run it on
the background event loop (:mod:`rpl_noqt.runtime.loop`). Qt's AutoConnection means
Direct here: our objects have no thread affinity.

Slot errors
-----------
An exception in a slot is logged with its traceback (logger
``rpl_noqt.runtime.signals``), broadcast as :data:`rpl_noqt.events.slot_error`, and the
remaining slots still run. In ``"raise"`` mode (:func:`set_slot_error_mode`)
``emit`` raises :class:`~rpl_noqt.errors.SlotError` from the first error after
all slots ran.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Literal, get_origin, overload

from ..errors import SlotError

__all__ = (
    "ConnectionType",
    "Signal",
    "SignalInstance",
    "set_slot_error_mode",
    "set_strict_checks",
    "strict_checks",
)

logger = logging.getLogger(__name__)


class ConnectionType(IntEnum):
    """Qt's connection types, by the values Qt gives them."""

    AutoConnection = 0
    DirectConnection = 1
    QueuedConnection = 2
    BlockingQueuedConnection = 3
    UniqueConnection = 0x80


_DIRECT, _QUEUED = 0, 1
_STATE = {"errors": "log"}
# A plain module global: emit() reads it on every call, so keep it one lookup.
_STRICT = bool(os.environ.get("RPL_NOQT_STRICT_SIGNALS"))
_NUMBER_WIDENING: dict[type, tuple[type, ...]] = {
    float: (float, int),
    complex: (complex, float, int),
}


def set_strict_checks(enabled: bool) -> None:
    """Check the type of every emitted value (slower; on in our test suite)."""
    global _STRICT
    _STRICT = bool(enabled)


def strict_checks() -> bool:
    """Whether emit-time type checks are on."""
    return _STRICT


def set_slot_error_mode(mode: Literal["log", "raise"]) -> None:
    """Choose what an exception in a slot does: ``"log"`` (default) or ``"raise"``."""
    if mode not in ("log", "raise"):
        raise ValueError(f"slot error mode must be 'log' or 'raise', got {mode!r}")
    _STATE["errors"] = mode


def _normalise_type(spec: object) -> type:
    """Map a Qt type spec (a class or a C++ type name) onto a Python class."""
    if isinstance(spec, type):
        return spec
    if isinstance(spec, str):
        name = spec.strip()
        if name in ("QString", "str"):
            return str
        if name in ("int", "qint64", "long", "uint"):
            return int
        if name in ("double", "float"):
            return float
        if name == "bool":
            return bool
        if name in ("QVariantList", "list"):
            return list
        if name in ("QVariantMap", "dict"):
            return dict
        return object  # PyQt_PyObject, QVariant and anything else: any value
    raise TypeError(f"signal argument types must be classes or Qt type names, got {spec!r}")


def _accepts(value: object, expected: type) -> bool:
    if expected is object or isinstance(value, expected):
        return True
    widened = _NUMBER_WIDENING.get(expected)
    return widened is not None and isinstance(value, widened) and not isinstance(value, bool)


def _slot_arity(slot: Callable[..., Any], skip_self: bool) -> tuple[int, int | None]:
    """(required, maximum) positional arguments of ``slot``; maximum None = any."""
    try:
        sig = inspect.signature(slot)
    except (TypeError, ValueError):  # builtins without signature: trust them
        return 0, None
    params = list(sig.parameters.values())
    if skip_self and params:
        params = params[1:]
    required, maximum = 0, 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return required, None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            maximum += 1
            if p.default is p.empty:
                required += 1
    return required, maximum


def _annotated_types(slot: Callable[..., Any], skip_self: bool) -> list[object]:
    try:
        params = list(inspect.signature(slot, eval_str=True).parameters.values())
    except Exception:  # unresolvable string annotations: nothing to check
        return []
    if skip_self and params:
        params = params[1:]
    return [
        p.annotation
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


class Signal:
    """Class-level declaration: ``changed = Signal(str, list)``.

    Accessed on an instance it returns that instance's :class:`SignalInstance`
    (created once, then cached in the instance ``__dict__``), exactly as Qt's
    descriptors bind per instance.
    """

    __slots__ = ("_name", "_types", "__weakref__")

    def __init__(self, *types: object, name: str | None = None, arguments: object = None) -> None:
        if len(types) == 1 and isinstance(types[0], (list, tuple)):
            types = tuple(types[0])  # Signal([int]) overload form: first overload
        self._types: tuple[type, ...] = tuple(_normalise_type(t) for t in types)
        self._name = name

    def __set_name__(self, owner: type, name: str) -> None:
        if self._name is None:
            self._name = name

    @property
    def name(self) -> str:
        return self._name or "<anonymous signal>"

    @property
    def types(self) -> tuple[type, ...]:
        return self._types

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Signal: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> SignalInstance: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> Signal | SignalInstance:
        if obj is None:
            return self
        instance = SignalInstance(self._types, self.name, obj)
        try:
            obj.__dict__[self.name] = instance  # later lookups skip the descriptor
        except AttributeError:  # no __dict__: bind anew each time
            pass
        return instance

    def __repr__(self) -> str:
        args = ", ".join(t.__name__ for t in self._types)
        return f"<Signal {self.name}({args})>"


class SignalInstance:
    """A signal bound to one object: ``connect``, ``disconnect``, ``emit``."""

    __slots__ = ("_types", "_nargs", "_name", "_owner_ref", "_slots", "_direct", "_queued", "_lock", "_blocked",
                 "__weakref__")

    def __init__(self, types: tuple[type, ...] = (), name: str = "signal", owner: object = None) -> None:
        self._types = tuple(_normalise_type(t) for t in types)
        self._nargs = len(self._types)
        self._name = name
        self._owner_ref = _weak_or_none(owner)
        # each connection: (weakref-to-receiver or None, function, n_args, mode, key);
        # _direct and _queued are derived from it on every change, for emit()
        self._slots: tuple[tuple[Any, Callable[..., Any], int, int, object], ...] = ()
        self._direct: tuple[tuple[Any, Callable[..., Any], int | None], ...] = ()
        self._queued: tuple[tuple[Any, Callable[..., Any], int], ...] = ()
        self._lock = threading.Lock()
        self._blocked = bool(getattr(owner, "_rpl_signals_blocked", False))

    # -- Qt surface ---------------------------------------------------------------
    def connect(
        self,
        slot: Callable[..., Any] | SignalInstance,
        type: ConnectionType | int | None = None,  # noqa: A002 - Qt's keyword name
        *,
        queued: bool = False,
    ) -> Any:
        """Connect ``slot``; returns it (so ``connect`` works as a decorator).

        Bound methods are held weakly (the connection dies with the receiver);
        functions, lambdas and other callables are held strongly, as in Qt.
        """
        if not callable(slot):
            raise TypeError(f"{self._describe()}.connect() needs a callable slot, got {slot!r}")
        mode_flags = int(type or 0)
        unique = bool(mode_flags & ConnectionType.UniqueConnection)
        mode_flags &= ~ConnectionType.UniqueConnection
        if mode_flags == ConnectionType.BlockingQueuedConnection:
            raise ValueError(
                f"{self._describe()}: BlockingQueuedConnection is not supported "
                "(it deadlocks when emitter and receiver share a thread); use a direct or queued connection"
            )
        if mode_flags not in (0, ConnectionType.DirectConnection, ConnectionType.QueuedConnection):
            raise ValueError(f"{self._describe()}: unknown connection type {type!r}")
        mode = _QUEUED if (queued or mode_flags == ConnectionType.QueuedConnection) else _DIRECT
        entry = self._make_entry(slot, mode)
        with self._lock:
            if unique and any(e[4] == entry[4] for e in self._slots):
                raise TypeError(f"{self._describe()}: slot {slot!r} is already connected (UniqueConnection)")
            self._set_slots((*self._slots, entry))
        return slot

    def disconnect(self, slot: Callable[..., Any] | SignalInstance | None = None) -> None:
        """Disconnect ``slot`` (its first connection), or every slot if None.

        Raises ``TypeError`` when there is nothing to disconnect, like PyQt.
        """
        with self._lock:
            if slot is None:
                if not self._slots:
                    raise TypeError(f"{self._describe()}.disconnect(): no connections")
                self._set_slots(())
                return
            key = _slot_key(slot)
            for i, entry in enumerate(self._slots):
                if entry[4] == key:
                    self._set_slots(self._slots[:i] + self._slots[i + 1 :])
                    return
        raise TypeError(f"{self._describe()}.disconnect(): {slot!r} is not connected")

    def emit(self, *args: Any) -> None:
        """Call every connected slot with ``args`` (in connection order)."""
        if self._blocked:
            return
        if len(args) != self._nargs:
            self._raise_arity(args)
        if _STRICT:
            self._check_types(args)
        errors = None
        for ref, func, n in self._direct:
            try:
                if ref is None:
                    if n is None:
                        func(*args)
                    else:
                        func(*args[:n])
                else:
                    receiver = ref()
                    if receiver is not None:
                        if n is None:
                            func(receiver, *args)
                        else:
                            func(receiver, *args[:n])
            except Exception as exc:  # a slot failed: report, keep delivering
                errors = self._slot_failed(func, exc, errors)
        if self._queued:
            for ref, func, n in self._queued:
                _queue(self, ref, func, args[:n])
        if errors:
            raise SlotError(f"{len(errors)} slot(s) of {self._describe()} raised") from errors[0]

    def _set_slots(self, slots: tuple[tuple[Any, Callable[..., Any], int, int, object], ...]) -> None:
        """Replace the connections (caller holds _lock) and the tuples emit() reads."""
        self._slots = slots
        self._direct = tuple((ref, func, None if n == self._nargs else n)
                             for ref, func, n, mode, _key in slots if mode == _DIRECT)
        self._queued = tuple((ref, func, n) for ref, func, n, mode, _key in slots if mode == _QUEUED)

    __call__ = emit  # a SignalInstance connected as a slot forwards the emission

    def blockSignals(self, block: bool) -> bool:  # noqa: N802 - Qt name
        previous = self._blocked
        self._blocked = bool(block)
        return previous

    def __getitem__(self, _overload: object) -> SignalInstance:
        """``signal[int]`` overload selection: one overload here, so itself."""
        return self

    # -- introspection --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def types(self) -> tuple[type, ...]:
        return self._types

    def receivers(self) -> int:
        """Number of live connections (Qt's ``receivers``)."""
        return len(self._slots)

    def __repr__(self) -> str:
        return f"<SignalInstance {self._describe()} with {len(self._slots)} slot(s)>"

    # -- internals -----------------------------------------------------------------
    def _describe(self) -> str:
        owner = self._owner_ref() if self._owner_ref is not None else None
        args = ", ".join(t.__name__ for t in self._types)
        prefix = f"{type(owner).__name__}." if owner is not None else ""
        return f"{prefix}{self._name}({args})"

    def _make_entry(self, slot: Callable[..., Any], mode: int) -> tuple[Any, Callable[..., Any], int, int, object]:
        key = _slot_key(slot)
        if isinstance(slot, SignalInstance):
            if slot._nargs > self._nargs:
                raise TypeError(
                    f"cannot connect {self._describe()} to {slot._describe()}: "
                    f"the target needs {slot._nargs} argument(s), the source carries {self._nargs}"
                )
            return (None, slot.emit, slot._nargs, mode, key)
        receiver = getattr(slot, "__self__", None)
        func: Callable[..., Any] | None = getattr(slot, "__func__", None)
        weak = receiver is not None and func is not None and inspect.ismethod(slot)
        target: Callable[..., Any] = func if (weak and func is not None) else slot
        required, maximum = _slot_arity(target, skip_self=weak)
        if required > self._nargs:
            raise TypeError(
                f"cannot connect {self._describe()} to {slot!r}: the slot requires "
                f"{required} positional argument(s), the signal carries {self._nargs}"
            )
        self._check_annotations(target, weak, slot)
        n = self._nargs if maximum is None else min(maximum, self._nargs)
        if weak:
            ref = weakref.ref(receiver, self._reaper(key))
            return (ref, target, n, mode, key)
        return (None, slot, n, mode, key)

    def _check_annotations(self, target: Callable[..., Any], skip_self: bool, slot: object) -> None:
        for declared, annotation in zip(self._types, _annotated_types(target, skip_self)):
            # plain classes only: list[Any] is a "type" on Python 3.10 but not a class
            if (isinstance(annotation, type) and get_origin(annotation) is None
                    and annotation is not inspect.Parameter.empty):
                if declared is object or annotation is object:
                    continue
                if not (issubclass(declared, annotation) or annotation in _NUMBER_WIDENING.get(declared, ())
                        or declared in _NUMBER_WIDENING.get(annotation, ())):
                    raise TypeError(
                        f"cannot connect {self._describe()} to {slot!r}: slot parameter annotated "
                        f"{annotation.__name__} cannot take the signal's {declared.__name__}"
                    )

    def _reaper(self, key: object) -> Callable[[object], None]:
        self_ref = weakref.ref(self)

        def reap(_dead: object) -> None:
            signal = self_ref()
            if signal is None:
                return
            with signal._lock:
                signal._set_slots(tuple(e for e in signal._slots if e[4] != key))

        return reap

    def _raise_arity(self, args: tuple[Any, ...]) -> None:
        raise TypeError(
            f"{self._describe()}.emit() takes {self._nargs} argument(s), got {len(args)}: {args!r}"
        )

    def _check_types(self, args: tuple[Any, ...]) -> None:
        for i, (value, expected) in enumerate(zip(args, self._types)):
            if not _accepts(value, expected):
                raise TypeError(
                    f"{self._describe()}.emit(): argument {i} is {type(value).__name__} "
                    f"({value!r:.80}), expected {expected.__name__}"
                )

    def _slot_failed(self, func: Callable[..., Any], exc: Exception, errors: list[Exception] | None) -> list[Exception] | None:
        logger.error("slot %r of %s raised", func, self._describe(), exc_info=exc)
        from .. import events  # local: events imports blinker lazily

        owner = self._owner_ref() if self._owner_ref is not None else None
        events.slot_error.send(owner, signal=self._name, slot=func, error=exc)
        if _STATE["errors"] == "raise":
            return [*(errors or []), exc]
        return errors


def _weak_or_none(obj: object) -> weakref.ref[Any] | None:
    if obj is None:
        return None
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def _slot_key(slot: object) -> object:
    """Identity of a slot for disconnect: bound methods compare by (receiver, function)."""
    receiver = getattr(slot, "__self__", None)
    func = getattr(slot, "__func__", None)
    if receiver is not None and func is not None and inspect.ismethod(slot):
        return (id(receiver), func)
    return slot


def _queue(signal: SignalInstance, ref: Any, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    from .loop import call_soon_threadsafe  # local: keeps this module import-light

    def deliver() -> None:
        try:
            if ref is None:
                func(*args)
            else:
                receiver = ref()
                if receiver is not None:
                    func(receiver, *args)
        except Exception as exc:
            signal._slot_failed(func, exc, None)

    call_soon_threadsafe(deliver)
