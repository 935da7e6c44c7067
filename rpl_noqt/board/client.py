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

The connection itself is a :class:`~rpl_noqt.board.link.Link`, shared by
every client of the same board in the process: a second ``RedPitaya`` or
``Pyrpl`` for a board already open adopts its link and its board lock (no
second socket). Every request holds the board's lock (shared with PyRPL's
modules) for at most its deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import policy as _policy
from .link import FPGA_CYCLES_ADDRESS, Link
from .wire import MAX_WORDS, READ, WRITE

__all__ = ("FPGA_CYCLES_ADDRESS", "LOCK_ATTR", "BoardClient", "BoardClosedError", "starting_client_of")

logger = logging.getLogger(__name__)

#: where a client (and every PyRPL object of its board) keeps the board lock
LOCK_ATTR = "_rpl_noqt_lock"
#: most words one write request carries (the C server's buffer holds 65535 words, header included)
MAX_WRITE_WORDS = MAX_WORDS - 2

_client_numbers = iter(range(1, 1 << 62))
_starting = threading.local()


class BoardClosedError(RuntimeError):
    """The board's session was closed; its modules can no longer be used."""


@contextlib.contextmanager
def starting_client_of(redpitaya: Any) -> Iterator[None]:
    """Mark ``redpitaya`` as the board whose client is being built in this thread.

    The client then shares the board lock with it: a new link adopts the
    ``RedPitaya``'s lock, and a ``RedPitaya`` joining a link already open
    takes the link's lock, before PyRPL builds its modules.
    """
    previous = getattr(_starting, "redpitaya", None)
    _starting.redpitaya = redpitaya
    try:
        yield
    finally:
        _starting.redpitaya = previous


class BoardClient:
    """PyRPL's client of one board: deadlines, validated replies, one error type.

    Constructed by PyRPL as ``MonitorClient(hostname, port, restartserver)``;
    the policy is the one made current by the session
    (:func:`rpl_noqt.board.policy.using`), or the environment's.
    """

    def __init__(self, hostname: str = "192.168.1.0", port: int = 2222,
                 restartserver: Callable[[], int | None] | None = None, *,
                 policy: _policy.LinkPolicy | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port of board {hostname} must be an integer from 1 to 65535, got {port!r}")
        if not isinstance(hostname, str) or not hostname.strip():
            raise ValueError(f"hostname must be a non-empty string, got {hostname!r}")
        self.client_number = next(_client_numbers)
        self._read_counter = 0  # PyRPL's tests and benchmarks read these two
        self._write_counter = 0
        self._closed = False
        self._closing = False
        wanted = policy if policy is not None else _policy.current()
        deadline = time.monotonic() + wanted.connect_timeout
        overall = _policy.connect_deadline()  # rpl_noqt.connect() bounds the whole connect
        if overall is not None:
            deadline = min(deadline, overall)
        redpitaya = getattr(_starting, "redpitaya", None)
        own_lock = None if redpitaya is None else redpitaya.__dict__.get(LOCK_ATTR)
        self.link, shared = Link.open(hostname.strip(), port, wanted, restartserver, deadline, lock=own_lock)
        lock = self.link.board_lock()
        self.__dict__[LOCK_ATTR] = lock
        if redpitaya is not None and redpitaya.__dict__.get(LOCK_ATTR) is not lock:
            redpitaya.__dict__[LOCK_ATTR] = lock  # joins the board's lock before its modules exist
        if shared:
            logger.info("client %d shares the open connection to %s (%d user(s))", self.client_number,
                        self.link.board, self.link.users)
        else:
            logger.debug("client %d connected to %s", self.client_number, self.link.board)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def board(self) -> str:
        return self.link.board

    @property
    def policy(self) -> _policy.LinkPolicy:
        return self.link.policy

    @property
    def socket(self) -> Any:
        return self.link.socket

    @property
    def episode(self) -> Any:
        return self.link.episode

    @property
    def link_up(self) -> bool:
        return not self._closed and self.link.up

    @property
    def state_lost(self) -> bool:
        """The FPGA was reloaded while the link was down (see :meth:`rpl_noqt.Session.restore`)."""
        return self.link.state_lost

    @state_lost.setter
    def state_lost(self, value: bool) -> None:
        self.link.state_lost = bool(value)

    # -- what PyRPL calls ------------------------------------------------------------------------------
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
        for start in range(0, len(data), MAX_WRITE_WORDS):
            chunk = data[start:start + MAX_WRITE_WORDS]
            self._request(WRITE, addr + 4 * start, len(chunk), chunk)
        return True

    def closing(self) -> None:
        """The session is closing: from now on a request finding the link down fails at once."""
        self._closing = True
        if self.link.users <= 1:
            self.link.closing = True

    def close(self) -> None:
        """This client is done; the board's last client closes the socket. Later requests raise."""
        if self._closed:
            return
        self._closed = True
        self.link.release()

    def restart(self) -> None:
        """Drop the connection and connect again (PyRPL's API; bounded by the connect timeout)."""
        with self.link.board_lock():
            self.link.drop()
            self.link.reconnect("reconnect", time.monotonic() + self.policy.connect_timeout)

    def emptybuffer(self) -> None:
        """Upstream re-synchronised by reading the stream dry; a fresh connection is the safe way."""
        with self.link.board_lock():
            self.link.drop()

    def __del__(self) -> None:
        if not self.__dict__.get("_closed", True) and "link" in self.__dict__:
            try:
                self.close()
            except Exception:  # interpreter shutdown
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("up" if self.link.up else "down")
        return f"<BoardClient {self.client_number} {self.board} {state}>"

    # -- internals ---------------------------------------------------------------------------------------
    def _request(self, command: int, addr: int, length: int, payload: np.ndarray | None) -> Any:
        lock = self.link.board_lock()
        lock.acquire()
        try:
            return self.link.request(command, addr, length, payload, self)
        finally:
            lock.release()

    def is_closed(self) -> bool:
        return self._closed or bool(self.__dict__.get("_rpl_noqt_closed"))

    def refusal(self, operation: str, addr: int) -> BoardClosedError:
        return BoardClosedError(f"the session of board {self.board} was closed; {operation} at {addr:#010x} refused")
