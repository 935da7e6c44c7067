"""The simulated monitor_server: a TCP server on its own asyncio loop and thread.

The server speaks exactly the protocol of ``monitor_server.c`` (see
:mod:`rpl_noqt.sim.protocol`) on top of :class:`~rpl_noqt.sim.fpga.FpgaModel`.
It runs its own event loop in a daemon thread named ``rpl-sim-<port>`` so it is
independent of whatever loops or threads the process under test uses, and
``stop()`` closes every socket and joins that thread.

Malformed input never crashes the server: an unknown command byte, like in the
C server, ends that connection (the C server exits; we keep listening), a
truncated header or payload is a disconnect, a zero-length header is ignored.

**Client policy.**  The C server serves one connection and then exits; further
connections wait in the listen backlog unanswered (PyRPL restarts the server
over SSH after a disconnect).  The policies:

``queue`` (default)
    one client at a time; later clients wait, connected but unanswered, and are
    served in arrival order once the current client disconnects (the C server
    would have exited instead; PyRPL would restart it, which gives the same
    picture).
``exit``
    exactly the C server: serve the first client, then stop listening.
    :meth:`Simulator.restart` brings it back on the same port.
``reject``
    a second concurrent client is disconnected immediately.
``kick``
    a new client takes over; the current connection is closed.
``share``
    every client is served concurrently (requests are atomic).  Not what the
    hardware does, but handy for multi-client tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import threading
from types import TracebackType

import numpy as np

from .faults import Faults
from .fpga import FpgaModel
from .protocol import CLOSE, HEADER_SIZE, READ, WRITE, parse_header

log = logging.getLogger(__name__)

_START_TIMEOUT = 10.0


class ClientPolicy(str, enum.Enum):
    """How a second client is handled (see the module docstring)."""

    QUEUE = "queue"
    EXIT = "exit"
    REJECT = "reject"
    KICK = "kick"
    SHARE = "share"

    @classmethod
    def parse(cls, value: ClientPolicy | str) -> ClientPolicy:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown client policy {value!r}; allowed: {allowed}") from None


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in [0, 65535] (0 = ephemeral), got {port!r}")
    return port


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task | None) -> None:
        self.writer = writer
        self.task = task
        self.peer = writer.get_extra_info("peername")

    def abort(self) -> None:
        transport = self.writer.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


class Simulator:
    """A simulated Red Pitaya reachable over TCP like ``monitor_server``.

    Use as a context manager (``with Simulator() as sim: ... sim.port``) or
    call :meth:`start`/:meth:`stop`.  ``port=0`` picks a free port; ``.port``
    holds the real one after :meth:`start`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_policy: ClientPolicy | str = ClientPolicy.QUEUE,
        faults: Faults | None = None,
        seed: int | None = None,
        model: FpgaModel | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        self.host = host
        self.port = _check_port(port)
        self._requested_port = self.port
        self.client_policy = ClientPolicy.parse(client_policy)
        if faults is not None and not isinstance(faults, Faults):
            raise ValueError(f"faults must be a rpl_noqt.sim.Faults instance or None, got {faults!r}")
        self.faults = faults if faults is not None else Faults()
        self.model = model if model is not None else FpgaModel(seed=seed)
        self.requests = 0  #: requests answered since start (all clients)
        self.connections = 0  #: connections accepted since start
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stop_event: asyncio.Event | None = None
        self._serve_lock: asyncio.Lock | None = None
        self._conns: set[_Connection] = set()
        self._active: set[_Connection] = set()
        self._served_one = False
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Simulator:
        """Bind, start the server thread and return once it accepts connections."""
        if self.running:
            raise RuntimeError(f"simulator already running on {self.host}:{self.port}")
        self._sock = self._bind(self.host, self._requested_port)
        self.port = self._sock.getsockname()[1]
        self._ready.clear()
        self._error = None
        self._served_one = False
        self._thread = threading.Thread(target=self._run, name=f"rpl-sim-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"simulator failed to start on {self.host}:{self.port}") from self._error
        log.info("simulated Red Pitaya listening on %s:%d (policy %s)", self.host, self.port, self.client_policy.value)
        return self

    def stop(self) -> None:
        """Close every socket, stop the loop and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and self._stop_event is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(_START_TIMEOUT)
        if thread.is_alive():  # pragma: no cover - would be a bug
            log.error("simulator thread %s did not stop", thread.name)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def restart(self) -> None:
        """Drop every connection and listen again on the same port (model state is kept).

        This is what PyRPL sees when the monitor_server process is restarted.
        """
        if not self.running or self._loop is None:
            raise RuntimeError("simulator is not running")
        future = asyncio.run_coroutine_threadsafe(self._restart(), self._loop)
        future.result(_START_TIMEOUT)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Simulator {self.host}:{self.port} {state} policy={self.client_policy.value}>"

    # -- loop thread -------------------------------------------------------------------
    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.create_server((host, port), family=family, backlog=16, reuse_port=False)
        except OSError as exc:
            raise ValueError(f"cannot bind the simulator to {host}:{port}: {exc}") from exc

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # pragma: no cover - reported through start()
            self._error = exc
            log.exception("simulator loop crashed")
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._serve_lock = asyncio.Lock()
        await self._listen()
        self._ready.set()
        await self._stop_event.wait()
        await self._close_all()

    async def _listen(self) -> None:
        if self._sock is None:
            self._sock = self._bind(self.host, self.port)
        self._server = await asyncio.start_server(self._handle, sock=self._sock)

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
            if conn.task is not None and conn.task is not asyncio.current_task():
                conn.task.cancel()
        tasks = [c.task for c in self._conns if c.task is not None and c.task is not asyncio.current_task()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self._sock = None  # closed by the server

    async def _restart(self) -> None:
        await self._close_all()
        self._served_one = False
        self._serve_lock = asyncio.Lock()
        await self._listen()
        log.info("simulator restarted on %s:%d", self.host, self.port)

    # -- connections --------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer, asyncio.current_task())
        self._conns.add(conn)
        self.connections += 1
        policy = self.client_policy
        log.debug("client %s connected (%d open)", conn.peer, len(self._conns))
        try:
            if policy is ClientPolicy.REJECT and self._active:
                log.info("rejecting second client %s (policy reject)", conn.peer)
                return
            if policy is ClientPolicy.KICK:
                for other in list(self._active):
                    log.info("client %s replaces %s (policy kick)", conn.peer, other.peer)
                    other.abort()
            if policy in (ClientPolicy.QUEUE, ClientPolicy.EXIT):
                assert self._serve_lock is not None
                async with self._serve_lock:
                    if policy is ClientPolicy.EXIT and self._served_one:
                        return
                    await self._session(conn, reader, writer)
                    if policy is ClientPolicy.EXIT:
                        self._served_one = True
                        log.info("first client gone: no longer listening (policy exit)")
                        if self._server is not None:
                            self._server.close()
                        for other in list(self._conns):
                            if other is not conn:
                                other.abort()
            else:
                await self._session(conn, reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one connection take the server down
            log.exception("error while serving %s", conn.peer)
        finally:
            self._conns.discard(conn)
            self._active.discard(conn)
            conn.abort()
            log.debug("client %s disconnected", conn.peer)

    async def _session(self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._active.add(conn)
        model = self.model
        while True:
            try:
                raw = await reader.readexactly(HEADER_SIZE)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            header = parse_header(raw)
            if header.length == 0:
                continue  # monitor_server.c: data_length == 0 -> ignore the header
            if header.command == CLOSE:
                return
            if header.command not in (READ, WRITE):
                log.warning("unknown control byte %s from %s: closing (server and client out of sync)", header.name, conn.peer)
                return
            payload = b""
            if header.command == WRITE:
                try:
                    payload = await reader.readexactly(4 * header.length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
            action = self.faults.next_action()
            if action.drop:
                log.info("fault: dropping connection %s instead of answering %s", conn.peer, header.name)
                return
            if action.delay:
                await asyncio.sleep(action.delay)
            if header.command == READ:
                data = model.read(header.address, header.length)
                reply = raw + data.astype("<u4").tobytes()
            else:
                model.write(header.address, np.frombuffer(payload, dtype="<u4"))
                reply = raw
            if action.garble:
                reply = bytes([reply[0] ^ 0xFF]) + reply[1:]
            self.requests += 1
            try:
                writer.write(reply)
                await writer.drain()
            except ConnectionError:
                return
