"""One TCP connection to one board, shared by every client of that board in the process.

A :class:`Link` does the work behind :class:`~rpl_noqt.board.client.BoardClient`:
it sends a request and checks its reply within a deadline, drops a stream
that cannot be trusted any more (closed, reset, a reply header that does not
echo the request, a reply later than the deadline) and reconnects within the
request's deadline, attempts spaced by the policy's backoff. After each
(re)connect it reads the FPGA's cycle counter (the scope's
``current_timestamp``, which PyRPL reads too): a counter that went back
means the FPGA was reloaded and lost its state, which is reported, never
silently repaired.

Links are shared: a second ``RedPitaya``/``Pyrpl`` for a board this process
already holds gets the same link and the same board lock instead of a second
socket (the monitor server serves one client at a time). The last client to
close closes the socket.

A link is used under its board lock (:attr:`Link.lock`), held by the caller
for at most one request's deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import BoardConnectionError, BoardTimeoutError
from ..runtime.locks import DeviceLock
from .episode import FaultEpisode
from .policy import LinkPolicy
from .wire import CLOSE, HEADER_SIZE, READ

__all__ = ("FPGA_CYCLES_ADDRESS", "Link", "board_address")

logger = logging.getLogger("rpl_noqt.board.client")  # one logger for the transport

#: the scope's 64-bit FPGA cycle counter (``current_timestamp``, red_pitaya_scope.v 0x15C/0x160)
FPGA_CYCLES_ADDRESS = 0x4010015C

_HEADER = struct.Struct("<BBHI")
_LINKS: dict[tuple[str, int], "Link"] = {}
_LINKS_LOCK = threading.Lock()


class _LinkFault(Exception):
    """The connection cannot be used any more (closed, reset, out of sync)."""


def board_address(hostname: str, port: int) -> tuple[str, int]:
    """The key of a board: its host as an IP address where the name resolves locally, and its port."""
    host = hostname.strip()
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:  # localhost and names in /etc/hosts resolve without a network
        return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]), port
    except OSError:
        return host.lower(), port


class Link:
    """The connection to one board (see the module doc). Create through :meth:`open`."""

    def __init__(self, key: tuple[str, int], hostname: str, port: int, policy: LinkPolicy,
                 restartserver: Callable[[], int | None] | None) -> None:
        self.key = key
        self.hostname = hostname
        self.port = port
        self.policy = policy
        self.restartserver = restartserver
        self.lock: DeviceLock | None = None  # the board lock, adopted from the first RedPitaya
        self.users = 0
        self.socket: socket.socket | None = None
        self.episode = FaultEpisode(self.board, policy, logger)
        self.state_lost = False  #: the FPGA was reloaded since the first connect
        self.closing = False  # the last user is closing: a link that is down is not waited for
        self._fpga_cycles: int | None = None
        self._sent = bytearray(HEADER_SIZE)  # the request header, reused
        self._echo = bytearray(HEADER_SIZE)  # a write's echoed header, reused
        self._echo_view = memoryview(self._echo)

    # -- sharing ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, hostname: str, port: int, policy: LinkPolicy,
             restartserver: Callable[[], int | None] | None, deadline: float, *,
             lock: DeviceLock | None = None) -> tuple[Link, bool]:
        """The board's link (and whether it was already open), connected within ``deadline``.

        A new link takes ``lock`` (its first ``RedPitaya``'s) as the board lock;
        a link already open keeps its own, which the newcomer then adopts.
        """
        key = board_address(hostname, port)
        with _LINKS_LOCK:
            link = _LINKS.get(key)
            shared = link is not None
            if link is None:
                link = _LINKS[key] = cls(key, hostname, port, policy, restartserver)
                link.lock = lock
            link.users += 1
        if shared:
            return link, True
        try:
            with link.board_lock():
                link.reconnect("connect", deadline)
                if link.episode.active:  # it took more than one attempt
                    link.episode.recovered()
        except BaseException:
            link.release()
            raise
        return link, False

    def board_lock(self) -> DeviceLock:
        lock = self.lock
        if lock is None:  # a client used on its own, outside any RedPitaya
            with _LINKS_LOCK:
                if self.lock is None:
                    self.lock = DeviceLock(f"link-{self.board}")
                lock = self.lock
        return lock

    def release(self) -> None:
        """One user fewer; the last one closes the socket."""
        with _LINKS_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            if _LINKS.get(self.key) is self:
                del _LINKS[self.key]
        self.close()

    def close(self) -> None:
        """Say goodbye to the monitor server and close the socket."""
        sock, self.socket = self.socket, None
        if sock is None:
            return
        try:
            sock.settimeout(0.2)
            sock.sendall(_HEADER.pack(CLOSE, 0, 0, 0))
        except OSError:
            pass
        finally:
            sock.close()

    @property
    def board(self) -> str:
        return f"{self.hostname}:{self.port}"

    @property
    def up(self) -> bool:
        return self.socket is not None and not self.episode.active

    # -- one request (the caller holds the board lock) ---------------------------------------------
    def request(self, command: int, addr: int, length: int, payload: np.ndarray | None, client: Any) -> Any:
        """Send one request and return its reply within the policy's I/O deadline.

        ``client.is_closed()`` is asked before every (re)try: a client closed
        meanwhile gets ``client.refusal(operation, addr)`` raised instead of a
        reconnect.
        """
        operation = ("read of %d word(s)" if command == READ else "write of %d word(s)") % length
        deadline = time.monotonic() + self.policy.io_timeout
        while True:
            if client.is_closed():
                raise client.refusal(operation, addr)
            if self.socket is None:
                self.reconnect(operation, deadline, address=addr)
            try:
                result = self._exchange(command, addr, length, payload, deadline)
            except socket.timeout:
                self.drop()  # a late reply would put the stream out of step
                self.episode.failure(f"no reply to a {operation} at {addr:#010x} within {self.policy.io_timeout:g} s")
                self.episode.request_failed()
                raise BoardTimeoutError(self.board, operation,
                                        f"no reply within the {self.policy.io_timeout:g} s I/O deadline",
                                        address=addr) from None
            except (OSError, _LinkFault) as exc:
                self.drop()
                self.episode.failure(f"{operation} at {addr:#010x}: {_describe(exc)}")
                if time.monotonic() >= deadline:
                    self.episode.request_failed()
                    raise BoardConnectionError(self.board, operation,
                                               f"{_describe(exc)}; the {self.policy.io_timeout:g} s I/O deadline "
                                               "has passed", address=addr) from exc
                continue  # reconnect within the deadline and send it again
            if self.episode.active:
                self.episode.recovered()
            return result

    def _exchange(self, command: int, addr: int, length: int, payload: np.ndarray | None,
                  deadline: float) -> Any:
        sock = self.socket
        assert sock is not None
        if time.monotonic() >= deadline:
            raise socket.timeout()
        sent = self._sent
        _HEADER.pack_into(sent, 0, command, 0, length, addr)
        try:
            sock.sendall(sent if payload is None else bytes(sent) + payload.tobytes())
        except (BlockingIOError, socket.timeout) as exc:  # send buffer full for a whole tick: out of step
            raise _LinkFault("the board does not take the request") from exc
        if payload is None:
            reply = bytearray(HEADER_SIZE + 4 * length)
            self._receive(sock, memoryview(reply), deadline)
            if reply[:HEADER_SIZE] != sent:
                raise _LinkFault(f"the reply header {bytes(reply[:HEADER_SIZE]).hex()} does not echo the "
                                 f"request {bytes(sent).hex()} (stream out of sync)")
            return np.frombuffer(reply, dtype="<u4", offset=HEADER_SIZE)
        self._receive(sock, self._echo_view, deadline)
        if self._echo != sent:
            raise _LinkFault(f"the reply header {bytes(self._echo).hex()} does not echo the "
                             f"request {bytes(sent).hex()} (stream out of sync)")
        return True

    @staticmethod
    def _receive(sock: socket.socket, view: memoryview, deadline: float) -> None:
        """Fill ``view``; the socket wakes up every tick (see :func:`_set_tick`) to check ``deadline``."""
        got, size = 0, len(view)
        while got < size:
            try:
                n = sock.recv_into(view[got:])
            except (BlockingIOError, socket.timeout):  # a tick without data
                if time.monotonic() >= deadline:
                    raise socket.timeout() from None
                continue
            if n == 0:
                raise _LinkFault("the board closed the connection")
            got += n

    # -- connecting ----------------------------------------------------------------------------
    def reconnect(self, operation: str, deadline: float, *, address: int | None = None) -> None:
        """Connect within ``deadline``: the first attempt at once, the next ones spaced by the backoff.

        Each request makes its own attempts, so a board that is back is found
        by the next call; a request's attempts are bounded by its deadline
        (about six in two seconds), and requests are serialised by the board
        lock, so an outage never turns into a storm of reconnects.
        """
        episode = self.episode
        if self.closing and episode.active:
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
            connected = False
            try:
                self._open(deadline)
                connected = True
                self._check_fpga(deadline)
                return
            except (OSError, _LinkFault) as exc:
                self.drop()
                if connected and isinstance(exc, socket.timeout):
                    last_error = (f"connected to {self.hostname} port {self.port}, but the board did not answer "
                                  "(a monitor server serves one client at a time: is another program "
                                  "connected to this board?)")
                else:
                    last_error = f"cannot connect to {self.hostname} port {self.port}: {_describe(exc)}"
                # no answer in time is a timeout; refused, reset or garbled is not
                error_cls = BoardTimeoutError if isinstance(exc, socket.timeout) else BoardConnectionError
                episode.failure(last_error)
                if isinstance(exc, ConnectionRefusedError):
                    self._restart_server_once()
            attempt += 1
            next_at = time.monotonic() + self.policy.backoff(attempt)

    def _open(self, deadline: float) -> None:
        timeout = max(0.001, deadline - time.monotonic())
        sock = socket.create_connection((self.hostname, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        _set_tick(sock, min(TICK_S, self.policy.io_timeout))
        self.socket = sock

    def _restart_server_once(self) -> None:
        """Nobody listens: let PyRPL restart its monitor server, once per outage (SSH boards)."""
        episode = self.episode
        if self.restartserver is None or episode.server_restarted:
            return
        episode.server_restarted = True
        try:
            port = self.restartserver()
        except Exception as exc:  # SSH trouble: keep trying the port we have
            episode.log(logging.WARNING, "restarting the monitor server of %s failed: %s", self.board, exc)
            return
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 and port != self.port:
            episode.log(logging.WARNING, "monitor server of %s restarted on port %d", self.board, port)
            self.port = port

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

    def drop(self) -> None:
        """Close the socket (the stream cannot be trusted); the next request reconnects."""
        sock, self.socket = self.socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass



#: longest a blocked send or receive waits before the deadline is looked at again
TICK_S = 0.1
_TIMEVAL = struct.Struct("@ll")


def _set_tick(sock: socket.socket, seconds: float) -> None:
    """Let the kernel bound each blocking call to ``seconds``.

    A blocking socket with ``SO_RCVTIMEO``/``SO_SNDTIMEO`` costs one system
    call per receive; a Python-level timeout adds a ``poll()`` before each,
    and changing it per request one more. Deadlines are checked between
    ticks. Where the options are not available, a Python timeout of one tick
    does the same job a little slower.
    """
    try:
        whole = int(seconds)
        value = _TIMEVAL.pack(whole, int((seconds - whole) * 1e6))
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except (OSError, AttributeError, struct.error):
        sock.settimeout(seconds)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _LinkFault):
        return str(exc)
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text or type(exc).__name__
