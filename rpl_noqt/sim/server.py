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
    picture).  Bounded: a client waits at most ``queue_timeout`` s for its turn
    (then it is disconnected), a waiting client that hangs up leaves the queue
    at once, and while a client waits the current one may sit idle (or
    half-way through a request) for at most ``idle_timeout`` s; each of these is
    logged.  rpl-noqt's own client does not wait that long: at its connect
    timeout it raises a ``BoardTimeoutError`` saying the board did not answer,
    probably because another program holds it.
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

**Limits.**  At most ``max_connections`` connections are open at once (a
further one is accepted and closed at once, logged); the listen backlog is
``LISTEN_BACKLOG``.  Running out of file descriptors or threads refuses the
connection at hand (logged) and the server keeps accepting.  A client that has
gone costs no more work: a fault delay or a queued turn ends when it hangs up.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import logging
import math
import select
import socket
import struct
import threading
import time
from types import TracebackType

import numpy as np

from .faults import Faults
from .fpga import FpgaModel
from .signals import one_blas_thread
from ..board.wire import CLOSE, HEADER_SIZE, READ, WRITE, parse_header

log = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
#: default of ``max_connections``: connections open at once (a thread each)
DEFAULT_MAX_CONNECTIONS = 64
#: default of ``queue_timeout`` (s): the longest a client waits for its turn (queue/exit)
DEFAULT_QUEUE_TIMEOUT = 10.0
#: default of ``idle_timeout`` (s): how long the current client may sit idle while another waits (queue/exit)
DEFAULT_IDLE_TIMEOUT = 5.0
#: listen backlog (the kernel caps it at net.core.somaxconn); 16 made a burst of 1000 connects take a minute
LISTEN_BACKLOG = 1024
#: how often a waiting connection looks at its socket and at the current client (s)
_WAIT_POLL = 0.05
#: errors of accept()/thread creation that mean "out of resources for now": refuse, wait a little, go on
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_RDHUP = getattr(select, "POLLRDHUP", 0)
_GONE_EVENTS = _RDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
_HEADER = struct.Struct("<BBHI")
_WORD = struct.Struct("<I")


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


def _check_timeout(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a number of seconds > 0, or None (no limit), got {value!r}")
    return float(value)


class _RateLimitedLog:
    """One log line per ``interval`` for a repeated event, with the count of those left out."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = -math.inf
        self._skipped = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.interval:
                self._skipped += 1
                return
            skipped, self._skipped, self._last = self._skipped, 0, now
        if skipped:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, skipped, self.interval)
        log.log(level, message, *args)


class _Connection:
    """One accepted socket and the thread serving it."""

    def __init__(self, sock: socket.socket, peer: object) -> None:
        self.sock = sock
        self.peer = peer
        self.thread: threading.Thread | None = None  # set once started
        self.aborted = threading.Event()  # a fault delay in progress ends on it
        self.busy = False  # a whole request is in and being answered
        self.requests = 0  # answered on this connection (only its thread counts: no lock per request)
        self.last_done = time.monotonic()  # when it last got its turn or an answer
        self._poller: select.poll | None = None

    def abort(self) -> None:
        """Close the socket; a thread blocked in ``recv`` or in a fault delay returns at once."""
        self.aborted.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def gone(self, timeout: float = 0.0) -> bool:
        """True once the peer hung up (or the connection was aborted), waiting up to ``timeout`` s for it.

        Asks the kernel (poll: peer closed its end, reset, error): a client
        that sent a request and then left counts as gone, its request
        unread or not.
        """
        if self.aborted.is_set():
            return True
        try:
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.sock, _GONE_EVENTS)
            events = self._poller.poll(max(0, int(timeout * 1000)))
        except (OSError, ValueError):  # closed meanwhile
            return True
        if any(ev & _GONE_EVENTS for _, ev in events):
            return True
        if not _RDHUP and events:  # pragma: no cover - no POLLRDHUP (not Linux): peek for EOF
            try:
                return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True
        return self.aborted.is_set()

    def wait_gone(self, seconds: float) -> bool:
        """Sleep ``seconds`` (a fault delay); True as soon as the peer hangs up or the connection is aborted."""
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return self.gone()
            if self.gone(min(remaining, 0.1)):  # shutdown() by abort() wakes the poll at once
                return True

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
    """First come, first served: the ``queue``/``exit`` policies' one client at a time.

    A waiting connection looks every ``_WAIT_POLL`` s whether its client hung
    up (it then leaves the queue), whether it waited longer than
    ``queue_timeout`` (it is then refused), and, first in line, whether the
    current client sat idle longer than ``idle_timeout`` (it is then
    disconnected so that the next one is served).
    """

    def __init__(self, queue_timeout: float | None, idle_timeout: float | None) -> None:
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Connection] = collections.deque()
        self._current: _Connection | None = None
        self._closed = False
        self.queue_timeout = queue_timeout
        self.idle_timeout = idle_timeout

    def wait_turn(self, conn: _Connection) -> bool:
        """Block until it is ``conn``'s turn: True, or False if it left, timed out or the server stops."""
        start = time.monotonic()
        with self._cond:
            self._waiting.append(conn)
        try:
            while True:
                with self._cond:
                    if self._closed:
                        return False
                    if self._current is None and self._waiting[0] is conn:
                        self._waiting.popleft()
                        self._current = conn
                        conn.last_done = time.monotonic()
                        return True
                    self._cond.wait(_WAIT_POLL)
                    if self._closed:
                        return False
                    if self._current is None and self._waiting[0] is conn:
                        continue  # served at the top of the loop
                    current = self._current
                    first = self._waiting[0] is conn
                if conn.gone():
                    log.info("client %s hung up while waiting for its turn", conn.peer)
                    return False
                now = time.monotonic()
                if self.queue_timeout is not None and now - start > self.queue_timeout:
                    log.warning("client %s waited %.1f s for the board, held by %s: disconnecting it "
                                "(queue_timeout %g s; a monitor server serves one client at a time)",
                                conn.peer, now - start, current.peer if current else "nobody", self.queue_timeout)
                    return False
                if (first and current is not None and self.idle_timeout is not None and not current.busy
                        and now - current.last_done > self.idle_timeout):
                    log.warning("client %s sat idle for %.1f s (no complete request) while %s waits: "
                                "disconnecting it (idle_timeout %g s)", current.peer, now - current.last_done,
                                conn.peer, self.idle_timeout)
                    current.abort()
        finally:
            with self._cond:
                if conn in self._waiting:
                    self._waiting.remove(conn)
                    self._cond.notify_all()

    def done(self, conn: _Connection) -> None:
        with self._cond:
            if self._current is conn:
                self._current = None
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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, got {max_connections!r}")
        #: connections open at once; one more is accepted and closed at once (logged)
        self.max_connections = max_connections
        #: queue/exit: the longest a client waits for its turn (s; None: no limit)
        self.queue_timeout = _check_timeout("queue_timeout", queue_timeout)
        #: queue/exit: how long the current client may sit idle while another waits (s; None: no limit)
        self.idle_timeout = _check_timeout("idle_timeout", idle_timeout)
        self.host = host
        self.port = _check_port(port)
        self._requested_port = self.port
        self.client_policy = ClientPolicy.parse(client_policy)
        if faults is not None and not isinstance(faults, Faults):
            raise ValueError(f"faults must be a rpl_noqt.sim.Faults instance or None, got {faults!r}")
        self.faults = faults if faults is not None else Faults()
        self.model = model if model is not None else FpgaModel(seed=seed)
        self._requests_done = 0  # answered on connections that have closed
        self.connections = 0  #: connections accepted since start
        self._lock = threading.Lock()  # guards the sets, counters and the listening socket
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._active: set[_Connection] = set()
        self._turns = _Turns(self.queue_timeout, self.idle_timeout)
        self._served_one = False
        self.refused = 0  #: connections refused since start (connection limit, out of descriptors or threads)
        self._refusal_log = _RateLimitedLog()
        self._accept_error_log = _RateLimitedLog()
        self._thread_error_log = _RateLimitedLog()

    # -- lifecycle ----------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Requests answered since start (all clients)."""
        with self._lock:
            return self._requests_done + sum(conn.requests for conn in self._conns)

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
        _warm_up()
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
            return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=False)
        except OSError as exc:
            raise ValueError(f"cannot bind the simulator to {host}:{port}: {exc}") from exc

    def _listen(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            self._served_one = False
            self._turns = _Turns(self.queue_timeout, self.idle_timeout)
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
        """Accept until the listening socket is closed; nothing else ends this loop.

        Out of file descriptors (``accept`` fails) or threads (``start`` fails),
        the connection at hand is refused, the event logged (at most once a
        second) and the loop goes on after a short pause; beyond
        ``max_connections`` a connection is accepted and closed at once.
        """
        while True:
            try:
                client, peer = sock.accept()
            except OSError as exc:
                with self._lock:
                    if self._sock is not sock:  # closed: stopping
                        return
                if exc.errno in _EXHAUSTED:
                    self._accept_error_log(logging.ERROR, "simulator on port %d cannot accept a connection: %s; "
                                           "still listening", self.port, exc.strerror or exc)
                    time.sleep(0.05)  # the pending connection stays in the backlog: do not spin on it
                continue  # e.g. ECONNABORTED: the peer gave up before accept()
            try:
                self._admit(sock, client, peer)
            except _Stopped:
                return
            except Exception:  # never let one connection end the accept loop
                log.exception("simulator on port %d: error while accepting %s", self.port, peer)
                with contextlib.suppress(OSError):
                    client.close()

    def _admit(self, sock: socket.socket, client: socket.socket, peer: object) -> None:
        with self._lock:
            if self._sock is not sock:  # woken to stop (or to close after the exit policy)
                sock.close()  # first: nobody may connect once a client was turned away
                client.close()
                raise _Stopped
            if len(self._conns) >= self.max_connections:
                self.refused += 1
                open_now = len(self._conns)
                conn = None
            else:
                conn = _Connection(client, peer)
                self._conns.add(conn)
                self.connections += 1
                number = self.connections
        if conn is None:
            self._refusal_log(logging.WARNING, "simulator on port %d refused a connection from %s: %d connections "
                              "open (max_connections %d)", self.port, peer, open_now, self.max_connections)
            with contextlib.suppress(OSError):
                client.close()
            return
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(target=self._handle, args=(conn,), name=f"rpl-sim-{self.port}-c{number}",
                                  daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            with self._lock:
                self._conns.discard(conn)
                self.refused += 1
            conn.abort()
            self._thread_error_log(logging.ERROR, "simulator on port %d refused a connection from %s: cannot "
                                   "start a thread for it (%s); still listening", self.port, peer, exc)
            time.sleep(0.05)
            return
        conn.thread = thread

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
                if not turns.wait_turn(conn):
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
                    turns.done(conn)
            else:
                self._session(conn)
        except Exception:  # never let one connection take the server down
            log.exception("error while serving %s", conn.peer)
        finally:
            with self._lock:
                if conn in self._conns:
                    self._requests_done += conn.requests
                self._conns.discard(conn)
                self._active.discard(conn)
            conn.abort()
            log.debug("client %s disconnected", conn.peer)

    def _session(self, conn: _Connection) -> None:
        with self._lock:
            self._active.add(conn)
        model, faults = self.model, self.faults
        read_word, read, write, write_word = model.read_word, model.read, model.write, model.write_word
        unpack, pack_word, unpack_word = _HEADER.unpack, _WORD.pack, _WORD.unpack
        sock, recv_exactly = conn.sock, conn.recv_exactly
        recv, sendall, monotonic = sock.recv, sock.sendall, time.monotonic
        custom_faults = type(faults).next_action is not Faults.next_action  # a subclass decides per request
        while True:
            try:
                raw = recv(HEADER_SIZE)  # the whole header, nearly always: no helper call
            except OSError:
                return
            if len(raw) != HEADER_SIZE:
                if not raw:
                    return
                rest = recv_exactly(HEADER_SIZE - len(raw))
                if rest is None:
                    return
                raw += rest
            command, _, length, address = unpack(raw)
            if length == 0:
                continue  # monitor_server.c: data_length == 0 -> ignore the header
            if command == CLOSE:
                return
            if command != READ and command != WRITE:
                log.warning("unknown control byte %s from %s: closing (server and client out of sync)",
                            parse_header(raw).name, conn.peer)
                return
            payload = b""
            if command == WRITE:
                received = recv_exactly(4 * length)
                if received is None:
                    return
                payload = received
            conn.busy = True
            action = faults.next_action() if custom_faults or faults.active else None
            if action is not None:
                if action.drop:
                    log.info("fault: dropping connection %s instead of answering %s", conn.peer, chr(command))
                    return
                if action.delay and conn.wait_gone(action.delay):
                    return  # the client left (or we stop) during the delay: nothing more to do for it
            data = None  # a block read's words, sent from the array itself (no copy into one reply)
            if command == READ:
                if length == 1:
                    reply = raw + pack_word(read_word(address))
                else:
                    reply = raw
                    data = memoryview(np.ascontiguousarray(read(address, length), dtype="<u4")).cast("B")
            else:
                if length == 1:
                    write_word(address, unpack_word(payload)[0])
                else:
                    write(address, np.frombuffer(payload, dtype="<u4"))
                reply = raw
            if action is not None and action.garble:
                reply = bytes([reply[0] ^ 0xFF]) + reply[1:]
            conn.requests += 1
            try:
                if data is None:
                    sendall(reply)
                else:
                    _send_both(sock, reply, data)
            except OSError:
                return
            conn.busy = False
            conn.last_done = monotonic()


_warmed = threading.Event()


def _warm_up() -> None:
    """Import scipy.signal in the background once per process (1.4 s here): the IQ
    noise path needs it, and the first access that did took that long.  Also
    find the BLAS libraries for :data:`~rpl_noqt.sim.signals.one_blas_thread`."""
    if _warmed.is_set():
        return
    _warmed.set()

    def load() -> None:
        with contextlib.suppress(Exception):
            import scipy.signal  # noqa: F401
        one_blas_thread.prepare()  # threadpoolctl's look at the loaded libraries (signals.dot)

    threading.Thread(target=load, name="rpl-sim-warm-up", daemon=True).start()


def _send_both(sock: socket.socket, head: bytes, body: memoryview) -> None:
    """``sendall(head + body)`` without building the concatenation (one system call when it fits)."""
    sent = sock.sendmsg([head, body])
    if sent < len(head):
        sock.sendall(head[sent:])
        sent = len(head)
    if sent - len(head) < len(body):
        sock.sendall(body[sent - len(head):])


class _Stopped(Exception):
    """The accept loop was woken to stop."""
