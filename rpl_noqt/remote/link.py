"""A client's LECO link to one board server: requests with deadlines, liveness, reconnects.

pyleco's ``Communicator`` signs in and out; the waiting is ours, because it
must never hang on a server that died. While a reply is outstanding the
link polls in short slices and, once a call has run for a while, asks the
server for a ``pong`` (answered by its listener even while a worker runs
a long acquisition). A server that stays silent for the silence limit
(the client's I/O timeout plus the server's board deadline, during which
a listener may legitimately be busy with one board access) is declared
gone: :class:`~rpl_noqt.errors.BoardConnectionError`, the socket is
dropped (so nothing queued meanwhile reaches a server that comes back)
and the next request reconnects: sign in, fetch the registry again, and
refuse a server whose registry changed.

One request at a time per link: a thread waiting for ``scope.single()``
holds it, so other threads of the same client wait (open a second
session for parallel acquisitions). Different processes never wait for
each other here: the server serves them concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from pyleco.core.message import Message, MessageTypes
from pyleco.core.serialization import generate_conversation_id
from pyleco.json_utils.errors import NOT_SIGNED_IN, RECEIVER_UNKNOWN, JSONRPCError
from pyleco.json_utils.rpc_generator import RPCGenerator
from pyleco.utils.communicator import Communicator

from ..errors import BoardConnectionError
from .wire import LecoAddress

__all__ = ("LecoLink",)

logger = logging.getLogger(__name__)

_SLICE_S = 0.05  # poll granularity while waiting
_PROBE_AFTER_S = 0.5  # a call this old gets liveness probes
_PROBE_EVERY_S = 0.5


class _Gone(Exception):
    """The server (or its coordinator) is not there: becomes BoardConnectionError."""


class LecoLink:
    """Requests to the LECO actor at ``address``, from a component called ``client_name``."""

    def __init__(self, address: LecoAddress, client_name: str, *, connect_timeout: float, io_timeout: float,
                 on_connect: Callable[[dict[str, Any], bool], None],
                 liveness: Callable[[], str | None] | None = None) -> None:
        self.address = address
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        #: seconds the server may stay silent (no reply, no pong); raised once we know its board deadline
        self.silence_limit = io_timeout
        self._on_connect = on_connect
        #: says why the server is certainly gone (its process exited), or None; asked every poll slice
        self._liveness = liveness
        self._lock = threading.RLock()
        self._context = zmq.Context()
        self._comm: Communicator | None = None
        self._generator = RPCGenerator()
        self._connected_once = False
        self._closed = False

    @property
    def board(self) -> str:
        return self.address.url

    @property
    def full_name(self) -> str:
        """This client's LECO name as the server sees it (``namespace.name``), or the bare name if not signed in."""
        comm = self._comm
        return comm.full_name if comm is not None else self.client_name

    @property
    def connected(self) -> bool:
        return self._comm is not None

    # -- requests ------------------------------------------------------------------------
    def request(self, method: str, params: dict[str, Any] | None = None, frames: Sequence[bytes] = (), *,
                deadline_s: float | None = None) -> tuple[Any, list[bytes]]:
        """Send one JSON-RPC request, return (result, binary frames).

        ``deadline_s``: longest the call may take in all (None: as long as the
        server keeps answering pongs). The silence limit applies either way.
        A JSON-RPC error reply raises pyleco's JSONRPCError; a missing server
        raises BoardConnectionError.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"remote session {self.board} is closed; call rpl_noqt.connect() again")
            self.ensure_connected()
            try:
                return self._ask(method, params, list(frames), deadline_s)
            except _Gone as exc:
                self._drop()
                raise BoardConnectionError(self.board, method, str(exc)) from None

    def _ask(self, method: str, params: dict[str, Any] | None, frames: list[bytes],
             deadline_s: float | None) -> tuple[Any, list[bytes]]:
        text = self._generator.build_request_str(method=method, **(params or {}))
        for attempt in range(2):
            cid = generate_conversation_id()
            self._send(self.address.name, text, cid, frames)
            reply = self._await(cid, deadline_s)
            if self._is_not_signed_in(reply) and attempt == 0:
                self._sign_in()  # the coordinator forgot us (it restarted, or we were idle): resend once
                continue
            break
        error = self._routing_error(reply)
        if error is not None:
            raise _Gone(error)
        result = self._generator.get_result_from_response(reply.payload[0])
        return result, reply.payload[1:]

    def _send(self, receiver: str, text: str, cid: bytes, frames: list[bytes]) -> None:
        assert self._comm is not None
        message = Message(receiver, sender=self._comm.full_name, conversation_id=cid,
                          message_type=MessageTypes.JSON, data=text, additional_payload=frames)
        self._comm.socket.send_multipart(message.to_frames())

    def _await(self, cid: bytes, deadline_s: float | None) -> Message:
        assert self._comm is not None
        sock = self._comm.socket
        start = last_heard = time.monotonic()
        probe: bytes | None = None
        probe_sent = 0.0
        while True:
            if self._liveness is not None:
                gone = self._liveness()
                if gone is not None:
                    raise _Gone(gone)
            now = time.monotonic()
            if deadline_s is not None and now - start > deadline_s:
                raise _Gone(f"no reply within {deadline_s:.3g} s")
            if now - last_heard > self.silence_limit:
                raise _Gone(f"the server stopped answering (no reply and no pong for {self.silence_limit:.3g} s): "
                            "it stopped, crashed or became unreachable")
            if now - start > _PROBE_AFTER_S and probe is None and now - probe_sent > _PROBE_EVERY_S:
                probe = generate_conversation_id()
                probe_sent = now
                self._send(self.address.name, self._generator.build_request_str(method="pong"), probe, [])
            if not sock.poll(int(_SLICE_S * 1000)):
                continue
            while True:
                try:
                    message = Message.from_frames(*sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                except (TypeError, ValueError):
                    continue  # not a LECO message: ignore
                if message.conversation_id == cid:
                    return message
                if probe is not None and message.conversation_id == probe:
                    error = self._routing_error(message)
                    if error is not None:
                        raise _Gone(error)
                    if self._is_not_signed_in(message):
                        self._sign_in()  # our request may be lost too: the deadline or silence limit ends it
                    last_heard = time.monotonic()
                    probe = None
                # anything else: a late reply to an abandoned call, a coordinator's heartbeat check: dropped

    def _routing_error(self, message: Message) -> str | None:
        """The coordinator's 'no such receiver' for our request, as a reason (else None)."""
        if message.sender_elements.name != b"COORDINATOR" or not message.payload:
            return None
        try:
            self._generator.get_result_from_response(message.payload[0])
        except JSONRPCError as exc:
            if exc.rpc_error.code == RECEIVER_UNKNOWN.code:
                return (f"no board server named {self.address.name!r} is signed in at the coordinator "
                        f"{self.address.host}:{self.address.port}")
        return None

    @staticmethod
    def _is_not_signed_in(message: Message) -> bool:
        return (message.sender_elements.name == b"COORDINATOR" and bool(message.payload)
                and str(NOT_SIGNED_IN.code).encode() in message.payload[0] and b"error" in message.payload[0])

    # -- connection ----------------------------------------------------------------------
    def ensure_connected(self) -> None:
        """Sign in and fetch the server's description if not connected (raises BoardConnectionError)."""
        with self._lock:
            if self._comm is not None:
                return
            gone = self._liveness() if self._liveness is not None else None
            if gone is not None:
                raise BoardConnectionError(self.board, "connect", gone)
            comm = Communicator(name=self.client_name, host=self.address.host, port=self.address.port,
                                timeout=self.connect_timeout, auto_open=False)
            comm.open(context=self._context)
            comm.socket.linger = 0
            self._comm = comm
            try:
                self._sign_in()
                description, _ = self._ask("describe", None, [], self.connect_timeout)
            except _Gone as exc:
                self._drop()
                raise BoardConnectionError(self.board, "connect", str(exc)) from None
            except BaseException:
                self._drop()
                raise
            reconnect = self._connected_once
            try:
                self._on_connect(description, reconnect)  # checks the registry: may refuse the server
            except BaseException:
                self._drop()
                raise
            self._connected_once = True
            if reconnect:
                logger.warning("remote session %s: reconnected to the board server", self.board)

    def _sign_in(self) -> None:
        assert self._comm is not None
        try:
            self._comm.sign_in()
        except (ConnectionRefusedError, TimeoutError):
            raise _Gone(f"no LECO coordinator answered at {self.address.host}:{self.address.port} within "
                        f"{self.connect_timeout:g} s") from None

    def _drop(self) -> None:
        """Forget the socket: queued requests die with it, the next request reconnects."""
        comm, self._comm = self._comm, None
        if comm is None:
            return
        try:
            comm.timeout = 0.2
            if comm.namespace is not None and (self._liveness is None or self._liveness() is None):
                comm.sign_out()  # frees our name at a coordinator that is still there
        except Exception:
            logger.debug("sign-out while dropping the link failed", exc_info=True)
        finally:
            comm.socket.close(linger=0)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop()
            self._context.destroy(linger=0)
