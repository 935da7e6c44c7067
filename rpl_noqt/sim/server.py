"""The simulated monitor_server: a TCP server with one thread per connection.

The server speaks exactly the protocol of ``monitor_server.c`` (see
:mod:`rpl_noqt.board.wire`) on top of :class:`~rpl_noqt.sim.fpga.FpgaModel`.
An accept thread named ``rpl-sim-<port>`` hands each connection to a thread of
its own that blocks in ``recv``, like the C server's loop: 1.4 to 4 times
faster per round trip than an asyncio transport on this VM, and independent
of whatever loops or threads the process under test uses.
``stop()`` closes every socket and joins every thread.

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

import contextlib
import enum
import itertools
import logging
import socket
import threading
from types import TracebackType

import numpy as np

from .faults import Faults
from .fpga import FpgaModel
from ..board.wire import CLOSE, HEADER_SIZE, READ, WRITE, parse_header

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
    """One accepted socket and the thread serving it."""

    def __init__(self, sock: socket.socket, peer: object) -> None:
        self.sock = sock
        self.peer = peer
        self.thread: threading.Thread | None = None
        self.aborted = threading.Event()  # a fault delay in progress ends on it

    def abort(self) -> None:
        """Close the socket; a thread blocked in ``recv`` or in a fault delay returns at once."""
        self.aborted.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def recv_exactly(self, n: int) -> bytes | None:
        """``n`` bytes, or None if the peer closed (or the socket was aborted) first."""
        sock = self.sock
        try:
            data = sock.recv(n)
            if len(data) == n or not data:
                return data or None
            chunks = [data]
            remaining = n - len(data)
            while remaining:
                chunk = sock.recv(remaining)
                if not chunk:
                    return None
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        except OSError:
            return None


class _Turns:
    """First come, first served: the ``queue``/``exit`` policies' one client at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._serving = 0
        self._closed = False

    def wait_turn(self) -> int | None:
        """Block until this caller's turn; its ticket, or None once the server stops."""
        with self._cond:
            ticket = next(self._tickets)
            while self._serving != ticket and not self._closed:
                self._cond.wait()
            return None if self._closed else ticket

    def done(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


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
        self._lock = threading.Lock()  # guards the sets, counters and the listening socket
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._active: set[_Connection] = set()
        self._turns = _Turns()
        self._served_one = False

    # -- lifecycle ----------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Started and not stopped (also while the ``exit`` policy has stopped listening)."""
        return self._thread is not None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> Simulator:
        """Bind, start the accept thread and return once it accepts connections."""
        if self.running:
            raise RuntimeError(f"simulator already running on {self.host}:{self.port}")
        sock = self._bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        self._listen(sock)
        log.info("simulated Red Pitaya listening on %s:%d (policy %s)", self.host, self.port, self.client_policy.value)
        return self

    def stop(self) -> None:
        """Close every socket and join every thread."""
        if self._thread is None:
            return
        self._close_all()
        self._thread = None

    def restart(self) -> None:
        """Drop every connection and listen again on the same port (model state is kept).

        This is what PyRPL sees when the monitor_server process is restarted.
        """
        if self._thread is None:
            raise RuntimeError("simulator is not running")
        self._close_all()
        self._listen(self._bind(self.host, self.port))
        log.info("simulator restarted on %s:%d", self.host, self.port)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Simulator {self.host}:{self.port} {state} policy={self.client_policy.value}>"

    # -- listening -----------------------------------------------------------------------
    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            return socket.create_server((host, port), family=family, backlog=16, reuse_port=False)
        except OSError as exc:
            raise ValueError(f"cannot bind the simulator to {host}:{port}: {exc}") from exc

    def _listen(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            self._served_one = False
            self._turns = _Turns()
        thread = threading.Thread(target=self._accept_loop, args=(sock,), name=f"rpl-sim-{self.port}", daemon=True)
        self._thread = thread
        thread.start()

    def _close_listener(self) -> None:
        """Stop accepting: wake the accept thread (a connection to itself) and close the socket."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is None:
            return
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            with contextlib.suppress(OSError), socket.create_connection(sock.getsockname()[:2], timeout=1.0):
                pass  # accept() returns; the loop sees the socket gone
            thread.join(1.0)
            if thread.is_alive():  # could not connect to ourselves: shutdown wakes accept() on Linux
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                thread.join(_START_TIMEOUT)
            if thread.is_alive():  # pragma: no cover - would be a bug
                log.error("simulator accept thread %s did not stop", thread.name)
        with contextlib.suppress(OSError):
            sock.close()

    def _close_all(self) -> None:
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
            turns = self._turns
        turns.close()
        for conn in conns:
            conn.abort()
        me = threading.current_thread()
        for conn in conns:
            if conn.thread is not None and conn.thread is not me:
                conn.thread.join(_START_TIMEOUT)
                if conn.thread.is_alive():  # pragma: no cover - would be a bug
                    log.error("simulator connection thread %s did not stop", conn.thread.name)

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                client, peer = sock.accept()
            except OSError:
                return
            with self._lock:
                if self._sock is not sock:  # woken to stop (or to close after the exit policy)
                    sock.close()  # first: nobody may connect once a client was turned away
                    client.close()
                    return
                conn = _Connection(client, peer)
                self._conns.add(conn)
                self.connections += 1
                number = self.connections
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.thread = threading.Thread(target=self._handle, args=(conn,), name=f"rpl-sim-{self.port}-c{number}",
                                           daemon=True)
            conn.thread.start()

    # -- connections --------------------------------------------------------------------
    def _handle(self, conn: _Connection) -> None:
        policy = self.client_policy
        log.debug("client %s connected", conn.peer)
        try:
            if policy is ClientPolicy.REJECT:
                with self._lock:
                    busy = bool(self._active)
                if busy:
                    log.info("rejecting second client %s (policy reject)", conn.peer)
                    return
            if policy is ClientPolicy.KICK:
                with self._lock:
                    others = list(self._active)
                for other in others:
                    log.info("client %s replaces %s (policy kick)", conn.peer, other.peer)
                    other.abort()
            if policy in (ClientPolicy.QUEUE, ClientPolicy.EXIT):
                turns = self._turns
                if turns.wait_turn() is None:
                    return
                try:
                    if policy is ClientPolicy.EXIT and self._served_one:
                        return
                    self._session(conn)
                    if policy is ClientPolicy.EXIT:
                        self._served_one = True
                        log.info("first client gone: no longer listening (policy exit)")
                        self._close_listener()
                        with self._lock:
                            others = [c for c in self._conns if c is not conn]
                        for other in others:
                            other.abort()
                finally:
                    turns.done()
            else:
                self._session(conn)
        except Exception:  # never let one connection take the server down
            log.exception("error while serving %s", conn.peer)
        finally:
            with self._lock:
                self._conns.discard(conn)
                self._active.discard(conn)
            conn.abort()
            log.debug("client %s disconnected", conn.peer)

    def _session(self, conn: _Connection) -> None:
        with self._lock:
            self._active.add(conn)
        model, faults = self.model, self.faults
        while True:
            raw = conn.recv_exactly(HEADER_SIZE)
            if raw is None:
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
                received = conn.recv_exactly(4 * header.length)
                if received is None:
                    return
                payload = received
            action = faults.next_action()
            if action.drop:
                log.info("fault: dropping connection %s instead of answering %s", conn.peer, header.name)
                return
            if action.delay and conn.aborted.wait(action.delay):
                return
            if header.command == READ:
                data = model.read(header.address, header.length)
                reply = raw + data.astype("<u4").tobytes()
            else:
                model.write(header.address, np.frombuffer(payload, dtype="<u4"))
                reply = raw
            if action.garble:
                reply = bytes([reply[0] ^ 0xFF]) + reply[1:]
            with self._lock:
                self.requests += 1
            try:
                conn.sock.sendall(reply)
            except OSError:
                return
