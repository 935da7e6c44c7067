"""The board transport: rpl-noqt's replacement for PyRPL's ``MonitorClient``.

At activation ``pyrpl.redpitaya_client.MonitorClient`` becomes
:class:`BoardClient` (recorded in the patch record), so unmodified PyRPL
constructs this class with its usual ``(hostname, port, restartserver)``.
What it does differently from upstream's client:

* it connects with a timeout and gives every request a deadline (the
  :class:`~rpl_noqt.board.policy.LinkPolicy`); nothing blocks for ever;
* every reply header is checked against the request; a wrong one, a closed
  stream or a late reply drops the connection (the stream cannot be trusted
  any more) instead of reading on;
* it never returns ``None``: a request that cannot be completed within its
  deadline raises :class:`~rpl_noqt.errors.BoardConnectionError` naming the
  board, the operation, the address and the cause, so a write that did not
  reach the board is never taken for done (PyRPL then records nothing in
  the config: its ``__set__`` saves only after the write returned);
* a dropped link is reconnected within the request's deadline and the
  request retried once the link is back (register reads and writes are
  idempotent); reconnect attempts back off, and one outage logs at most a
  few lines (:class:`~rpl_noqt.board.episode.FaultEpisode`);
* after a reconnect it compares the FPGA's cycle counter (the scope's
  ``current_timestamp``, which PyRPL reads too) with the last one seen: a
  counter that went back means the FPGA was reloaded and lost its state,
  which is reported (:attr:`BoardClient.state_lost`, the
  ``rpl_noqt.events.board_state_lost`` signal) and never silently repaired;
* each request and its reply use one buffer sized for it (``recv_into``),
  no ``bytes +=``.

Every request holds the board's lock (shared with PyRPL's modules) for at
most its deadline.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import BoardConnectionError, BoardTimeoutError
from . import policy as _policy
from .episode import FaultEpisode
from .wire import CLOSE, HEADER_SIZE, MAX_WORDS, READ, WRITE

__all__ = ("BoardClient", "BoardClosedError", "LOCK_ATTR")

logger = logging.getLogger(__name__)

#: where a client (and every PyRPL object of its board) keeps the board lock
LOCK_ATTR = "_rpl_noqt_lock"
#: the scope's 64-bit FPGA cycle counter (``current_timestamp``, red_pitaya_scope.v 0x15C/0x160)
FPGA_CYCLES_ADDRESS = 0x4010015C
#: most words one write request carries (the C server's buffer holds 65535 words, header included)
MAX_WRITE_WORDS = MAX_WORDS - 2

_HEADER = struct.Struct("<BBHI")
_client_numbers = iter(range(1, 1 << 62))
_private_lock_guard = threading.Lock()


class BoardClosedError(RuntimeError):
    """The board's session was closed; its modules can no longer be used."""


class _LinkFault(Exception):
    """The connection cannot be used any more (closed, reset, out of sync)."""


class BoardClient:
    """A monitor-server client with deadlines, validated replies and one error type.

    Constructed by PyRPL as ``MonitorClient(hostname, port, restartserver)``;
    the policy is the one made current by the session
    (:func:`rpl_noqt.board.policy.using`), or the environment's.
    """

    def __init__(self, hostname: str = "192.168.1.0", port: int = 2222,
                 restartserver: Callable[[], int | None] | None = None, *,
                 policy: _policy.LinkPolicy | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port of board {hostname} must be an integer from 1 to 65535, got {port!r}")
        self.policy = policy if policy is not None else _policy.current()
        self.client_number = next(_client_numbers)
        self._hostname = hostname
        self._port = port
        self._restartserver = restartserver
        self._read_counter = 0  # PyRPL's tests and benchmarks read these two
        self._write_counter = 0
        self.socket: socket.socket | None = None
        self._sent = bytearray(HEADER_SIZE)  # the request header, reused
        self._echo = bytearray(HEADER_SIZE)  # a write's echoed header, reused
        self._echo_view = memoryview(self._echo)
        self._closed = False
        self._closing = False  # set by closing(): no more waiting for a board that is down
        self._fpga_cycles: int | None = None  # counter seen at the last (re)connect
        self.state_lost = False  #: the FPGA was reloaded since the first connect (see module doc)
        self.episode = FaultEpisode(self.board, self.policy, logger)
        deadline = time.monotonic() + self.policy.connect_timeout
        overall = _policy.connect_deadline()  # rpl_noqt.connect() bounds the whole connect
        if overall is not None:
            deadline = min(deadline, overall)
        lock = self._lock()
        with lock:
            try:
                self._reconnect("connect", deadline)
            except BaseException:
                self._drop()
                self._closed = True
                raise
            if self.episode.active:  # it took more than one attempt
                self.episode.recovered()
        logger.debug("client %d connected to %s", self.client_number, self.board)

    # -- what PyRPL calls ------------------------------------------------------------------
    @property
    def board(self) -> str:
        return f"{self._hostname}:{self._port}"

    @property
    def link_up(self) -> bool:
        return self.socket is not None and not self.episode.active

    def reads(self, addr: int, length: int) -> np.ndarray:
        """``length`` 32-bit words from ``addr`` (longer reads are split into requests)."""
        self._read_counter += 1
        if length <= MAX_WORDS:
            return self._request(READ, addr, length, None)
        parts = [self._request(READ, addr + 4 * start, min(MAX_WORDS, length - start), None)
                 for start in range(0, length, MAX_WORDS)]
        return np.concatenate(parts)

    def writes(self, addr: int, values: Sequence[int] | np.ndarray) -> bool:
        """Write ``values`` from ``addr``; True once the board has echoed the request."""
        self._write_counter += 1
        data = np.ascontiguousarray(values, dtype="<u4")
        if data.ndim != 1:
            data = data.reshape(-1)
        for start in range(0, max(len(data), 1), MAX_WRITE_WORDS):
            chunk = data[start:start + MAX_WRITE_WORDS]
            if len(chunk):
                self._request(WRITE, addr + 4 * start, len(chunk), chunk)
        return True

    def close(self) -> None:
        """Say goodbye to the server and close the socket; later requests raise."""
        self._closed = True
        sock = self.socket
        self.socket = None
        if sock is None:
            return
        try:
            sock.settimeout(0.2)
            sock.sendall(_HEADER.pack(CLOSE, 0, 0, 0))
        except OSError:
            pass
        finally:
            sock.close()

    def closing(self) -> None:
        """The session is closing: from now on a request finding the link down fails at once."""
        self._closing = True

    def restart(self) -> None:
        """Drop the connection and connect again (PyRPL's API; bounded by the connect timeout)."""
        with self._lock():
            self._drop()
            self._closed = False
            self._reconnect("reconnect", time.monotonic() + self.policy.connect_timeout)

    def emptybuffer(self) -> None:
        """Upstream re-synchronised by reading the stream dry; a fresh connection is the safe way."""
        with self._lock():
            self._drop()

    def __del__(self) -> None:
        sock = self.__dict__.get("socket")
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("up" if self.link_up else "down")
        return f"<BoardClient {self.client_number} {self.board} {state}>"

    # -- requests ---------------------------------------------------------------------------
    def _lock(self) -> Any:
        lock = self.__dict__.get(LOCK_ATTR)
        if lock is None:  # a client used on its own, outside any RedPitaya
            from ..locks import DeviceLock

            with _private_lock_guard:
                lock = self.__dict__.setdefault(LOCK_ATTR, DeviceLock(f"client-{self.board}"))
        return lock

    def _request(self, command: int, addr: int, length: int, payload: np.ndarray | None) -> Any:
        operation = ("read of %d word(s)" if command == READ else "write of %d word(s)") % length
        lock = self._lock()
        lock.acquire()
        try:
            if self._closed or self.__dict__.get("_rpl_noqt_closed"):
                raise BoardClosedError(f"the session of board {self.board} was closed; "
                                       f"{operation} at {addr:#010x} refused")
            deadline = time.monotonic() + self.policy.io_timeout
            while True:
                if self._closed:  # closed by another thread while this request waited or failed
                    raise BoardClosedError(f"the session of board {self.board} was closed; "
                                           f"{operation} at {addr:#010x} refused")
                if self.socket is None:
                    self._reconnect(operation, deadline, address=addr)
                try:
                    result = self._exchange(command, addr, length, payload, deadline)
                except socket.timeout:
                    self._drop()  # a late reply would put the stream out of step
                    self.episode.failure(f"no reply to a {operation} at {addr:#010x} "
                                         f"within {self.policy.io_timeout:g} s")
                    self.episode.request_failed()
                    raise BoardTimeoutError(self.board, operation,
                                            f"no reply within the {self.policy.io_timeout:g} s I/O deadline",
                                            address=addr) from None
                except (OSError, _LinkFault) as exc:
                    self._drop()
                    self.episode.failure(f"{operation} at {addr:#010x}: {_describe(exc)}")
                    if time.monotonic() >= deadline:
                        self.episode.request_failed()
                        raise BoardConnectionError(self.board, operation,
                                                f"{_describe(exc)}; the {self.policy.io_timeout:g} s I/O "
                                                "deadline has passed", address=addr) from exc
                    continue  # reconnect within the deadline and send it again
                if self.episode.active:
                    self.episode.recovered()
                return result
        finally:
            lock.release()

    def _exchange(self, command: int, addr: int, length: int, payload: np.ndarray | None,
                  deadline: float) -> Any:
        sock = self.socket
        assert sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        sock.settimeout(remaining)
        sent = self._sent
        _HEADER.pack_into(sent, 0, command, 0, length, addr)
        if payload is None:
            sock.sendall(sent)
            reply = bytearray(HEADER_SIZE + 4 * length)
            self._receive(sock, memoryview(reply), deadline)
            if reply[:HEADER_SIZE] != sent:
                raise _LinkFault(f"the reply header {bytes(reply[:HEADER_SIZE]).hex()} does not echo the "
                                 f"request {bytes(sent).hex()} (stream out of sync)")
            return np.frombuffer(reply, dtype="<u4", offset=HEADER_SIZE)
        sock.sendall(bytes(sent) + payload.tobytes())
        self._receive(sock, self._echo_view, deadline)
        if self._echo != sent:
            raise _LinkFault(f"the reply header {bytes(self._echo).hex()} does not echo the "
                             f"request {bytes(sent).hex()} (stream out of sync)")
        return True

    @staticmethod
    def _receive(sock: socket.socket, view: memoryview, deadline: float) -> None:
        got, size = 0, len(view)
        while got < size:
            n = sock.recv_into(view[got:])
            if n == 0:
                raise _LinkFault("the board closed the connection")
            got += n
            if got < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)

    # -- connecting ----------------------------------------------------------------------------
    def _reconnect(self, operation: str, deadline: float, *, address: int | None = None) -> None:
        """Connect within ``deadline``: the first attempt at once, the next ones spaced by the backoff.

        Each request makes its own attempts, so a board that is back is found
        by the next call; a request's attempts are bounded by its deadline
        (about six in two seconds), and requests are serialised by the board
        lock, so an outage never turns into a storm of reconnects.
        """
        episode = self.episode
        if self._closing and episode.active:
            raise BoardConnectionError(self.board, operation, "the link is down and the session is closing",
                                       address=address)
        last_error = "no attempt could be made"
        error_cls: type[BoardConnectionError] = BoardTimeoutError  # until an attempt says otherwise
        attempt, next_at = 0, time.monotonic()
        while True:
            now = time.monotonic()
            if next_at >= deadline:
                episode.request_failed()
                down = f"link down for {now - episode.since:.1f} s; " if episode.since is not None else ""
                raise error_cls(self.board, operation, f"{down}{last_error}", address=address)
            if next_at > now:
                time.sleep(next_at - now)  # holds the board: everyone waits for the link anyway
            episode.attempted()
            try:
                self._open(deadline)
                self._check_fpga(deadline)
                return
            except (OSError, _LinkFault) as exc:
                self._drop()
                last_error = f"cannot connect to {self._hostname} port {self._port}: {_describe(exc)}"
                # no answer in time is a timeout; refused, reset or garbled is not
                error_cls = BoardTimeoutError if isinstance(exc, socket.timeout) else BoardConnectionError
                episode.failure(last_error)
                if isinstance(exc, ConnectionRefusedError):
                    self._restart_server_once()
            attempt += 1
            next_at = time.monotonic() + self.policy.backoff(attempt)

    def _open(self, deadline: float) -> None:
        timeout = max(0.001, deadline - time.monotonic())
        sock = socket.create_connection((self._hostname, self._port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.socket = sock

    def _restart_server_once(self) -> None:
        """Nobody listens: let PyRPL restart its monitor server, once per outage (SSH boards)."""
        episode = self.episode
        if self._restartserver is None or episode.server_restarted:
            return
        episode.server_restarted = True
        try:
            port = self._restartserver()
        except Exception as exc:  # SSH trouble: keep trying the port we have
            episode.log(logging.WARNING, "restarting the monitor server of %s failed: %s", self.board, exc)
            return
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 and port != self._port:
            episode.log(logging.WARNING, "monitor server of %s restarted on port %d", self.board, port)
            self._port = port

    def _check_fpga(self, deadline: float) -> None:
        """Read the FPGA's cycle counter: one that went back means a reloaded FPGA."""
        words = self._exchange(READ, FPGA_CYCLES_ADDRESS, 2, None, deadline)
        cycles = int(words[0]) | (int(words[1]) << 32)
        previous, self._fpga_cycles = self._fpga_cycles, cycles
        if previous is not None and cycles < previous and not self.state_lost:
            self.state_lost = True
            logger.warning(
                "board %s lost its state while the link was down: its FPGA cycle counter went back from %d "
                "to %d (FPGA reloaded or board rebooted). Its registers are at their reset values; call "
                "session.restore() to write the configuration back.", self.board, previous, cycles)
            from ..events import board_state_lost

            board_state_lost.send(self, board=self.board)

    def _drop(self) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _LinkFault):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text or type(exc).__name__
