"""What a board server offers: the typed registry, built from PyRPL's own classes.

A remote client may touch exactly what this registry lists, and the server
resolves every request through it: there is no ``getattr`` on a name a
client sent, no pickle and no eval. It is not a hand-written list of
attributes. For each module of the board it reads the module's class:

* attributes: the PyRPL descriptors (``BaseAttribute`` instances) the class
  and its bases define, with a kind derived from the descriptor class
  (``FloatRegister`` -> ``float``, ``SelectRegister`` -> ``select``...).
  Names starting with ``_`` are not offered. An attribute is writable when
  PyRPL itself exposes it to users as a setting (it is in the module's
  ``_setup_attributes`` or ``_gui_attributes``); everything else is
  read-only (``voltage_in1``, ``current_timestamp``, ``id``...).
* methods: an explicit allow-list per module kind (:data:`METHODS`), each
  entry saying whether it changes the board (refused while another client
  holds the lock), whether it may run long (it then runs on a worker thread
  of the server, so other clients are served meanwhile) and which keywords
  it takes. A method is offered only if the class really has it, and
  :func:`build_registry` fails at start-up if the allow-list names one it
  lacks (a PyRPL upgrade that renamed something is caught at once).

The registry is sent to each client when it connects, with its SHA-256
over a canonical JSON form; the client recomputes the hash and checks the
protocol and PyRPL versions before it trusts it (:meth:`Registry.verify`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import RegistryMismatchError, RemoteNameError
from .wire import PROTOCOL

__all__ = ("METHODS", "PROPERTIES", "AttributeSpec", "MethodSpec", "ModuleSpec", "Registry", "build_registry")

#: Software modules a server offers besides the hardware modules (by PyRPL class name).
SOFTWARE_KINDS: tuple[str, ...] = ("NetworkAnalyzer", "SpectrumAnalyzer")


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of a module: its kind, whether a client may set it, PyRPL's descriptor class, its range."""

    name: str
    kind: str
    writable: bool
    descriptor: str
    #: ``(min, max)`` a number really takes on the board (the register's range), if finite and known
    bounds: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "writable": self.writable, "descriptor": self.descriptor,
                "bounds": None if self.bounds is None else list(self.bounds)}


@dataclass(frozen=True)
class MethodSpec:
    """One allowed method: does it change the board, may it run long, which keywords it takes.

    ``params`` None means the method takes the module's setup attributes as
    keywords (``setup(**kwds)``); otherwise the tuple lists the names that
    may be passed, by keyword or by position in that order.
    ``timeout_param`` names the argument that bounds a long call, so the
    client waits for it plus its own margin.
    """

    name: str
    writes: bool
    long: bool = False
    params: tuple[str, ...] | None = ()
    timeout_param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"writes": self.writes, "long": self.long,
                "params": None if self.params is None else list(self.params), "timeout_param": self.timeout_param}


@dataclass(frozen=True)
class ModuleSpec:
    """A module of the board (``asg0``) and what it offers."""

    name: str
    kind: str
    attributes: Mapping[str, AttributeSpec]
    methods: Mapping[str, MethodSpec]
    setup_attributes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "setup_attributes": list(self.setup_attributes),
            "attributes": {n: a.as_dict() for n, a in sorted(self.attributes.items())},
            "methods": {n: m.as_dict() for n, m in sorted(self.methods.items())},
        }


def _m(name: str, *, writes: bool, long: bool = False, params: tuple[str, ...] | None = (),
       timeout_param: str | None = None) -> MethodSpec:
    return MethodSpec(name, writes, long, params, timeout_param)


_SETUP = (_m("setup", writes=True, params=None), _m("get_setup_attributes", writes=False))
_ACQUISITION = (_m("single", writes=True, long=True, params=("timeout",), timeout_param="timeout"),
                _m("stop", writes=True), _m("continuous", writes=True))

#: The public methods a client may call, per PyRPL module class (explicit, reviewed by hand).
METHODS: dict[str, tuple[MethodSpec, ...]] = {
    "Scope": _SETUP + _ACQUISITION + (_m("curve_ready", writes=False),),
    "Asg": _SETUP + (_m("trig", writes=True),),
    "Pid": _SETUP,
    "Iq": _SETUP + (_m("lockin_xy", writes=True, long=True, params=("integration_time",)),),  # rpl_noqt/lockin.py
    "IIR": _SETUP,
    "Trig": _SETUP,
    "Pwm": _SETUP,
    "HK": _SETUP,
    "AMS": _SETUP,
    "Sampler": (_m("mean_stddev", writes=False, long=True, params=("signal", "t")),
                _m("stats", writes=False, long=True, params=("signal", "t"))),
    "NetworkAnalyzer": _SETUP + _ACQUISITION,
    "SpectrumAnalyzer": _SETUP + _ACQUISITION,
}

#: Plain Python properties (not PyRPL descriptors) worth offering, per class: name -> (kind, writable).
PROPERTIES: dict[str, dict[str, tuple[str, bool]]] = {
    # running_state: "stopped", "running_single", ... (read-only mirror of PyRPL's _running_state)
    "Scope": {"times": ("array", False), "running_state": ("select", False)},
    "NetworkAnalyzer": {"running_state": ("select", False)},
    "SpectrumAnalyzer": {"running_state": ("select", False)},
    "Asg": {"data": ("array", True)},
    "Iq": {"bandwidths": ("list", False)},
}

# descriptor class name -> kind, checked in this order (subclasses first)
_KIND_ORDER: tuple[tuple[str, str], ...] = (
    ("BoolProperty", "bool"),
    ("SelectProperty", "select"),
    ("ComplexAttributeListProperty", "list"),
    ("FloatAttributeListProperty", "list"),
    ("BasePropertyListProperty", "list"),
    ("ComplexProperty", "complex"),
    ("FloatProperty", "float"),
    ("IntProperty", "int"),
    ("FilterProperty", "filter"),
    ("StringProperty", "str"),
)
# descriptors that are GUI helpers, module references or curve-database links: not offered
_NOT_OFFERED = ("ModuleAttribute", "Plotter", "DataProperty", "CurveSelectProperty", "ProxyProperty")
_NAME = re.compile(r"[a-z][A-Za-z0-9_]*\Z")


def _kind_of(descriptor: Any) -> str | None:
    names = {c.__name__ for c in type(descriptor).__mro__}
    if names & set(_NOT_OFFERED):
        return None
    for class_name, kind in _KIND_ORDER:
        if class_name in names:
            return kind
    return "any"


def _descriptors(cls: type) -> dict[str, Any]:
    from pyrpl.attributes import BaseAttribute

    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, BaseAttribute):
                found[name] = value
            elif name in found:  # overridden by something that is not a descriptor
                del found[name]
    return found


def _bounds(descriptor: Any, kind: str) -> tuple[float, float] | None:
    """What rpl-noqt's value checks let the attribute take (a client checks a value before sending it)."""
    from ..board.values import effective_bounds

    try:
        low, high = effective_bounds(descriptor, hardware=kind not in SOFTWARE_KINDS)
        low, high = float(low), float(high)
    except (AttributeError, TypeError, ValueError, KeyError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def module_spec(name: str, cls: type) -> ModuleSpec:
    """The registry entry of a module called ``name`` whose class is ``cls``."""
    kind = cls.__name__
    settable = set(getattr(cls, "_setup_attributes", ())) | set(getattr(cls, "_gui_attributes", ()))
    attributes: dict[str, AttributeSpec] = {}
    for attr_name, descriptor in _descriptors(cls).items():
        if not _NAME.match(attr_name):
            continue
        attr_kind = _kind_of(descriptor)
        if attr_kind is None:
            continue
        readonly = type(descriptor).__name__ == "ConstantIntRegister"
        attributes[attr_name] = AttributeSpec(attr_name, attr_kind, attr_name in settable and not readonly,
                                              type(descriptor).__name__,
                                              _bounds(descriptor, kind) if attr_kind in ("float", "int") else None)
    for prop_name, (prop_kind, writable) in PROPERTIES.get(kind, {}).items():
        if not isinstance(inspect.getattr_static(cls, prop_name, None), property):
            raise RuntimeError(f"registry: PyRPL class {kind} has no property {prop_name!r} (allow-list out of date)")
        attributes[prop_name] = AttributeSpec(prop_name, prop_kind, writable, "property")
    methods: dict[str, MethodSpec] = {}
    for spec in METHODS.get(kind, ()):
        if not callable(getattr(cls, spec.name, None)):
            raise RuntimeError(f"registry: PyRPL class {kind} has no method {spec.name!r} (allow-list out of date)")
        methods[spec.name] = spec
    setup_attributes = tuple(a for a in getattr(cls, "_setup_attributes", ()) if a in attributes)
    return ModuleSpec(name, kind, attributes, methods, setup_attributes)


@dataclass(frozen=True)
class Registry:
    """The callable surface of one board server, and the facts a client checks before using it."""

    modules: Mapping[str, ModuleSpec]
    pyrpl_version: str
    protocol: int = PROTOCOL
    hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", _digest(self._content()))

    # -- lookups (both sides) ------------------------------------------------------------
    def module(self, name: str) -> ModuleSpec:
        try:
            return self.modules[name]
        except (KeyError, TypeError):
            raise RemoteNameError(f"the board server offers no module {name!r} "
                                  f"(it offers: {', '.join(sorted(self.modules))})") from None

    def attribute(self, path: str) -> tuple[ModuleSpec, AttributeSpec]:
        """``"asg0.frequency"`` -> its specs, or RemoteNameError."""
        module, name = self._split(path)
        try:
            return module, module.attributes[name]
        except KeyError:
            hint = " (it is a method: call it)" if name in module.methods else ""
            raise RemoteNameError(f"{module.name} ({module.kind}) has no remote attribute {name!r}{hint}") from None

    def method(self, path: str) -> tuple[ModuleSpec, MethodSpec]:
        """``"scope.single"`` -> its specs, or RemoteNameError."""
        module, name = self._split(path)
        try:
            return module, module.methods[name]
        except KeyError:
            allowed = ", ".join(sorted(module.methods)) or "none"
            raise RemoteNameError(f"{module.name} ({module.kind}) has no remote method {name!r} "
                                  f"(allowed: {allowed})") from None

    def _split(self, path: object) -> tuple[ModuleSpec, str]:
        if not isinstance(path, str) or path.count(".") != 1:
            raise RemoteNameError(f"expected 'module.name', got {path!r}")
        module_name, name = path.split(".")
        return self.module(module_name), name

    # -- wire form -----------------------------------------------------------------------
    def _content(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "pyrpl_version": self.pyrpl_version,
                "modules": {n: m.as_dict() for n, m in sorted(self.modules.items())}}

    def to_wire(self) -> dict[str, Any]:
        return dict(self._content(), hash=self.hash)

    @classmethod
    def from_wire(cls, data: object) -> Registry:
        """Rebuild and verify a registry a server sent (hash recomputed over the content)."""
        if not isinstance(data, dict):
            raise RegistryMismatchError(f"the server sent no registry (got {type(data).__name__})")
        try:
            content = {k: data[k] for k in ("protocol", "pyrpl_version", "modules")}
            sent_hash = data["hash"]
            modules = {name: _module_from_wire(name, m) for name, m in content["modules"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryMismatchError(f"the server sent a malformed registry ({type(exc).__name__}: {exc})") from None
        actual = _digest(content)
        if sent_hash != actual:
            raise RegistryMismatchError(f"the server's registry does not match its hash (sent {str(sent_hash)[:12]}..., "
                                        f"content hashes to {actual[:12]}...): refusing it")
        registry = cls(modules, str(content["pyrpl_version"]), content["protocol"])
        if registry.hash != actual:  # our own form of the content must agree with the sender's
            raise RegistryMismatchError("the server's registry uses fields this client does not know: "
                                        "upgrade rpl-noqt on one side")
        return registry

    def verify(self, *, pyrpl_versions: Iterable[str], expected_hash: str | None = None) -> None:
        """Refuse a registry from another protocol, another PyRPL or not the pinned one."""
        if self.protocol != PROTOCOL:
            raise RegistryMismatchError(f"the server speaks rpl-noqt remote protocol {self.protocol}, this client "
                                        f"{PROTOCOL}: install the same rpl-noqt on both sides")
        versions = tuple(pyrpl_versions)
        if self.pyrpl_version not in versions:
            raise RegistryMismatchError(f"the server runs PyRPL {self.pyrpl_version}, this client supports "
                                        f"{', '.join(versions)}: install the same rpl-noqt and PyRPL on both sides")
        if expected_hash is not None and self.hash != expected_hash:
            raise RegistryMismatchError(f"the server's registry hash is {self.hash[:16]}..., expected "
                                        f"{expected_hash[:16]}...: the server offers another surface than before")


def _digest(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _module_from_wire(name: str, data: Mapping[str, Any]) -> ModuleSpec:
    attributes = {n: AttributeSpec(n, str(a["kind"]), bool(a["writable"]), str(a["descriptor"]),
                                   None if a["bounds"] is None else (float(a["bounds"][0]), float(a["bounds"][1])))
                  for n, a in data["attributes"].items()}
    methods = {n: MethodSpec(n, bool(m["writes"]), bool(m["long"]),
                             None if m["params"] is None else tuple(str(p) for p in m["params"]),
                             None if m["timeout_param"] is None else str(m["timeout_param"]))
               for n, m in data["methods"].items()}
    return ModuleSpec(name, str(data["kind"]), attributes, methods, tuple(str(a) for a in data["setup_attributes"]))


def build_registry(pyrpl_instance: Any, pyrpl_version: str) -> tuple[Registry, dict[str, Any]]:
    """The registry of a running ``Pyrpl``, and the module objects it names (name -> module).

    The module objects are collected here, once, so that the server never
    looks a client's string up on a Python object.
    """
    objects: dict[str, Any] = {}
    specs: dict[str, ModuleSpec] = {}
    modules = list(pyrpl_instance.hardware_modules) + [
        m for m in pyrpl_instance.software_modules if type(m).__name__ in SOFTWARE_KINDS]
    for module in modules:
        name = module.name
        if not _NAME.match(name) or name in specs:
            raise RuntimeError(f"registry: unexpected module name {name!r}")
        specs[name] = module_spec(name, type(module))
        objects[name] = module
    return Registry(specs, pyrpl_version), objects
