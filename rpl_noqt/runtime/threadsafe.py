"""Put every PyRPL board behind its :class:`~rpl_noqt.runtime.locks.DeviceLock`.

Post-import hooks (registered by :func:`rpl_noqt.activate`) patch, as PyRPL's
modules load:

* ``pyrpl.attributes``: ``__get__``/``__set__`` of every attribute descriptor
  class (present and future subclasses) take the board lock of the module
  they are read on or written to;
* ``pyrpl.modules``: the module metaclass wraps every public method and
  property of every Module class (present and future) with the board lock;
* ``pyrpl.redpitaya_client``: ``MonitorClient`` becomes rpl-noqt's
  :class:`~rpl_noqt.board.client.BoardClient` (deadlines, validated replies,
  :class:`~rpl_noqt.errors.BoardConnectionError`), which takes the lock of
  its board for every request; ``DummyClient``'s ``reads``/``writes`` take
  it too; both refuse to run once their session is closed;
* ``pyrpl.redpitaya``: each ``RedPitaya`` gets its own lock and its own copy
  of the connection parameters (upstream shares one module-global dict
  between all boards), and, when asked (``rpl_noqt_direct=True``, or the
  board's ``host:port`` listed in ``$RPL_NOQT_DIRECT``), connects straight to
  a running monitor server with no SSH, no FPGA upload and no server install;
* ``pyrpl.memory``: config writes from the save timer take the board lock;
* ``pyrpl.acquisition_module``: blocking ``single()`` calls on one module
  queue instead of cancelling each other (upstream's ``_renew_run`` cancels
  the previous run: fine for one GUI button, wrong for several threads).

How a module finds its board: a hardware module through its ``_rp``, a
software module through its parents up to the ``Pyrpl`` instance; the lock is
cached on the module after the first lookup.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import re
import threading
import types
from collections.abc import Callable
from typing import Any

from . import blocking
from ..board import policy as link_policy
from ..board.client import LOCK_ATTR, BoardClient, BoardClosedError, starting_client_of
from ..errors import BoardConnectionError
from .locks import DeviceLock, FifoLock
from .patching import PatchRecord

__all__ = ("BoardClosedError", "board_lock", "install", "run_lock_of")

logger = logging.getLogger(__name__)

POLICY_ATTR = "_rpl_noqt_link_policy"
DIRECT_PARAMETER = "rpl_noqt_direct"
#: ``host:port[,host:port...]``: boards to reach directly even without the parameter
DIRECT_ENV = "RPL_NOQT_DIRECT"
_CONSTRUCTION_LOCK = threading.RLock()  # RedPitaya construction swaps a module global
_CLIENT_LOCK_LOCK = threading.Lock()  # creates private locks for stray clients


def board_lock(obj: Any) -> DeviceLock | None:
    """The lock of the board ``obj`` (a PyRPL module or RedPitaya) belongs to."""
    try:
        d = obj.__dict__
    except AttributeError:
        return None
    lock = d.get(LOCK_ATTR)
    if lock is not None:
        return lock
    lock = _find_lock(obj, d)
    if lock is not None:
        d[LOCK_ATTR] = lock
    return lock


def _find_lock(obj: Any, d: dict[str, Any]) -> DeviceLock | None:
    rp = d.get("_rp")
    if rp is not None:
        return rp.__dict__.get(LOCK_ATTR)
    seen: set[int] = set()
    parent = d.get("parent")
    while parent is not None and id(parent) not in seen:
        seen.add(id(parent))
        pd = getattr(parent, "__dict__", {})
        lock = pd.get(LOCK_ATTR)
        if lock is not None:
            return lock
        rp = pd.get("rp") or pd.get("_rp")
        if rp is not None and rp is not parent:
            return rp.__dict__.get(LOCK_ATTR)
        parent = pd.get("parent")
    return None


def _mark(wrapper: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    wrapper._rpl_noqt_locked = True  # type: ignore[attr-defined]
    wrapper.__wrapped__ = original  # type: ignore[attr-defined]
    return wrapper


def _locked_method(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        lock = board_lock(self)
        if lock is None:
            return func(self, *args, **kwargs)
        lock.acquire()  # not ``with``: this wrapper runs on every attribute access
        try:
            return func(self, *args, **kwargs)
        finally:
            lock.release()

    return _mark(locked, func)


def _locked_get(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def __get__(self: Any, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return func(self, instance, owner)
        lock = board_lock(instance)
        if lock is None:
            return func(self, instance, owner)
        lock.acquire()
        try:
            return func(self, instance, owner)
        finally:
            lock.release()

    return _mark(__get__, func)


def _locked_set(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def __set__(self: Any, instance: Any, value: Any) -> None:
        lock = board_lock(instance)
        if lock is None:
            return func(self, instance, value)
        lock.acquire()
        try:
            return func(self, instance, value)
        finally:
            lock.release()

    return _mark(__set__, func)


def _is_locked(obj: object) -> bool:
    return bool(getattr(obj, "_rpl_noqt_locked", False))


def install(redirector: Any, record: PatchRecord) -> None:
    """Register the hooks on ``redirector`` (idempotent through the record)."""
    redirector.when_imported("pyrpl.attributes", lambda m: _patch_attributes(m, record))
    redirector.when_imported("pyrpl.modules", lambda m: _patch_modules(m, record))
    redirector.when_imported("pyrpl.redpitaya_client", lambda m: _patch_clients(m, record))
    redirector.when_imported("pyrpl.redpitaya", lambda m: _patch_redpitaya(m, record))
    redirector.when_imported("pyrpl.memory", lambda m: _patch_memory_writes(m, record))
    redirector.when_imported("pyrpl.acquisition_module", lambda m: _patch_acquisitions(m, record))


# -- attribute descriptors -----------------------------------------------------------------
def _lock_descriptor_class(cls: type, record: PatchRecord) -> None:
    for name, make in (("__get__", _locked_get), ("__set__", _locked_set)):
        func = cls.__dict__.get(name)
        if func is not None and not _is_locked(func):
            record.patch_attribute(cls, name, make(func), "takes the board lock of the module read or written")


def _patch_attributes(module: types.ModuleType, record: PatchRecord) -> None:
    base = module.BaseAttribute
    if record.is_patched(base, "__init_subclass__"):
        return
    pending = [base]
    while pending:
        cls = pending.pop()
        _lock_descriptor_class(cls, record)
        pending.extend(cls.__subclasses__())

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        super(base, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
        _lock_descriptor_class(cls, record)

    record.patch_attribute(base, "__init_subclass__", classmethod(__init_subclass__),
                           "attribute descriptor classes defined later are locked too")


# -- module classes ------------------------------------------------------------------------
def _lock_module_class(cls: type, record: PatchRecord) -> int:
    wrapped = 0
    for name, value in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if inspect.isfunction(value) and not _is_locked(value):
            setattr(cls, name, _locked_method(value))
            wrapped += 1
        elif isinstance(value, property) and not _is_locked(value.fget):
            setattr(cls, name, property(
                _locked_method(value.fget) if value.fget else None,
                _locked_method(value.fset) if value.fset else None,
                value.fdel, value.__doc__,
            ))
            wrapped += 1
    return wrapped


def _patch_modules(module: types.ModuleType, record: PatchRecord) -> None:
    meta = module.ModuleMetaClass
    if record.is_patched(meta, "__init__"):
        return
    original_init = meta.__init__
    pending = [module.Module]
    count = 0
    while pending:
        cls = pending.pop()
        count += _lock_module_class(cls, record)
        pending.extend(cls.__subclasses__())

    def __init__(cls: type, classname: str, bases: tuple[type, ...], class_dict: dict[str, Any]) -> None:
        original_init(cls, classname, bases, class_dict)
        _lock_module_class(cls, record)

    record.patch_attribute(meta, "__init__", _mark(__init__, original_init),
                           "every public method and property of every Module class takes the board lock")
    logger.debug("locked %d methods/properties of existing Module classes", count)


# -- clients --------------------------------------------------------------------------------------
def _client_lock(client: Any) -> DeviceLock:
    lock = client.__dict__.get(LOCK_ATTR)
    if lock is None:  # a client used on its own, outside any RedPitaya
        with _CLIENT_LOCK_LOCK:
            lock = client.__dict__.setdefault(LOCK_ATTR, DeviceLock(f"client-{id(client):x}"))
    return lock


def _locked_io(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def io(self: Any, addr: int, arg: Any) -> Any:
        if self.__dict__.get("_rpl_noqt_closed"):
            raise BoardClosedError(
                f"the session of this board was closed; register access at {addr:#010x} refused"
            )
        with _client_lock(self):
            return func(self, addr, arg)

    return _mark(io, func)


def _patch_clients(module: types.ModuleType, record: PatchRecord) -> None:
    if module.MonitorClient is not BoardClient:
        record.patch_attribute(module, "MonitorClient", BoardClient,
                               "rpl-noqt's transport: connect timeout, per-request deadline, validated replies, "
                               "BoardConnectionError instead of None, bounded reconnects, board lock per request")
    cls = module.DummyClient
    for name in ("reads", "writes"):
        func = cls.__dict__[name]
        if not _is_locked(func):
            record.patch_attribute(cls, name, _locked_io(func),
                                   "one request/response at a time per board (no stream desync)")


# -- RedPitaya ------------------------------------------------------------------------------------
class _NoShell:
    """Stands in for the SSH shell of a board reached directly (no SSH)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.channel = types.SimpleNamespace(close=lambda: None)

    def ask(self, question: str = "") -> str:
        logger.debug("direct connection to %s: shell command %r skipped", self.hostname, question)
        return ""

    def startscp(self) -> None:
        pass


def _direct(rp: Any) -> bool:
    parameters = getattr(rp, "parameters", {})
    if parameters.get(DIRECT_PARAMETER):
        return True
    return _listed_as_direct(parameters.get("hostname"), parameters.get("port"))


def direct_boards_from_env() -> set[tuple[str, int]]:
    """The boards listed in ``$RPL_NOQT_DIRECT`` (``host:port[,host:port...]``).

    A RedPitaya whose hostname and port match an entry is reached directly,
    exactly as with ``rpl_noqt_direct=True``: for code that builds PyRPL
    objects itself (the pyrpl test suite under ``rpl-noqt compat``), where the
    new parameter cannot be passed. A malformed entry raises ``ValueError``.
    """
    value = os.environ.get(DIRECT_ENV, "").strip()
    boards: set[tuple[str, int]] = set()
    for entry in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{DIRECT_ENV}={value!r}: entry {entry!r} is not host:port (port 1-65535)")
        boards.add((host.strip().lower(), int(port)))
    return boards


def _listed_as_direct(hostname: Any, port: Any) -> bool:
    if not os.environ.get(DIRECT_ENV) or not isinstance(hostname, str):
        return False
    try:
        return (hostname.strip().lower(), int(port)) in direct_boards_from_env()
    except (TypeError, ValueError):
        logger.error("ignoring malformed %s=%r", DIRECT_ENV, os.environ.get(DIRECT_ENV), exc_info=True)
        return False


_RELEASE_ATTR = "_rpl_noqt_release_construction"


class _ParametersSlot:
    """``RedPitaya.parameters``: stored on the instance as before; the first
    binding (upstream's ``self.parameters = defaultparameters``) ends the
    serialised part of the construction, as the board now has its own dict."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__["parameters"]
        except KeyError:
            raise AttributeError("parameters") from None

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["parameters"] = value
        release = obj.__dict__.pop(_RELEASE_ATTR, None)
        if release is not None:
            release()

    def __delete__(self, obj: Any) -> None:
        obj.__dict__.pop("parameters", None)


def _patch_redpitaya(module: types.ModuleType, record: PatchRecord) -> None:
    cls = module.RedPitaya
    if record.is_patched(cls, "__init__"):
        return
    pristine = dict(module.defaultparameters)
    original_init = cls.__init__

    def __init__(self: Any, config: Any = None, **kwargs: Any) -> None:
        lock = DeviceLock(str(kwargs.get("hostname", "redpitaya")))
        self.__dict__[LOCK_ATTR] = lock
        self.__dict__[POLICY_ATTR] = link_policy.current()
        # Upstream binds the module-global ``defaultparameters`` dict as every
        # board's ``parameters``. Each board gets a fresh copy of the defaults
        # there; only the moment until upstream has bound it is serialised
        # (the ``parameters`` slot below releases it), not the whole connect,
        # so a slow board does not hold up another one's construction.
        _CONSTRUCTION_LOCK.acquire()
        done = False

        def release() -> None:
            nonlocal done
            if not done:
                done = True
                module.defaultparameters = dict(pristine)
                _CONSTRUCTION_LOCK.release()

        self.__dict__[_RELEASE_ATTR] = release
        try:
            module.defaultparameters = dict(pristine)
            with lock:
                original_init(self, config, **kwargs)
        except BaseException:
            _close_half_built(self)
            raise
        finally:
            self.__dict__.pop(_RELEASE_ATTR, None)
            release()  # upstream failed before binding its parameters
        board = self.__dict__[LOCK_ATTR]  # a RedPitaya joining an open link took the link's lock
        own = self.__dict__.get("parameters")
        if own is not None and board is lock:
            lock.name = f"{own.get('hostname')}:{own.get('port')}"
        tree = getattr(self, "c", None)
        if tree is not None:
            tree.__dict__[LOCK_ATTR] = board

    record.patch_attribute(cls, "__init__", _mark(__init__, original_init),
                           "own board lock and own copy of the connection parameters per RedPitaya")
    record.patch_attribute(cls, "parameters", _ParametersSlot(),
                           "binding a board's parameters ends the serialised part of its construction")

    def attach_lock(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def start(self: Any) -> Any:
            with link_policy.using(self.__dict__.get(POLICY_ATTR)), starting_client_of(self):
                result = func(self)
            if self.client is not None:
                self.client.__dict__[LOCK_ATTR] = board_lock(self)
            return result

        return _mark(start, func)

    for name in ("startclient", "startdummyclient"):
        record.patch_attribute(cls, name, attach_lock(cls.__dict__[name]),
                               "the client shares its board's lock and is built with its board's link policy")

    upstream_endclient = cls.__dict__["endclient"]

    @functools.wraps(upstream_endclient)
    def endclient(self: Any) -> Any:
        client = self.__dict__.get("client")
        if isinstance(client, BoardClient):
            client.close()
        return upstream_endclient(self)

    record.patch_attribute(cls, "endclient", _mark(endclient, upstream_endclient),
                           "closes the client now (upstream left it to garbage collection, which the modules "
                           "holding it delay): the board's link is released at end()/_clear()")

    def direct_or(name: str, direct_impl: Callable[..., Any]) -> None:
        upstream = cls.__dict__[name]

        @functools.wraps(upstream)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _direct(self):
                return direct_impl(self, *args, **kwargs)
            return upstream(self, *args, **kwargs)

        record.patch_attribute(cls, name, _mark(method, upstream),
                               f"with {DIRECT_PARAMETER}=True: {direct_impl.__doc__}")

    def no_ssh(self: Any, attempt: int = 0) -> bool:
        """no SSH login; a stand-in shell answers nothing"""
        self.ssh = _NoShell(self.parameters["hostname"])
        return True

    def no_os_version(self: Any) -> None:
        """OS version not queried (no shell)"""
        self.os_version = "unknown (direct connection)"

    def no_server_start(self: Any, port: int | None = None) -> int:
        """the monitor server already runs; (re)connecting is all there is to do"""
        return self.parameters["port"]

    def no_fpga_upload(self: Any, filename: Any = None, dtbo_filename: Any = None) -> None:
        """no FPGA upload; the monitor server runs the image it has"""
        logger.debug("direct connection to %s: FPGA upload skipped", self.parameters["hostname"])

    def no_server_install(self: Any) -> None:
        """no server installation; the monitor server already runs"""

    _translate_ssh_failures(cls, record)
    direct_or("start_ssh", no_ssh)
    direct_or("get_os_version", no_os_version)
    direct_or("startserver", no_server_start)
    direct_or("restartserver", no_server_start)
    direct_or("_update_fpga", no_fpga_upload)
    direct_or("installserver", no_server_install)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes and with its white space folded (for status bars and logs)."""
    return " ".join(_ANSI.sub("", text).split())


def _translate_ssh_failures(cls: type, record: PatchRecord) -> None:
    """PyRPL's failed SSH login (after its own retries) becomes a BoardConnectionError, in plain text."""
    upstream = cls.__dict__["start_ssh"]
    if _is_locked(upstream):
        return

    @functools.wraps(upstream)
    def start_ssh(self: Any, attempt: int = 0) -> Any:
        try:
            return upstream(self, attempt)
        except BoardConnectionError:
            raise
        except Exception as exc:
            if attempt or type(exc).__name__ != "ExpectedPyrplError" and not isinstance(exc, OSError):
                raise
            parameters = self.parameters
            raise BoardConnectionError(
                f"{parameters.get('hostname')}:{parameters.get('port')}", "SSH login",
                f"no SSH session to {parameters.get('user')}@{parameters.get('hostname')} port "
                f"{parameters.get('sshport')} after PyRPL's attempts: {_root_cause(exc)}") from exc

    record.patch_attribute(cls, "start_ssh", _mark(start_ssh, upstream),
                           "a failed SSH login raises BoardConnectionError (no colour codes), not ExpectedPyrplError")


def _root_cause(exc: BaseException) -> str:
    """The first error in the chain that is not PyRPL's wrapper, as plain text."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    found = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__name__ != "ExpectedPyrplError":
            found = cause
        cause = cause.__cause__ or cause.__context__
    text = plain_text(str(getattr(found, "message", found)))
    return f"{type(found).__name__}: {text}" if found is not exc or not text else text


def _close_half_built(rp: Any) -> None:
    """A RedPitaya whose construction failed must not keep its socket (the next connect would queue behind it)."""
    client = rp.__dict__.get("client")
    if client is None:
        return
    try:
        client.close()
    except Exception:
        logger.debug("closing the client of a failed RedPitaya construction failed", exc_info=True)
    rp.__dict__["client"] = None


def _patch_memory_writes(module: types.ModuleType, record: PatchRecord) -> None:
    cls = module.MemoryTree
    func = cls.__dict__["_write_to_file"]
    if _is_locked(func):
        return

    @functools.wraps(func)
    def _write_to_file(self: Any) -> Any:
        lock = self.__dict__.get(LOCK_ATTR)
        with lock if lock is not None else contextlib.nullcontext():
            return func(self)

    record.patch_attribute(cls, "_write_to_file", _mark(_write_to_file, func),
                           "the save timer writes the config under the board lock (no dict mutated mid-dump)")


def run_lock_of(module: Any) -> FifoLock:
    """The lock that queues one acquisition module's runs (blocking ``single()``, remote long calls).

    First come, first served (:class:`~rpl_noqt.runtime.locks.FifoLock`): a
    thread taking curve after curve cannot starve another one's ``single()``.
    """
    run_lock = module.__dict__.get("_rpl_noqt_run_lock")
    if run_lock is None:
        with _CLIENT_LOCK_LOCK:
            run_lock = module.__dict__.setdefault("_rpl_noqt_run_lock", FifoLock())
    return run_lock


def _patch_acquisitions(module: types.ModuleType, record: PatchRecord) -> None:
    cls = module.AcquisitionModule
    func = cls.__dict__["single"]
    if getattr(func, "_rpl_noqt_queued", False):
        return

    @functools.wraps(func)
    def single(self: Any, *args: Any, **kwargs: Any) -> Any:
        run_lock = run_lock_of(self)
        if not run_lock.acquire(blocking=False):
            # wait for the running acquisition without holding the board,
            # or its owner could not finish (lock order: run lock, then board)
            with blocking.released_locks():
                run_lock.acquire()
        try:
            return func(self, *args, **kwargs)
        finally:
            run_lock.release()

    single._rpl_noqt_queued = True  # type: ignore[attr-defined]
    record.patch_attribute(cls, "single", _mark(single, func),
                           "concurrent blocking single() calls on one module queue, each gets its own curve")
