"""``rpl_noqt.serve(host, port, name=...)``: own a board's Session, serve it as a LECO actor.

The server process is the board's only client (its monitor server serves
one), so every program that wants the board talks to this process instead,
through LECO: ``rpl_noqt.connect("leco://NAME")``. Start-up order: connect
the board first (a board that is not there fails ``serve()`` at once, with
the usual BoardConnectionError), then find or start the coordinator, then
sign the actor in under NAME. Shutdown is the reverse, bounded: the actor
stops listening and signs out, long calls are abandoned to their daemon
threads, the session closes (config flushed, acquisitions stopped, board
socket closed), and an embedded coordinator stops last.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

from ._deps import require_pyleco

require_pyleco()

import zmq  # noqa: E402

from .._compat import installed_pyrpl_version  # noqa: E402
from .actor import BoardActor, describe_error  # noqa: E402
from .alive import AliveResponder  # noqa: E402
from .coordinator import EmbeddedCoordinator, coordinator_answers, is_local_address  # noqa: E402
from .proxy import EmbeddedProxy, find_data_endpoint  # noqa: E402
from .publisher import BoardPublisher, EventBridge  # noqa: E402
from .registry import build_registry  # noqa: E402
from .streams import StreamHub  # noqa: E402
from .surface import BoardSurface  # noqa: E402
from .wire import (  # noqa: E402
    DEFAULT_COORDINATOR_HOST,
    DEFAULT_COORDINATOR_PORT,
    NAME_PATTERN,
    LecoAddress,
    parse_host_port,
)

__all__ = ("BoardServer", "serve")

logger = logging.getLogger(__name__)


class BoardServer:
    """A running board server; :func:`serve` makes one. Use as a context manager, or call :meth:`close`."""

    def __init__(self, session: Any, name: str, coordinator: tuple[str, int], bind: str | None,
                 *, probe_timeout: float = 1.0) -> None:
        self.session = session
        self.name = name
        self.coordinator_host, self.coordinator_port = coordinator
        self._closed = False
        self._close_lock = threading.Lock()
        self._stopped = threading.Event()
        self._context = zmq.Context()
        self.embedded: EmbeddedCoordinator | None = None
        self.proxy: EmbeddedProxy | None = None
        self.publisher: BoardPublisher | None = None
        self._events: EventBridge | None = None
        self.alive: AliveResponder | None = None
        try:
            self._find_coordinator(bind, probe_timeout)
            registry, modules = build_registry(session.pyrpl, installed_pyrpl_version() or "unknown")
            self.registry = registry
            board = f"{session.hostname}:{session.port}"
            info = {"board": board, "name": name, "pid": os.getpid(), "host": socket.gethostname(),
                    "io_timeout": session.policy.io_timeout}
            surface = BoardSurface(registry, modules, f"leco://{name} ({board})")
            self.actor = BoardActor(name, surface, host=self.coordinator_host, port=self.coordinator_port,
                                    context=self._context, info=info)
            self._start_listening()
            self._start_publishing(surface, modules, bind, probe_timeout)
            self.alive = AliveResponder(f"{name}-alive", host=self.coordinator_host, port=self.coordinator_port,
                                        context=self._context)
            info["alive"] = self.alive.signed_in_name
        except BaseException:
            self._teardown(close_session=False)
            raise

    # -- public --------------------------------------------------------------------------
    @property
    def address(self) -> LecoAddress:
        return LecoAddress(self.name, self.coordinator_host, self.coordinator_port)

    @property
    def url(self) -> str:
        """What a client passes to ``rpl_noqt.connect()``."""
        return self.address.url

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        """One line saying where it serves (what ``rpl-noqt serve`` prints)."""
        if self.embedded is not None:
            where = f"embedded coordinator on {self.embedded.bind}:{self.embedded.port}"
        else:
            where = f"coordinator at {self.coordinator_host}:{self.coordinator_port}"
        return (f"rpl-noqt: serving board {self.session.hostname}:{self.session.port} as {self.url} "
                f"({where}; registry {self.registry.hash[:12]})")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (closed, or its listener ended); True if it did."""
        return self._stopped.wait(timeout)

    def close(self) -> None:
        """Stop serving and close the board session. Idempotent, bounded (about a second on a live board)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._teardown(close_session=True)

    def __enter__(self) -> BoardServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<rpl_noqt.remote.BoardServer {self.url} {'closed' if self._closed else 'serving'}>"

    # -- internals -----------------------------------------------------------------------
    def _find_coordinator(self, bind: str | None, probe_timeout: float) -> None:
        host, port = self.coordinator_host, self.coordinator_port
        if is_local_address(host):
            self.embedded = EmbeddedCoordinator.try_start(bind or host, port, self._context)
            if self.embedded is not None:
                return
        if not coordinator_answers(host, port, probe_timeout, self._context):
            from ..errors import BoardConnectionError

            reason = ("the port is in use by something that is not a LECO coordinator" if is_local_address(host)
                      else "it is not an address of this machine, so no coordinator can be started there")
            raise BoardConnectionError(f"{host}:{port}", "find the LECO coordinator",
                                       f"no coordinator answered within {probe_timeout:g} s and {reason}")
        logger.info("using the LECO coordinator at %s:%d", host, port)

    def _start_listening(self) -> None:
        self._listen_stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name=f"rpl-noqt-leco-{self.name}", daemon=True)
        self._thread.start()
        if not self.actor.ready.wait(10.0):
            raise TimeoutError(f"board server {self.name!r} did not start listening within 10 s")
        if self.actor.setup_error is not None:
            from ..errors import BoardConnectionError

            error = self.actor.setup_error
            raise BoardConnectionError(f"{self.coordinator_host}:{self.coordinator_port}",
                                       f"sign in as {self.name!r}", str(error)) from error

    def _start_publishing(self, surface: BoardSurface, modules: dict[str, Any], bind: str | None,
                          probe_timeout: float) -> None:
        """Attribute changes, streams and progress go out on LECO's data protocol (:mod:`.publisher`)."""
        endpoint, self.proxy = find_data_endpoint(self.coordinator_host, self.coordinator_port, bind,
                                                  self._context, probe_timeout)
        if endpoint is None:
            logger.warning("board server %r: no LECO data proxy, so no events or streams", self.name)
            return
        publisher = BoardPublisher(endpoint.publish_address(self.coordinator_host), self._context)
        publisher.prefix = self.actor.full_name
        self.publisher = publisher
        attributes = {m: frozenset(spec.attributes) for m, spec in self.registry.modules.items()}
        self._events = EventBridge(publisher, modules, attributes)
        self.actor.streams = StreamHub(surface, publisher, modules, describe_error)
        self.actor.data_info = {**endpoint.as_dict(), "prefix": publisher.prefix,
                                "streams": self.actor.streams.streamable}

    def _listen(self) -> None:
        try:
            self.actor.listen(stop_event=self._listen_stop, waiting_time=20)
        except BaseException as exc:  # noqa: BLE001  a failed start is reported by _start_listening
            if self.actor.setup_error is None:
                logger.error("board server %r stopped listening", self.name, exc_info=exc)
        finally:
            if self.alive is not None and not self._closed:
                self.alive.stop(0.5)  # a server that no longer listens must not look alive to its clients
            self._stopped.set()

    def _teardown(self, *, close_session: bool) -> None:
        t0 = time.monotonic()
        actor = getattr(self, "actor", None)
        if actor is not None:
            actor.stop_workers()
            stop = getattr(self, "_listen_stop", None)
            if stop is not None:
                stop.set()
                self._thread.join(1.0)  # the listener signs out from the coordinator on its way out
        if self._events is not None:
            self._events.close()
        if actor is not None and actor.streams is not None:
            actor.streams.close(0.5)
        if close_session:
            try:
                self.session.close()  # flushes the config, stops acquisitions, closes the board socket
            except Exception:
                logger.exception("closing the board session of %r failed", self.name)
        if actor is not None:
            actor.join_workers(0.2)
            try:
                actor.close()
            except Exception:
                logger.debug("closing the actor's sockets failed", exc_info=True)
        if self.alive is not None:
            self.alive.stop(0.5)
        if self.publisher is not None:
            self.publisher.close(0.2)
        if self.proxy is not None:
            self.proxy.close()
        if self.embedded is not None:
            self.embedded.close()
        self._context.destroy(linger=0)
        self._stopped.set()
        logger.info("board server %r stopped in %.2f s", self.name, time.monotonic() - t0)


def serve(host: str, port: int = 2222, *, name: str, coordinator: str | tuple[str, int] | None = None,
          bind: str | None = None, config: Any = None, ssh: bool = True, connect_timeout: float | None = None,
          io_timeout: float | None = None, strict: bool = False, **pyrpl_kwargs: Any) -> BoardServer:
    """Connect the board at ``host:port`` and serve it as the LECO actor ``name``.

    Parameters
    ----------
    host, port, config, ssh, connect_timeout, io_timeout, strict, **pyrpl_kwargs
        As for :func:`rpl_noqt.connect` (the server owns that session).
    name
        The LECO name clients use: ``rpl_noqt.connect("leco://NAME")``.
    coordinator
        ``"HOST:PORT"`` of the LECO coordinator (default ``127.0.0.1:12300``).
        If nothing listens there and HOST is this machine, a coordinator is
        started in this process.
    bind
        Interface the embedded coordinator binds (default: the coordinator
        host, loopback unless you say otherwise). LECO has no authentication:
        bind a lab-network interface only on purpose.

    Returns a :class:`BoardServer`; ``with serve(...) as server:`` closes it.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"name must be 1-64 letters, digits, '_' or '-', got {name!r}")
    if coordinator is None:
        address = (DEFAULT_COORDINATOR_HOST, DEFAULT_COORDINATOR_PORT)
    elif isinstance(coordinator, str):
        address = parse_host_port(coordinator)
    else:
        address = (str(coordinator[0]), int(coordinator[1]))
    from ..session import connect

    session = connect(host, port, config=config, ssh=ssh, connect_timeout=connect_timeout,
                      io_timeout=io_timeout, strict=strict, **pyrpl_kwargs)
    try:
        return BoardServer(session, name, address, bind)
    except BaseException:
        session.close()
        raise
