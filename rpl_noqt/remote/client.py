"""``rpl_noqt.connect("leco://NAME")``: a board served by another process, used like a Session.

``remote.rp.asg0.frequency = 1e3``, ``remote.rp.scope.single()`` and
``with remote.lock:`` read as they do in-process; behind them each access
is one LECO request to the board server (:mod:`.server`). The proxies offer
exactly the server's registry: a name outside it raises
:class:`~rpl_noqt.remote.errors.RemoteNameError` (an ``AttributeError``)
before anything is sent, and ``dir()`` lists what is there.

Errors come back as the exceptions an in-process user sees, rebuilt from
the reply's data (never unpickled): ``BoardConnectionError`` and
``BoardTimeoutError`` from the board's link, ``ValueError``/``TypeError``
from a bad value, :class:`~rpl_noqt.errors.BoardLockedError` when another
client holds the lock. A server that is gone is a ``BoardConnectionError``
too, within the link's silence limit, and the next call reconnects.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._deps import require_pyleco

require_pyleco()

from pyleco.core.data_message import DataMessage  # noqa: E402
from pyleco.json_utils.errors import JSONRPCError  # noqa: E402
from pyleco.json_utils.json_objects import JsonRpcError  # noqa: E402

from .._compat import TESTED_PYRPL_VERSIONS  # noqa: E402
from ..events import attribute_changed  # noqa: E402
from ..board.policy import LinkPolicy  # noqa: E402
from ..errors import BoardConnectionError, BoardLockedError, BoardTimeoutError  # noqa: E402
from . import payloads  # noqa: E402
from ..errors import CallCancelledError  # noqa: E402
from .calls_client import RemoteCall  # noqa: E402
from .errors import RegistryMismatchError, RemoteCallError, RemoteNameError  # noqa: E402
from .link import LecoLink  # noqa: E402
from .registry import AttributeSpec, MethodSpec, ModuleSpec, Registry  # noqa: E402
from .streams_client import RemoteStream, StreamKeeper  # noqa: E402
from .subscriber import DataSubscriber  # noqa: E402
from .wire import ErrorCode, LecoAddress, parse_leco_url  # noqa: E402

__all__ = ("RemoteLock", "RemoteModule", "RemoteSession", "attribute_spec", "connect_remote")

logger = logging.getLogger(__name__)

_names = itertools.count(1)
_SHORT: Any = object()
_SESSIONS: dict[LecoAddress, RemoteSession] = {}
_SESSIONS_LOCK = threading.Lock()
#: seconds a finished long call still takes progress reports (they travel apart from the reply)
CALL_GRACE_S = 5.0


def _client_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:24]
    return f"rplc-{host}-{os.getpid()}-{next(_names)}"


def _error_from_reply(exc: JSONRPCError, board: str) -> Exception:
    """The exception a server's JSON-RPC error stands for, rebuilt from its data (no pickle)."""
    error = exc.rpc_error
    data = error.data if isinstance(error.data, dict) else {}
    if error.code == ErrorCode.LOCKED:
        return BoardLockedError(str(data.get("board", board)), str(data.get("holder", "?")), data.get("resource"),
                                operation=str(data.get("operation", "write")))
    if error.code == ErrorCode.REFUSED:
        return RemoteNameError(f"{board}: refused by the server: {error.message}")
    if error.code == ErrorCode.BOARD_CONNECTION:
        cls = BoardTimeoutError if data.get("timeout") else BoardConnectionError
        address = data.get("address")
        return cls(str(data.get("board", board)), str(data.get("operation", "?")), str(data.get("cause", "?")),
                   address=address if isinstance(address, int) else None)
    if error.code == ErrorCode.VALUE:
        return (TypeError if data.get("type") == "TypeError" else ValueError)(error.message)
    if error.code == ErrorCode.CANCELLED:
        def number(key: str) -> float:
            value = data.get(key, 0)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
        return CallCancelledError(str(data.get("module", "?")), str(data.get("method", "?")), int(number("done")),
                                  int(number("total")), float(number("elapsed")), unit=str(data.get("unit", "steps")),
                                  detail=str(data.get("detail", "")))
    if error.code == ErrorCode.CLOSING:
        return BoardConnectionError(board, "call", error.message)
    if data.get("type") == "TimeoutError":  # e.g. scope.single(timeout) without a trigger: as in-process
        return TimeoutError(f"{board}: {error.message}")
    return RemoteCallError(f"{board}: {error.message}", str(data.get("type", "")))


def error_from_object(error: dict[str, Any], board: str) -> Exception:
    """The exception a published error object (``{"code", "message", "data"}``) stands for."""
    try:
        rpc_error = JsonRpcError(code=int(error["code"]), message=str(error["message"]), data=error.get("data"))
    except (KeyError, TypeError, ValueError):
        return RemoteCallError(f"{board}: malformed error {error!r}", "")
    return _error_from_reply(JSONRPCError(rpc_error), board)


class RemoteLock:
    """The board's LECO lock, held by this client: ``with remote.lock:`` makes a transaction.

    While it is held, other clients' writes and state-changing calls are
    refused with :class:`~rpl_noqt.errors.BoardLockedError` (they may still
    read). Reentrant, and shared by the threads of this process (they use
    the same LECO name); other threads of this process wait for it locally.
    Entering waits up to ``lock_timeout`` for another client to release it,
    then raises BoardLockedError naming the holder.
    """

    def __init__(self, session: RemoteSession, resource: str | None = None) -> None:
        self._session = session
        self.resource = resource
        self._local = threading.RLock()
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; False if another client kept it (``timeout`` s, or at once if not blocking)."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        if not self._local.acquire(blocking, -1 if deadline is None else timeout):
            return False
        if self._depth > 0:
            self._depth += 1
            return True
        pause = 0.01
        try:
            while True:
                if self._session._request("lock", {"resource": self.resource})[0]:
                    self._depth = 1
                    return True
                if not blocking or (deadline is not None and time.monotonic() + pause > deadline):
                    self._local.release()
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.2)
        except BaseException:
            self._local.release()
            raise

    def release(self) -> None:
        """Release one level; the last one gives the lock back on the server."""
        if self._depth <= 0:
            raise RuntimeError("cannot release a remote lock this client does not hold")
        self._depth -= 1
        try:
            if self._depth == 0:
                try:
                    self._session._request("unlock", {"resource": self.resource})
                except BoardConnectionError:
                    logger.warning("could not give the lock of %s back (server unreachable): a server that "
                                   "restarted holds none", self._session.url)
        finally:
            self._local.release()

    def holder(self) -> str | None:
        """The LECO name of the client holding this lock, or None."""
        return self._session.locks().get("" if self.resource is None else self.resource)

    def force_release(self) -> str | None:
        """Take the lock away from whoever holds it (a client that died holding it); returns that holder."""
        return self._session._request("force_unlock", {"resource": self.resource})[0]

    @property
    def held(self) -> bool:
        """Whether this client holds it."""
        return self._depth > 0

    def _reacquire_after_reconnect(self) -> None:
        if self._depth > 0 and not self._session._request("lock", {"resource": self.resource})[0]:
            logger.warning("%s: the server restarted and another client took the lock this client held",
                           self._session.url)

    def __enter__(self) -> RemoteLock:
        if not self.acquire(timeout=self._session.lock_timeout):
            holder = self.holder() or "another client"
            raise BoardLockedError(self._session.url, holder, self.resource,
                                   operation=f"lock (waited {self._session.lock_timeout:g} s)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RemoteMethod:
    """An allowed method of a remote module; calling it is one request."""

    __slots__ = ("_session", "_module", "_spec")

    def __init__(self, session: RemoteSession, module: ModuleSpec, spec: MethodSpec) -> None:
        self._session = session
        self._module = module
        self._spec = spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """One request; a long call (``single()``...) blocks until done, and Ctrl-C cancels it on the server."""
        request = self._request(args, kwargs)
        if not self._spec.long:
            return request(None)
        return RemoteCall(self._session, self._action)._execute(request)

    def submit(self, *args: Any, on_progress: Callable[[dict[str, Any]], None] | None = None,
               **kwargs: Any) -> RemoteCall:
        """Start the call in the background: a :class:`~rpl_noqt.remote.calls_client.RemoteCall`
        with ``result()``, ``progress`` (and ``on_progress`` callbacks) and ``cancel()``."""
        if not self._spec.long:
            raise RemoteNameError(f"{self._action}() is a short call; call it directly")
        request = self._request(args, kwargs)  # a bad argument raises here, not in the background
        return RemoteCall(self._session, self._action, on_progress)._start(request)

    @property
    def _action(self) -> str:
        return f"{self._module.name}.{self._spec.name}"

    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[RemoteCall | None], Any]:
        """Check the arguments against the registry; return the request to send (with the call's id if long)."""
        spec, module = self._spec, self._module
        allowed = module.setup_attributes if spec.params is None else spec.params
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown or (spec.params is None and args) or len(args) > len(allowed):
            raise RemoteNameError(f"{module.name}.{spec.name}() takes {', '.join(allowed) or 'no arguments'}"
                                  f"{' (keywords only)' if spec.params is None else ''}; got "
                                  f"{len(args)} positional and {sorted(kwargs)}")
        encoded, frames = payloads.encode({"args": list(args), "kwargs": kwargs})
        session = self._session
        deadline = None
        if spec.long and spec.timeout_param is not None:
            given = kwargs.get(spec.timeout_param)
            if given is None and spec.timeout_param in allowed[:len(args)]:
                given = args[allowed.index(spec.timeout_param)]
            if isinstance(given, (int, float)) and not isinstance(given, bool):
                deadline = float(given) + session._link.short_deadline
        elif not spec.long:
            deadline = session._link.short_deadline
        params = {"action": self._action, "args": encoded["args"], "kwargs": encoded["kwargs"]}

        def request(call: RemoteCall | None = None) -> Any:
            sent = params if call is None else {**params, "call_id": call.id}
            result, reply_frames = session._request("call_action", sent, frames, deadline_s=deadline)
            return payloads.decode(result, reply_frames)

        return request

    def __repr__(self) -> str:
        return f"<remote method {self._module.name}.{self._spec.name} of {self._session.url}>"


class RemoteModule:
    """A module of the remote board: its registry's attributes and methods, nothing else.

    One object per module and session, so ``events.attribute_changed.connect_via(remote.rp.asg0)``
    picks that module's changes, as in-process. Modules that stream (scope,
    spectrum and network analyzers) also have :meth:`stream`.
    """

    __slots__ = ("_session", "_spec", "__weakref__")

    def __init__(self, session: RemoteSession, spec: ModuleSpec) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_spec", spec)

    @property
    def name(self) -> str:
        return self._spec.name

    def __getattr__(self, name: str) -> Any:
        spec = self._spec
        if name in spec.attributes:
            return self._session._get(f"{spec.name}.{name}")
        if name in spec.methods:
            return RemoteMethod(self._session, spec, spec.methods[name])
        if name == "stream" and spec.name in self._session._streamable():
            return self._stream
        raise RemoteNameError(f"{spec.name} ({spec.kind}) has no remote attribute or method {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self._spec
        attribute = spec.attributes.get(name)
        if attribute is None:
            raise RemoteNameError(f"{spec.name} ({spec.kind}) has no remote attribute {name!r}")
        if not attribute.writable:
            raise RemoteNameError(f"{spec.name}.{name} is read-only over a remote session")
        self._session._set({f"{spec.name}.{name}": value})

    def _stream(self, maxlen: int = 8, callback: Callable[[Any], None] | None = None) -> RemoteStream:
        """Subscribe to this module's acquisitions (one loop on the server for every subscriber).

        Returns a :class:`~rpl_noqt.remote.streams_client.RemoteStream`: iterate it,
        ``get(timeout)``, or pass ``callback`` (called in the subscriber thread
        with each result). Close it (or use ``with``) to unsubscribe.
        """
        return self._session._stream_open(self._spec.name, maxlen, callback)

    def __dir__(self) -> list[str]:
        extra = {"stream"} if self._spec.name in self._session._streamable() else set()
        return sorted(set(self._spec.attributes) | set(self._spec.methods) | {"name"} | extra)

    def __repr__(self) -> str:
        return f"<remote {self._spec.kind} module {self._spec.name!r} of {self._session.url}>"


def attribute_spec(module: RemoteModule, name: str) -> AttributeSpec:
    """The registry's entry for attribute ``name`` of a remote module: kind, writable, ``bounds``.

    A function, not a method, so that no name of the module's own is hidden.
    """
    spec = module._spec.attributes.get(name)
    if spec is None:
        raise RemoteNameError(f"{module._spec.name} ({module._spec.kind}) has no remote attribute {name!r}")
    return spec


class _Modules:
    """A namespace of remote modules (``remote.rp`` or ``remote.pyrpl``)."""

    def __init__(self, session: RemoteSession, names: list[str], extra: dict[str, Any] | None = None) -> None:
        self._session = session
        self._names = names
        self._extra = extra or {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._extra:
            return self._extra[name]
        if name in self._names:
            return self._session._module(name)
        raise RemoteNameError(f"the board server {self._session.url} offers no module {name!r} here "
                              f"(offered: {', '.join(self._names)})")

    def __dir__(self) -> list[str]:
        return sorted(self._names + list(self._extra))

    def __repr__(self) -> str:
        return f"<remote modules of {self._session.url}: {', '.join(self._names)}>"


class RemoteSession:
    """A board served by ``rpl-noqt serve``: ``.rp``, ``.pyrpl``, ``.lock``, ``.close()``.

    Made by :func:`connect_remote` (``rpl_noqt.connect("leco://NAME")``);
    like a Session, connecting again to the same server in one process
    returns the same object, and each user closes it.
    """

    def __init__(self, address: LecoAddress, *, connect_timeout: float, io_timeout: float,
                 registry_hash: str | None, lock_timeout: float,
                 liveness: Callable[[], str | None] | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.address = address
        self._on_close = on_close
        self.lock_timeout = lock_timeout
        self._expected_hash = registry_hash
        self._registry: Registry | None = None
        self.server_info: dict[str, Any] = {}
        self._module_objects: dict[str, RemoteModule] = {}
        self._data_lock = threading.RLock()
        self._data: dict[str, Any] | None = None
        self._subscriber: DataSubscriber | None = None
        self._keeper = StreamKeeper(self)
        self._probe_waiters: dict[str, threading.Event] = {}
        #: long calls of this session, by id (their progress messages are routed here), and when each
        #: finished (kept a few seconds after: the last report may arrive after the reply)
        self._calls: dict[str, RemoteCall] = {}
        self._calls_finished: dict[str, float] = {}
        self._calls_lock = threading.Lock()
        self._users = 0
        self._closed = False
        self._link = LecoLink(address, _client_name(), connect_timeout=connect_timeout, io_timeout=io_timeout,
                              on_connect=self._on_connect, liveness=liveness)
        self._lock = RemoteLock(self)
        try:
            self._link.ensure_connected()
        except BaseException:
            self._link.close()  # nothing half-open stays behind a refused or failed connect
            self._run_on_close()
            raise
        registry = self.registry
        hardware = [n for n, m in registry.modules.items() if m.kind not in ("NetworkAnalyzer", "SpectrumAnalyzer")]
        software = [n for n in registry.modules if n not in hardware]
        self._rp = _Modules(self, hardware)
        self._pyrpl = _Modules(self, software, {"rp": self._rp})

    # -- public --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.address.url

    @property
    def registry(self) -> Registry:
        assert self._registry is not None
        return self._registry

    @property
    def rp(self) -> Any:
        """The board's hardware modules: ``remote.rp.asg0.frequency``."""
        self._check_open()
        return self._rp

    @property
    def pyrpl(self) -> Any:
        """``.rp`` and the software modules the server offers (``remote.pyrpl.networkanalyzer``)."""
        self._check_open()
        return self._pyrpl

    @property
    def lock(self) -> RemoteLock:
        """The board's LECO lock for this client: ``with remote.lock:``."""
        return self._lock

    @property
    def name(self) -> str:
        """This client's LECO name (what another client's BoardLockedError names as the holder)."""
        return self._link.full_name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def users(self) -> int:
        return self._users

    def locks(self) -> dict[str, str]:
        """Every lock on the server: {resource ('' for the board): holder's LECO name}."""
        return self._request("locks")[0]

    def close(self) -> None:
        """Release this user's hold; the last one gives back its lock and signs out."""
        with _SESSIONS_LOCK:
            if self._closed:
                return
            self._users -= 1
            if self._users > 0:
                return
            self._closed = True
            if _SESSIONS.get(self.address) is self:
                del _SESSIONS[self.address]
        try:
            for stream in self._keeper.streams():
                stream.close()
            if self._lock.held and self._link.connected:
                self._lock._depth = 1
                self._lock.release()
        except Exception:
            logger.debug("giving the lock back at close failed", exc_info=True)
        finally:
            self._keeper.close()
            with self._data_lock:
                if self._subscriber is not None:
                    self._subscriber.close()
                    self._subscriber = None
            self._link.close()
            self._run_on_close()

    def _run_on_close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()  # an isolated session stops its server process here

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._users} user(s)"
        return f"<rpl_noqt.RemoteSession {self.url} {state}>"

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"remote session {self.url} is closed; call rpl_noqt.connect() again")

    def _on_connect(self, description: dict[str, Any], reconnect: bool) -> None:
        if not isinstance(description, dict):
            raise RegistryMismatchError(f"{self.url}: the server sent no description")
        registry = Registry.from_wire(description.get("registry"))
        registry.verify(pyrpl_versions=TESTED_PYRPL_VERSIONS,
                        expected_hash=self._registry.hash if self._registry is not None else self._expected_hash)
        self._registry = registry
        server = description.get("server")
        self.server_info = server if isinstance(server, dict) else {}
        self._update_data(self.server_info.get("data"))
        board_io = self.server_info.get("io_timeout")
        if not (isinstance(board_io, (int, float)) and not isinstance(board_io, bool) and 0 < board_io < 3600):
            board_io = 0.0
        alive = self.server_info.get("alive")
        link = self._link
        link.short_deadline = link.io_timeout + float(board_io)  # the server may spend its board deadline
        if isinstance(alive, str) and alive:
            link.set_probe_target(alive)  # answers while the actor waits on the board: silence = our timeout
            link.silence_limit = link.io_timeout
        else:
            link.set_probe_target(None)
            link.silence_limit = link.short_deadline
        if reconnect:
            self._lock._reacquire_after_reconnect()

    def _module(self, name: str) -> RemoteModule:
        """The one RemoteModule of ``name`` for this session: the same object across reconnects (the
        registry is checked to be the same), so receivers connected with it as sender keep working."""
        spec = self.registry.module(name)
        module = self._module_objects.get(name)
        if module is None:
            module = self._module_objects[name] = RemoteModule(self, spec)
        elif module._spec is not spec:
            object.__setattr__(module, "_spec", spec)
        return module

    # -- data protocol: events and streams -------------------------------------------------
    def _streamable(self) -> list[str]:
        data = self._data
        streams = data.get("streams") if data else None
        return list(streams) if isinstance(streams, list) else []

    def _update_data(self, data: Any) -> None:
        """(Re)subscribe at the server's data proxy; called at every (re)connect."""
        if not isinstance(data, dict):
            data = None
        with self._data_lock:
            old = self._data
            self._data = data
            same = old is not None and data is not None and all(
                old.get(k) == data.get(k) for k in ("host", "sending_port", "prefix"))
            if same and self._subscriber is not None:
                return
            if self._subscriber is not None:
                self._subscriber.close()
                self._subscriber = None
            if data is None:
                return
            try:
                host = data.get("host") or self.address.host
                port = int(data["sending_port"])
                prefix = str(data["prefix"])
            except (KeyError, TypeError, ValueError):
                logger.warning("%s: the server's data description is malformed: %r", self.url, data)
                self._data = None
                return
            address = f"tcp://{'[' + host + ']' if ':' in host else host}:{port}"
            self._subscriber = DataSubscriber(address, self._link.context)
            self._subscriber.subscribe(f"{prefix}/events", self._on_event)
            self._subscriber.subscribe(f"{prefix}/calls", self._on_call_progress)
            self._keeper.ensure_running()
            for stream in self._keeper.streams():
                stream.topic = f"{prefix}/stream/{stream.module}"
                self._subscriber.subscribe(stream.topic, stream._on_message)
        self._await_subscription()

    def _await_subscription(self, timeout: float = 1.0) -> None:
        """Wait until the server's publications reach us, so no change right after connect() is missed.

        A ZeroMQ subscription takes a moment to travel to the publisher
        through the proxy; until then messages are dropped. The server
        publishes a probe on request; the first one that arrives ends the wait.
        """
        arrived = threading.Event()
        token = f"{self._link.client_name}-{time.monotonic_ns()}"
        self._probe_waiters[token] = arrived
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._link.request("data_probe", {"token": token}, deadline_s=self._link.silence_limit)
                if arrived.wait(0.02):
                    return
            logger.warning("%s: the server's data publications did not arrive within %g s; events and "
                           "streams may start late", self.url, timeout)
        except JSONRPCError:
            logger.debug("the server does not answer data probes", exc_info=True)
        finally:
            self._probe_waiters.pop(token, None)

    def _wants_events(self) -> bool:
        return bool(attribute_changed.receivers) and not self._closed

    def _check_data(self, quiet_s: float = 3.0) -> None:
        """Called by the keeper each second: no publication (not even a heartbeat) for ``quiet_s``
        means the server restarted or is gone; a request then reconnects (and resubscribes) or fails."""
        subscriber = self._subscriber
        if subscriber is None or self._closed or time.monotonic() - subscriber.last_message < quiet_s:
            return
        try:
            self._check_open()
            self._link.ensure_connected()  # reconnects to a server that came back (on_connect resubscribes)
            if self._subscriber is subscriber:
                with self._data_lock:  # the same link: ask again where it publishes, subscribe afresh
                    self._data = None
                self._link.refresh_description()
        except Exception:  # noqa: BLE001  the streams' renewals report it; events have nobody to tell
            logger.debug("%s: the server's publications stopped and it does not answer", self.url, exc_info=True)

    def _on_event(self, message: DataMessage) -> None:
        data = message.data
        if not isinstance(data, dict) or self._registry is None:
            return
        if "heartbeat" in data:
            return
        if "probe" in data:
            waiter = self._probe_waiters.get(data["probe"]) if isinstance(data["probe"], str) else None
            if waiter is not None:
                waiter.set()
            return
        if not attribute_changed.receivers:
            return
        module_name, name = data.get("module"), data.get("name")
        if not isinstance(module_name, str) or module_name not in self._registry.modules:
            return
        try:
            value = payloads.decode(data.get("value"), message.payload[1:])
        except payloads.PayloadError:
            return
        attribute_changed.send(self._module(module_name), name=name, value=value)

    def _track_call(self, call: RemoteCall) -> None:
        now = time.monotonic()
        with self._calls_lock:
            for old in [i for i, t in self._calls_finished.items() if now - t > CALL_GRACE_S]:
                self._calls.pop(old, None)
                del self._calls_finished[old]
            self._calls[call.id] = call

    def _call_finished(self, call: RemoteCall) -> None:
        with self._calls_lock:
            if call.id in self._calls:
                self._calls_finished[call.id] = time.monotonic()

    def _on_call_progress(self, message: DataMessage) -> None:
        data = message.data
        if not isinstance(data, dict) or not isinstance(data.get("progress"), dict):
            return
        call_id = data.get("call")
        with self._calls_lock:
            call = self._calls.get(call_id) if isinstance(call_id, str) else None
            if call is not None and data["progress"].get("fraction") == 1.0 and call_id in self._calls_finished:
                del self._calls[call_id]  # its last report: nothing more will come
                del self._calls_finished[call_id]
        if call is not None and data.get("by") == self._link.full_name:
            call._progress(data["progress"])

    def _stream_open(self, module: str, maxlen: int, callback: Callable[[Any], None] | None) -> RemoteStream:
        self._check_open()
        stream = RemoteStream(self, module, maxlen=maxlen, callback=callback)
        with self._data_lock:
            data, subscriber = self._data, self._subscriber
            if data is None or subscriber is None:
                raise RemoteNameError(f"{self.url} publishes no streams (the server found no LECO data proxy)")
            stream.topic = f"{data['prefix']}/stream/{module}"
            subscriber.subscribe(stream.topic, stream._on_message)  # before the loop starts: nothing missed
        self._keeper.add(stream)
        try:
            self._request("stream_start", {"module": module})
        except BaseException:
            self._stream_closed(stream)
            raise
        return stream

    def _stream_closed(self, stream: RemoteStream) -> None:
        with self._data_lock:
            if self._subscriber is not None and stream.topic is not None:
                self._subscriber.unsubscribe(stream.topic, stream._on_message)
        if self._keeper.remove(stream) and self._link.connected and not self._link.closed:
            try:
                self._link.request("stream_stop", {"module": stream.module}, deadline_s=1.0)
            except Exception:  # noqa: BLE001  the lease expires on its own
                logger.debug("stream_stop of %s failed", stream.module, exc_info=True)

    def _request(self, method: str, params: dict[str, Any] | None = None, frames: Any = (), *,
                 deadline_s: Any = _SHORT) -> tuple[Any, list[bytes]]:
        """One request; a short one (the default) may take the link's silence limit, no more."""
        self._check_open()
        if deadline_s is _SHORT:
            deadline_s = self._link.short_deadline
        try:
            return self._link.request(method, params, frames, deadline_s=deadline_s)
        except JSONRPCError as exc:
            raise _error_from_reply(exc, self.url) from None

    def _get(self, path: str) -> Any:
        result, frames = self._request("get_parameters", {"parameters": [path]})
        return payloads.decode(result, frames)[path]

    def _set(self, values: dict[str, Any]) -> None:
        encoded, frames = payloads.encode(values)
        self._request("set_parameters", {"parameters": encoded}, frames)


def connect_remote(url: str, *, connect_timeout: float | None = None, io_timeout: float | None = None,
                   registry_hash: str | None = None, lock_timeout: float = 10.0) -> RemoteSession:
    """Open (or join) the remote session of the board server at ``url`` (``leco://NAME[@HOST:PORT]``).

    ``connect_timeout`` bounds signing in and fetching the registry,
    ``io_timeout`` how long the server may stay silent beyond its own board
    deadline before a call raises BoardConnectionError (defaults: the
    process's link policy, 3 s and 2 s). ``registry_hash`` pins the surface
    the caller expects (``remote.registry.hash`` of an earlier session).
    """
    address = parse_leco_url(url)
    policy = LinkPolicy.from_env(connect_timeout=connect_timeout, io_timeout=io_timeout)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(address)
        if session is not None and not session.closed:
            if registry_hash is not None and session.registry.hash != registry_hash:
                raise RegistryMismatchError(f"{address.url} is open with registry {session.registry.hash[:16]}..., "
                                            f"not {registry_hash[:16]}...")
            session._users += 1
            return session
    session = RemoteSession(address, connect_timeout=policy.connect_timeout, io_timeout=policy.io_timeout,
                            registry_hash=registry_hash, lock_timeout=lock_timeout)
    return publish_session(_SESSIONS, _SESSIONS_LOCK, address, session)


def publish_session(registry: dict[Any, RemoteSession], lock: Any, key: Any,
                    session: RemoteSession) -> RemoteSession:
    """Publish ``session`` under ``key``, or join the one another thread published meanwhile
    (closing ``session``, which then was connected for nothing)."""
    with lock:
        existing = registry.get(key)
        if existing is not None and not existing.closed:
            existing._users += 1
            session._users = 1
            session.close()
            return existing
        session._users = 1
        registry[key] = session
        return session
