"""Refuse bad attribute values before they reach a register or the config.

Upstream PyRPL normalises whatever it is given: ``float(nan)`` passes every
``min``/``max`` comparison, ``bool`` is an ``int``, a select register takes
``True`` for the option ``1``, and an integer register's declared ``max`` may
be a code the register cannot hold, so the board wraps it (``pid0.ival = 4``
reads back -4 V; ``hk.led = 256`` leaves 0 while the config says 256). The
post-import hook :func:`install` wraps ``__set__`` of every attribute
descriptor class (present and defined later) with a check that runs **before**
upstream's ``__set__``, so a refused value writes no register and no config
entry and the board keeps its previous value.

What is refused, by attribute kind (:func:`kind_of`), with
:class:`BadValueError` (a ``ValueError``) or :class:`BadValueTypeError` (a
``TypeError``), both naming ``module.attribute``, the value and what is allowed:

* numbers (int/float/frequency/phase/gain registers and properties, filters,
  the elements of float and complex lists): anything that is not a real
  number (``bool``, ``str``, ``None``, ``complex``, containers; numpy scalars
  and 0-d numeric arrays are numbers, ``numpy.bool_`` is not), and NaN or
  +-inf; complex kinds take complex numbers with finite parts. ``None`` is
  refused although upstream's integer properties read it as "set the current
  value again": a ``None`` on a number is far more often a bug than that idiom.
* bools: anything but ``True``/``False``, ``numpy.bool_`` and finite real
  numbers (upstream's ``bool(value)``: 0 is False, any other number True;
  PyRPL's own test suite writes 13.0 to bool registers). Refused are the
  values ``bool()`` turns into a silent True: ``"false"``, NaN, ``None`` (False),
  containers. ``BoolIgnoreProperty`` also takes ``"true"``, ``"false"``, ``"ignore"``.
* selects: ``bool`` unless an option is a bool, non-finite floats, and, for
  a select whose options are numbers (``scope.duration``, ``decimation``),
  anything but a finite real number. Membership stays upstream's check; its
  error is re-raised as :class:`BadValueError` with the same wording as ours
  (a select declared ``ignore_errors=True``, e.g. ``scope.input1``, keeps
  upstream's fallback to its default for an unknown option).
* strings: ``None`` and bytes (upstream would store ``"None"``/``"b'..'"``).
* proxies and sub-module attributes are checked by the attribute they lead
  to; other kinds (curves, data, plotters, read-only specials with their own
  normalisation) are passed on unchecked.

Out-of-range numbers keep upstream's behaviour: they are clamped to the
nearest bound. The clamp is logged at WARNING once per board, attribute and
side (above the maximum / below the minimum), with the value the board took
(read back), then at DEBUG. A board in strict mode (:func:`set_strict`)
raises :class:`BadValueError` instead and writes nothing. This per-board state
lives in a weak dictionary keyed by the ``RedPitaya``, never in PyRPL
objects' ``__dict__`` (PyRPL's own tests iterate ``rp.__dict__`` while setting
values).

The bound used is the *effective* one: the declared ``min``/``max``
narrowed to what the register holds, which is where the wraps came from:

1. a register's code range (``bits``, ``signed``, ``bitmask``) mapped through
   its scale: integer registers hold ``0 .. 2**bits - 1``, fixed-point float
   registers ``-2**(bits-1) .. 2**(bits-1) - 1`` codes (or ``0 .. 2**bits - 1``
   unsigned) over ``norm``, with the bits the bitmask drops removed (so
   ``asg0._offset_masked`` tops out at 8191/8192 V, as the board does),
   frequency registers ``0 .. 2**bits - 1`` steps of 125 MHz / 2**bits; phase
   registers wrap modulo 360 by design and have no range;
2. a declared ``max`` of exactly ``2**k`` codes is the exclusive full scale
   of a k-bit field (upstream writes ``max=2**8`` for the 8-bit LED register
   and ``max=4`` for the 16-bit integrator of 2**-13 V codes): the field's
   largest value is one code less. Applied where the descriptor does not
   state the field's width itself: integer registers whose ``max`` is such a
   power of two below their ``bits``, and numeric properties of hardware
   modules that write a register in their own ``set_value``, whose code is
   their ``increment`` (``pid.ival``, ``asg.offset``).

Range checks apply only where the class keeps one of upstream's own
normalisations from ``pyrpl.attributes`` (a class with its own
``validate_and_normalize``, e.g. the network analyzer's amplitude, which takes
``abs()``, gets only the type and finiteness checks).

Cost: a plain ``float``/``int`` inside the effective range takes one dict
lookup, a type test and a chained comparison before upstream's ``__set__``
(about 0.5 us of a 21 us ``pid0.setpoint`` set on the dummy board; selects,
bools and strings take the short kind dispatch, about 0.5-1 us). The
per-descriptor facts (kind, effective bounds) are computed at its first set
and kept on the descriptor.
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..runtime.patching import PatchRecord
from ..runtime.threadsafe import board_lock

__all__ = (
    "BadValueError",
    "BadValueTypeError",
    "Kind",
    "effective_bounds",
    "install",
    "is_strict",
    "kind_of",
    "set_strict",
)

logger = logging.getLogger(__name__)

_STATE_LOCK = threading.Lock()
#: board (RedPitaya, or the module itself if it has none) -> {"strict": bool, "warned": set}
_BOARD_STATE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_SPEC_ATTR = "_rpl_noqt_value_spec"
_MARK = "_rpl_noqt_values"
_BIG = sys.float_info.max


class BadValueError(ValueError):
    """A value an attribute cannot take (non-finite, not an option, out of range in strict mode)."""

    def __init__(self, message: str, *, attribute: str, value: Any) -> None:
        super().__init__(message)
        self.attribute = attribute
        self.value = value


class BadValueTypeError(TypeError):
    """A value of a type the attribute does not take (``bool``/``str``/``None`` for a number, ...)."""

    def __init__(self, message: str, *, attribute: str, value: Any) -> None:
        super().__init__(message)
        self.attribute = attribute
        self.value = value


class Kind:
    """The attribute kinds this module tells apart (see the module docstring)."""

    NUMBER = "number"
    PHASE = "phase"
    COMPLEX = "complex"
    LIST = "list"
    FILTER = "filter"
    BOOL = "bool"
    BOOL_IGNORE = "bool-ignore"
    SELECT = "select"
    STRING = "string"
    PASS = "pass"


# -- public API ----------------------------------------------------------------------------------
def set_strict(target: Any, strict: bool) -> None:
    """Out-of-range values on ``target``'s board raise instead of being clamped.

    ``target`` is a ``RedPitaya``, a ``Pyrpl`` instance, or any module of the
    board. The flag belongs to the ``RedPitaya`` (kept while it lives) and is
    read at each out-of-range set, so it takes effect at once.
    """
    board = _board_of(target)
    if board is None:
        raise ValueError(f"{target!r} belongs to no Red Pitaya: cannot set its strict mode")
    _state(board)["strict"] = bool(strict)


def is_strict(target: Any) -> bool:
    """Whether ``target``'s board is in strict mode (False if it has no board)."""
    board = _board_of(target)
    if board is None:
        return False
    with _STATE_LOCK:
        state = _BOARD_STATE.get(board)
    return bool(state is not None and state["strict"])


def kind_of(descriptor_class: type) -> str:
    """The :class:`Kind` of an attribute descriptor class (decides which checks apply)."""
    attrs = sys.modules["pyrpl.attributes"]
    module_attributes = sys.modules.get("pyrpl.module_attributes")
    cls = descriptor_class
    if issubclass(cls, (attrs.ProxyProperty, attrs.ModuleAttribute)) or (
        module_attributes is not None and issubclass(cls, module_attributes.ModuleProperty)
    ):
        return Kind.PASS
    if hasattr(cls, "validate_and_normalize_element"):
        return Kind.LIST
    if issubclass(cls, attrs.ComplexProperty):
        return Kind.COMPLEX
    if issubclass(cls, attrs.PhaseProperty):
        return Kind.PHASE
    if issubclass(cls, attrs.NumberProperty):
        return Kind.NUMBER
    if issubclass(cls, attrs.FilterProperty):
        return Kind.FILTER
    if issubclass(cls, attrs.BoolIgnoreProperty):
        return Kind.BOOL_IGNORE
    if issubclass(cls, attrs.BoolProperty):
        return Kind.BOOL
    if issubclass(cls, attrs.SelectProperty):
        return Kind.SELECT
    if issubclass(cls, attrs.StringProperty) and _upstream_normalisation(cls, attrs.StringProperty):
        return Kind.STRING
    return Kind.PASS


def effective_bounds(descriptor: Any, hardware: bool = True) -> tuple[float, float]:
    """``(min, max)`` a numeric descriptor really takes: declared, narrowed to its register.

    ``hardware``: the descriptor belongs to a hardware module (rule 2 of the
    module docstring applies to its non-register numeric properties).
    """
    attrs = sys.modules["pyrpl.attributes"]
    lo, hi = descriptor.min, descriptor.max  # ints stay ints (64-bit registers exceed a float's precision)
    if isinstance(descriptor, attrs.PhaseRegister) or not isinstance(descriptor, attrs.NumberProperty):
        return lo, hi
    if isinstance(descriptor, attrs.BaseRegister):
        rlo, rhi = _register_range(descriptor, attrs)
        lo, hi = max(lo, rlo), min(hi, rhi)
        if _is_int_register(descriptor, attrs):
            k = _power_of_two(hi)
            if k is not None and k < int(descriptor.bits):
                hi = 2**k - 1
    elif hardware:
        increment = float(getattr(descriptor, "increment", 0) or 0)
        if increment > 0 and math.isfinite(hi):
            k = _power_of_two(hi / increment)
            if k is not None and k > 0:
                hi -= increment
    return lo, hi


# -- installation --------------------------------------------------------------------------------
def install(redirector: Any, record: PatchRecord) -> None:
    """Register the post-import hooks (idempotent through the record)."""
    redirector.when_imported("pyrpl.attributes", lambda m: _patch_attributes(m, record))
    redirector.when_imported("pyrpl.modules", lambda m: _patch_config_loading(m, record))


def _patch_config_loading(module: Any, record: PatchRecord) -> None:
    """A config entry these checks refuse (an old ``.nan``) is skipped with an ERROR, not fatal.

    Upstream loads a module's setup attributes in one ``setup(**entries)``
    call; one refused entry would abort the rest and the whole connect.
    """
    cls = module.Module
    if record.is_patched(cls, "_load_setup_attributes"):
        return
    original = cls.__dict__["_load_setup_attributes"]

    def _load_setup_attributes(self: Any) -> None:
        skipped: set[str] = set()
        while True:
            try:
                if not skipped:
                    return original(self)
                entries = {k: v for k, v in self.c._data.items() if k in self._setup_attributes and k not in skipped}
                self.setup_attributes = entries
                return None
            except (BadValueError, BadValueTypeError) as exc:
                name = exc.attribute.rsplit(".", 1)[-1]
                if name in skipped or name not in self._setup_attributes:
                    raise
                skipped.add(name)
                logger.error("config entry %s = %r refused (%s); the module keeps its current value",
                             exc.attribute, exc.value, exc)

    _load_setup_attributes.__wrapped__ = original  # type: ignore[attr-defined]
    record.patch_attribute(cls, "_load_setup_attributes", _load_setup_attributes,
                           "a config entry the value checks refuse is skipped with an ERROR, the rest still loads")


def _patch_attributes(module: Any, record: PatchRecord) -> None:
    base = module.BaseProperty
    if record.is_patched(base, "__init_subclass__"):
        return
    pending: list[type] = [module.BaseAttribute]
    seen: set[type] = set()
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            _check_descriptor_class(cls, record)
            pending.extend(cls.__subclasses__())

    own = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        if own is not None:
            own.__get__(None, cls)(**kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
        _check_descriptor_class(cls, record)

    record.patch_attribute(base, "__init_subclass__", classmethod(__init_subclass__),
                           "attribute descriptor classes defined later get the value checks too")
    element = module.BasePropertyListProperty.__dict__["validate_and_normalize_element"]
    record.patch_attribute(module.BasePropertyListProperty, "validate_and_normalize_element",
                           _checked_element(element),
                           "list elements written one by one (lst[i] = v) are checked like numbers")


def _check_descriptor_class(cls: type, record: PatchRecord) -> None:
    func = cls.__dict__.get("__set__")
    if func is None or getattr(func, _MARK, False):
        return
    reason = "refuses bad values (non-finite, wrong type, not an option) before any write; logs clamps"
    locked_before = record.is_patched(cls, "__set__")
    record.patch_attribute(cls, "__set__", _checked_set(func), reason)
    if locked_before:  # the record keeps one entry per target: list this second patch on its own
        record.note("attribute", f"{cls.__module__}.{cls.__qualname__}.__set__ (value checks)", _checked_set, reason)


# -- the wrapper -------------------------------------------------------------------------------
class _Spec:
    """What a descriptor accepts; computed at its first set and kept on the descriptor."""

    __slots__ = ("fast_hi", "fast_lo", "hi", "integer", "kind", "lo", "numeric_options", "ranged", "unsigned")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lo = self.hi = 0.0
        self.fast_lo, self.fast_hi = math.inf, -math.inf  # empty: every value takes the slow path
        self.ranged = self.integer = self.unsigned = self.numeric_options = False


def _checked_set(func: Callable[..., Any]) -> Callable[..., Any]:
    def __set__(self: Any, obj: Any, value: Any) -> Any:
        spec = self.__dict__.get(_SPEC_ATTR)
        if spec is None:
            spec = _make_spec(self, obj)
        t = type(value)
        if (t is float or t is int) and spec.fast_lo <= value <= spec.fast_hi:
            return func(self, obj, value)
        return _slow_set(spec, func, self, obj, value)

    __set__.__wrapped__ = func  # type: ignore[attr-defined]
    __set__.__doc__ = func.__doc__
    setattr(__set__, _MARK, True)
    if getattr(func, "_rpl_noqt_locked", False):  # keep threadsafe's idempotence mark visible
        __set__._rpl_noqt_locked = True  # type: ignore[attr-defined]
    return __set__


def _checked_element(func: Callable[..., Any]) -> Callable[..., Any]:
    def validate_and_normalize_element(self: Any, obj: Any, val: Any) -> Any:
        _check_number(self, obj, val, complex_ok=_is_complex_list(self), what="element ")
        return func(self, obj, val)

    validate_and_normalize_element.__wrapped__ = func  # type: ignore[attr-defined]
    validate_and_normalize_element.__doc__ = func.__doc__
    setattr(validate_and_normalize_element, _MARK, True)
    return validate_and_normalize_element


def _make_spec(descriptor: Any, obj: Any) -> _Spec:
    attrs = sys.modules["pyrpl.attributes"]
    spec = _Spec(kind_of(type(descriptor)))
    if spec.kind in (Kind.NUMBER, Kind.PHASE, Kind.COMPLEX, Kind.FILTER):
        spec.fast_lo, spec.fast_hi = -_BIG, _BIG  # finite plain numbers: no further check
    if spec.kind == Kind.NUMBER and _keeps_upstream_range(type(descriptor), attrs):
        spec.ranged = True
        spec.integer = isinstance(descriptor, attrs.IntProperty) and not isinstance(descriptor, attrs.FloatProperty)
        spec.unsigned = isinstance(descriptor, attrs.FloatRegister) and not descriptor.signed
        spec.lo, spec.hi = effective_bounds(descriptor, hardware=_is_hardware(obj))
        if spec.unsigned:  # upstream takes abs() first
            spec.fast_lo, spec.fast_hi = max(-spec.hi, -_BIG), min(spec.hi, _BIG)
        else:
            spec.fast_lo, spec.fast_hi = max(spec.lo, -_BIG), min(spec.hi, _BIG)
        if spec.integer:  # upstream rounds first: 255.4 is fine for a max of 255
            spec.fast_lo, spec.fast_hi = math.ceil(spec.fast_lo), math.floor(spec.fast_hi)
    elif spec.kind == Kind.SELECT:
        options = descriptor.__dict__.get("default_options")
        spec.numeric_options = (not callable(options) and options is not None and len(options) > 0
                                and all(_is_real(o) for o in options))
    descriptor.__dict__[_SPEC_ATTR] = spec
    return spec


def _slow_set(spec: _Spec, func: Callable[..., Any], self: Any, obj: Any, value: Any) -> Any:
    kind = spec.kind
    if kind == Kind.PASS:
        return func(self, obj, value)
    if kind == Kind.SELECT:
        return _set_select(spec, func, self, obj, value)
    if kind in (Kind.BOOL, Kind.BOOL_IGNORE):
        _check_bool(self, obj, value, ignore_ok=kind == Kind.BOOL_IGNORE)
        return func(self, obj, value)
    if kind == Kind.STRING:
        if value is None or isinstance(value, (bytes, bytearray)):
            raise _type_error(self, obj, value, "a str")
        return func(self, obj, value)
    if kind in (Kind.LIST, Kind.FILTER):
        _check_sequence(self, obj, value, complex_ok=kind == Kind.LIST and _is_complex_list(self))
        return func(self, obj, value)
    number = _check_number(self, obj, value, complex_ok=kind == Kind.COMPLEX)
    if not spec.ranged:
        return func(self, obj, value)
    compare = abs(number) if spec.unsigned else number
    if spec.integer and not isinstance(compare, numbers.Integral):
        compare = round(compare)
    if spec.lo <= compare <= spec.hi:
        return func(self, obj, value)
    return _clamp(spec, func, self, obj, value, above=compare > spec.hi)


def _clamp(spec: _Spec, func: Callable[..., Any], self: Any, obj: Any, value: Any, *, above: bool) -> Any:
    name = _attribute_name(obj, self)
    bound = spec.hi if above else spec.lo
    if spec.integer:
        bound = int(bound)
    side = "above the maximum" if above else "below the minimum"
    narrowed = (self.max != spec.hi) if above else (self.min != spec.lo)
    note = f" (declared {self.max if above else self.min}; the register holds no more)" if narrowed else ""
    if is_strict(obj):
        raise BadValueError(
            f"{name}: {value!r} is {side} {bound!r}{note}; allowed: {spec.lo!r} .. {spec.hi!r} "
            "(strict mode: out-of-range values are refused, not clamped)",
            attribute=name, value=value,
        )
    board = _board_of(obj)
    warned = _state(board if board is not None else obj)["warned"]
    key = (name, above)
    with _STATE_LOCK:
        first = key not in warned
        warned.add(key)
    if not first:
        logger.debug("%s: %r clamped to %r (%s)", name, value, bound, side)
        return func(self, obj, bound)
    lock = board_lock(obj)
    if lock is None:
        func(self, obj, bound)
        took = self.__get__(obj, type(obj))
    else:
        with lock:
            func(self, obj, bound)
            took = self.__get__(obj, type(obj))
    logger.warning("%s: %r is %s %r%s; clamped, the board took %r (further clamps of %s %s are "
                   "logged at DEBUG; strict mode refuses them)", name, value, side, bound, note, took, name, side)
    return None


def _set_select(spec: _Spec, func: Callable[..., Any], self: Any, obj: Any, value: Any) -> Any:
    if spec.numeric_options:
        _check_number(self, obj, value, complex_ok=False, allowed="a finite real number (one of the options)")
    elif isinstance(value, (bool, np.bool_)):
        options = self.options(obj)
        if not any(type(key) in (bool, np.bool_) for key in options):
            raise _type_error(self, obj, value, f"one of {list(options)!r}")
    elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise BadValueError(f"{_attribute_name(obj, self)}: {value!r} is not an option; allowed: "
                            f"one of {list(self.options(obj))!r}", attribute=_attribute_name(obj, self), value=value)
    try:
        return func(self, obj, value)
    except BadValueError:
        raise
    except ValueError as exc:
        if f"SelectAttribute {self.name} of module" not in str(exc):
            raise
        name = _attribute_name(obj, self)
        raise BadValueError(f"{name}: {value!r} is not an option; allowed: one of {list(self.options(obj))!r}",
                            attribute=name, value=value) from exc


# -- checks ----------------------------------------------------------------------------------------
def _check_number(self: Any, obj: Any, value: Any, *, complex_ok: bool, what: str = "",
                  allowed: str | None = None, whole: Any = None) -> Any:
    """The value as a Python/numpy number if it is a finite number of the right kind; else raise."""
    if allowed is None:
        allowed = ("a complex or real number with finite parts" if complex_ok
                   else "a finite real number (int, float or numpy scalar)")
    number = value
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in ("iufc" if complex_ok else "iuf"):
        number = value.item()
    if isinstance(number, (bool, np.bool_)) or not isinstance(number, numbers.Complex if complex_ok else numbers.Real):
        raise _type_error(self, obj, value, allowed, what, whole)
    if isinstance(number, numbers.Integral):
        return number
    if isinstance(number, numbers.Real):
        finite = math.isfinite(number)
    else:
        as_complex = complex(number)
        finite = math.isfinite(as_complex.real) and math.isfinite(as_complex.imag)
    if not finite:
        name = _attribute_name(obj, self)
        raise BadValueError(f"{name}: {what}{value!r}{_within(whole)} is not a finite number; allowed: {allowed}"
                            + _range_text(self), attribute=name, value=value if whole is None else whole)
    return number


def _check_sequence(self: Any, obj: Any, value: Any, *, complex_ok: bool) -> None:
    if isinstance(value, (str, bytes, bytearray, dict)) or value is None:
        raise _type_error(self, obj, value, "a number or a list of numbers")
    if isinstance(value, Iterable) and not (isinstance(value, np.ndarray) and value.ndim == 0):
        for element in list(value):
            _check_number(self, obj, element, complex_ok=complex_ok, what="element ", whole=value)
    else:
        _check_number(self, obj, value, complex_ok=complex_ok)


def _check_bool(self: Any, obj: Any, value: Any, *, ignore_ok: bool) -> None:
    if type(value) is bool or isinstance(value, np.bool_):
        return
    if ignore_ok and isinstance(value, str) and value.lower() in ("true", "false", "ignore"):
        return
    if isinstance(value, numbers.Real) and (isinstance(value, numbers.Integral) or math.isfinite(value)):
        return
    allowed = "True or False (or a finite number: 0 is False)" + (", or 'true'/'false'/'ignore'" if ignore_ok else "")
    raise _type_error(self, obj, value, allowed)


def _type_error(self: Any, obj: Any, value: Any, allowed: str, what: str = "",
                whole: Any = None) -> BadValueTypeError:
    name = _attribute_name(obj, self)
    return BadValueTypeError(f"{name}: {what}{value!r} ({type(value).__name__}){_within(whole)} is not accepted; "
                             f"allowed: {allowed}" + _range_text(self), attribute=name,
                             value=value if whole is None else whole)


def _within(whole: Any) -> str:
    return "" if whole is None else f" of {whole!r}"


def _range_text(self: Any) -> str:
    spec = self.__dict__.get(_SPEC_ATTR)
    if spec is None or not spec.ranged:
        return ""
    return f" in [{spec.lo!r}, {spec.hi!r}]"


# -- helpers ------------------------------------------------------------------------------------------
def _attribute_name(obj: Any, descriptor: Any) -> str:
    """``module.attribute``, with the parent modules of a nested software module."""
    names = [str(descriptor.__dict__.get("name", "?"))]
    modules = sys.modules.get("pyrpl.modules")
    current, depth = obj, 0
    while current is not None and depth < 8:
        names.append(str(getattr(current, "name", None) or type(current).__name__))
        parent = current.__dict__.get("parent") if hasattr(current, "__dict__") else None
        if modules is None or not isinstance(parent, modules.Module):
            break
        current, depth = parent, depth + 1
    return ".".join(reversed(names))


def _state(board: Any) -> dict[str, Any]:
    with _STATE_LOCK:
        state = _BOARD_STATE.get(board)
        if state is None:
            state = _BOARD_STATE[board] = {"strict": False, "warned": set()}
        return state


def _board_of(target: Any) -> Any:
    """The ``RedPitaya`` a RedPitaya, Pyrpl instance or module belongs to, or None."""
    module = sys.modules.get("pyrpl.redpitaya")
    if module is None:
        return None
    red_pitaya = module.RedPitaya
    seen: set[int] = set()
    current = target
    while current is not None and id(current) not in seen:
        if isinstance(current, red_pitaya):
            return current
        seen.add(id(current))
        d = getattr(current, "__dict__", {})
        for key in ("_rp", "rp"):
            rp = d.get(key)
            if isinstance(rp, red_pitaya):
                return rp
        current = d.get("parent")
    return None


def _is_hardware(obj: Any) -> bool:
    modules = sys.modules.get("pyrpl.modules")
    return modules is not None and isinstance(obj, modules.HardwareModule)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_complex_list(descriptor: Any) -> bool:
    return isinstance(descriptor, sys.modules["pyrpl.attributes"].ComplexProperty)


def _upstream_normalisation(cls: type, base: type) -> bool:
    return cls.validate_and_normalize is base.validate_and_normalize  # type: ignore[attr-defined]


def _keeps_upstream_range(cls: type, attrs: Any) -> bool:
    """The class normalises with one of pyrpl.attributes' own methods (min/max clamp semantics known)."""
    method = cls.validate_and_normalize  # type: ignore[attr-defined]
    return getattr(method, "__module__", None) == attrs.__name__


def _is_int_register(descriptor: Any, attrs: Any) -> bool:
    return isinstance(descriptor, attrs.IntRegister) and not isinstance(descriptor, attrs.FloatRegister)


def _register_range(descriptor: Any, attrs: Any) -> tuple[float, float]:
    """The python-side range the register's codes cover (rule 1 of the module docstring)."""
    bits = int(getattr(descriptor, "bits", 32))
    bitmask = getattr(descriptor, "bitmask", None)
    if isinstance(descriptor, attrs.FrequencyRegister):
        return 0.0, descriptor.CLOCK_FREQUENCY * (2**bits - 1) / 2**bits
    if isinstance(descriptor, attrs.PWMRegister) or not hasattr(descriptor, "from_python"):
        return -math.inf, math.inf  # own non-linear encoding that saturates
    if isinstance(descriptor, attrs.FloatRegister):
        if descriptor.invert:
            return -math.inf, math.inf  # 1/x encoding: saturates, not monotonic
        top = 2 ** (bits - 1) - 1 if descriptor.signed else 2**bits - 1
        bottom = -(2 ** (bits - 1)) if descriptor.signed else 0
        if bitmask is not None:
            top &= int(bitmask)
        return bottom / descriptor.norm, top / descriptor.norm
    if isinstance(descriptor, attrs.IntRegister):
        top = 2**bits - 1
        if bitmask is not None:
            top &= int(bitmask)
        return 0, top
    return -math.inf, math.inf


def _power_of_two(x: float) -> int | None:
    """k if ``x == 2**k`` exactly (k >= 0), else None."""
    if isinstance(x, int):
        return x.bit_length() - 1 if x >= 1 and x & (x - 1) == 0 else None
    if not math.isfinite(x) or x < 1:
        return None
    mantissa, exponent = math.frexp(x)
    return exponent - 1 if mantissa == 0.5 else None
