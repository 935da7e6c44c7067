"""A client's LECO link to one board server: concurrent requests, deadlines, liveness, reconnects.

The link owns one ZeroMQ DEALER socket (a LECO component signed in to the
coordinator under this client's name) and any number of requests in flight
on it, from any threads: each request waits for the reply with its own
conversation id. ZeroMQ sockets are not thread-safe, so the socket has one
owner at a time (leader/follower): a waiting thread that finds the socket
free reads it for one poll slice and hands every reply to its requester;
the others wait on a condition. A thread that wants to send while the
socket is being read queues its frames and wakes the reader through an
inproc pair, so a send never waits for a poll slice. One thread alone pays
nothing for this: it sends, then reads its own reply.

The waiting must never hang on a server that died. Once a call has run for a
while the link asks the server for a ``pong`` (answered by its listener even
while a worker runs a long acquisition); any message from the server counts
as a sign of life. A server silent for the silence limit (the client's I/O
timeout plus the server's board deadline, during which its listener may
legitimately be busy with one board access) is declared gone:
:class:`~rpl_noqt.errors.BoardConnectionError` for every request in flight,
the socket is dropped (so nothing queued meanwhile reaches a server that
comes back) and the next request reconnects: sign in, fetch the registry
again, and refuse a server whose registry changed.

Signing in and out is done here too (plain LECO ``sign_in``/``sign_out``
requests to the coordinator through the same machinery), rather than with
pyleco's ``Communicator``, whose own reads would steal other threads' replies.
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
from pyleco.json_utils.errors import DUPLICATE_NAME, NOT_SIGNED_IN, RECEIVER_UNKNOWN, JSONRPCError
from pyleco.json_utils.rpc_generator import RPCGenerator

from ..errors import BoardConnectionError
from .wire import LecoAddress

__all__ = ("LecoLink",)

logger = logging.getLogger(__name__)

_SLICE_S = 0.05  # poll granularity while waiting
_PROBE_AFTER_S = 0.5  # a call this old gets liveness probes (sooner with a short silence limit)
_PROBE_EVERY_S = 0.5
_COORDINATOR = b"COORDINATOR"


class _Gone(Exception):
    """The server (or its coordinator) is not there: becomes BoardConnectionError."""

    def __init__(self, reason: str, generation: int = -1) -> None:
        super().__init__(reason)
        self.generation = generation


class _Slot:
    """Where the reader puts the reply to one request."""

    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: Message | None = None


class LecoLink:
    """Requests to the LECO actor at ``address``, from a component called ``client_name``."""

    def __init__(self, address: LecoAddress, client_name: str, *, connect_timeout: float, io_timeout: float,
                 on_connect: Callable[[dict[str, Any], bool], None],
                 liveness: Callable[[], str | None] | None = None) -> None:
        self.address = address
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        #: seconds the server may stay silent (no reply, no pong)
        self.silence_limit = io_timeout
        #: longest a short request may take: the silence limit, plus the server's board deadline once known
        self.short_deadline = io_timeout
        #: who answers liveness probes: the actor, or its ``NAME-alive`` companion (:mod:`.alive`)
        self.probe_target = address.name
        self._on_connect = on_connect
        #: says why the server is certainly gone (its process exited), or None; asked every poll slice
        self._liveness = liveness
        self._server_names = {address.name.rsplit(".", 1)[-1].encode()}
        self._conn_lock = threading.RLock()  # connecting and dropping
        self._sign_lock = threading.Lock()
        self._cond = threading.Condition()  # everything below, and the right to use the socket
        self._context = zmq.Context()
        self._sock: zmq.Socket | None = None
        self._wake_push: zmq.Socket | None = None
        self._wake_pull: zmq.Socket | None = None
        self._pending: dict[bytes, _Slot] = {}
        self._outbox: list[list[bytes]] = []
        self._owned = False  # a thread is sending on or reading the socket
        self._reading = False
        self._generation = 0
        self._drop_reason = "not connected"
        self._namespace: str | None = None
        self._sign_epoch = 0
        self._last_heard = 0.0
        self._probe_cid: bytes | None = None
        self._probe_sent = 0.0
        self._probe_problem: str | None = None
        self._generator = RPCGenerator()
        self._connected_once = False
        self._closed = False

    @property
    def board(self) -> str:
        return self.address.url

    @property
    def full_name(self) -> str:
        """This client's LECO name as the server sees it (``namespace.name``), or the bare name if not signed in."""
        namespace = self._namespace
        return f"{namespace}.{self.client_name}" if namespace else self.client_name

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def context(self) -> zmq.Context:
        """The link's ZeroMQ context (the session's subscriber uses it too; destroyed at close)."""
        return self._context

    # -- requests ------------------------------------------------------------------------
    def request(self, method: str, params: dict[str, Any] | None = None, frames: Sequence[bytes] = (), *,
                deadline_s: float | None = None) -> tuple[Any, list[bytes]]:
        """Send one JSON-RPC request, return (result, binary frames). Any thread, concurrently.

        ``deadline_s``: longest the call may take in all (None: as long as the
        server keeps answering pongs). The silence limit applies either way.
        A JSON-RPC error reply raises pyleco's JSONRPCError; a missing server
        raises BoardConnectionError.
        """
        if self._closed:
            raise RuntimeError(f"remote session {self.board} is closed; call rpl_noqt.connect() again")
        self.ensure_connected()
        try:
            return self._ask(self.address.name, method, params, list(frames), deadline_s)
        except _Gone as exc:
            self._drop(str(exc), exc.generation)
            raise BoardConnectionError(self.board, method, str(exc)) from None

    def _ask(self, receiver: str | bytes, method: str, params: dict[str, Any] | None, frames: list[bytes],
             deadline_s: float | None) -> tuple[Any, list[bytes]]:
        text = self._generator.build_request_str(method=method, **(params or {}))
        for attempt in range(2):
            epoch = self._sign_epoch
            reply = self._exchange(receiver, text, frames, deadline_s)
            if attempt == 0 and receiver != _COORDINATOR and self._is_not_signed_in(reply):
                self._sign_in_again(epoch)  # the coordinator forgot us (it restarted, or we were idle)
                continue
            break
        error = self._routing_error(reply)
        if error is not None:
            raise _Gone(error, self._generation)
        result = self._generator.get_result_from_response(reply.payload[0])
        return result, reply.payload[1:]

    def _exchange(self, receiver: str | bytes, text: str, frames: list[bytes], deadline_s: float | None) -> Message:
        cid = generate_conversation_id()
        slot = _Slot()
        start = time.monotonic()
        with self._cond:
            if self._sock is None:
                raise _Gone(self._drop_reason, self._generation)
            generation = self._generation
            self._pending[cid] = slot
            try:
                self._post(self._message(receiver, text, cid, frames))
                return self._await(slot, start, deadline_s, generation)
            finally:
                self._pending.pop(cid, None)

    def _message(self, receiver: str | bytes, text: str, cid: bytes, frames: list[bytes]) -> list[bytes]:
        return Message(receiver, sender=self.full_name, conversation_id=cid, message_type=MessageTypes.JSON,
                       data=text, additional_payload=frames).to_frames()

    def _post(self, frames: list[bytes]) -> None:
        """Send (the caller holds ``_cond``): at once if the socket is free, else through the reader."""
        assert self._sock is not None
        if not self._owned:
            self._sock.send_multipart(frames, copy=False)
            return
        self._outbox.append(frames)
        if self._reading and self._wake_push is not None:
            self._wake_push.send(b"", zmq.NOBLOCK)

    def _await(self, slot: _Slot, start: float, deadline_s: float | None, generation: int) -> Message:
        """Wait (holding ``_cond`` between turns) until the reader filled ``slot``; read ourselves if nobody does."""
        while True:
            if slot.reply is not None:
                return slot.reply
            if self._generation != generation:
                raise _Gone(self._drop_reason, generation)
            if self._liveness is not None:
                gone = self._liveness()
                if gone is not None:
                    raise _Gone(gone, generation)
            if self._probe_problem is not None:
                raise _Gone(self._probe_problem, generation)
            now = time.monotonic()
            if deadline_s is not None and now - start > deadline_s:
                raise _Gone(f"no reply within {deadline_s:.3g} s", generation)
            heard = max(start, self._last_heard)
            if now - heard > self.silence_limit:
                raise _Gone(f"the server stopped answering (no reply and no pong for {self.silence_limit:.3g} s): "
                            "it stopped, crashed or became unreachable", generation)
            every = min(_PROBE_EVERY_S, self.silence_limit / 4)
            if now - start > every and now - heard > every and now - self._probe_sent > every:
                self._probe_cid = generate_conversation_id()
                self._probe_sent = now
                self._post(self._message(self.probe_target, self._generator.build_request_str(method="pong"),
                                         self._probe_cid, []))
            if self._owned:
                self._cond.wait(_SLICE_S)
                continue
            self._read_one_slice()

    def _read_one_slice(self) -> None:
        """Own the socket for one poll slice (``_cond`` released meanwhile), then hand out what came."""
        sock, wake = self._sock, self._wake_pull
        assert sock is not None and wake is not None
        self._owned = self._reading = True
        messages: list[Message] = []
        self._cond.release()
        try:
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            ready = dict(poller.poll(int(_SLICE_S * 1000)))
            if wake in ready:
                while True:
                    try:
                        wake.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
            if sock in ready:
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        messages.append(Message.from_frames(*frames))
                    except (TypeError, ValueError):
                        continue  # not a LECO message: ignore
        finally:
            self._cond.acquire()
            self._reading = False
            try:
                self._dispatch(messages)
                self._flush_outbox()
            finally:
                self._owned = False
                self._cond.notify_all()

    def _flush_outbox(self) -> None:
        while self._outbox and self._sock is not None:
            self._sock.send_multipart(self._outbox.pop(0), copy=False)

    def _dispatch(self, messages: list[Message]) -> None:
        now = time.monotonic()
        for message in messages:
            if message.sender_elements.name in self._server_names:
                self._last_heard = now
            cid = message.conversation_id
            slot = self._pending.get(cid)
            if slot is not None:
                slot.reply = message
            elif cid == self._probe_cid:
                self._probe_cid = None
                problem = self._routing_error(message)
                if problem is not None:
                    self._probe_problem = problem
                elif self._is_not_signed_in(message):
                    # our request may be lost too: re-sign-in happens on the next request; the
                    # deadline or the silence limit ends this one
                    self._probe_problem = "the coordinator forgot this client (it restarted)"
            # anything else: a late reply to an abandoned call, a coordinator's heartbeat check: dropped

    def set_probe_target(self, name: str | None) -> None:
        """Probe ``name`` for liveness (None: the actor itself)."""
        target = name or self.address.name
        self.probe_target = target
        self._server_names.add(target.rsplit(".", 1)[-1].encode())

    def _routing_error(self, message: Message) -> str | None:
        """The coordinator's 'no such receiver' for our request, as a reason (else None)."""
        if message.sender_elements.name != _COORDINATOR or not message.payload:
            return None
        if b"error" not in message.payload[0]:
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
        return (message.sender_elements.name == _COORDINATOR and bool(message.payload)
                and str(NOT_SIGNED_IN.code).encode() in message.payload[0] and b"error" in message.payload[0])

    # -- connection ----------------------------------------------------------------------
    def ensure_connected(self) -> None:
        """Sign in and fetch the server's description if not connected (raises BoardConnectionError)."""
        if self._sock is not None:
            return
        with self._conn_lock:
            if self._sock is not None:
                return
            if self._closed:
                raise RuntimeError(f"remote session {self.board} is closed; call rpl_noqt.connect() again")
            gone = self._liveness() if self._liveness is not None else None
            if gone is not None:
                raise BoardConnectionError(self.board, "connect", gone)
            self._open_socket()
            try:
                self._sign_in()
                description, _ = self._ask(self.address.name, "describe", None, [], self.connect_timeout)
            except _Gone as exc:
                self._drop(str(exc))
                raise BoardConnectionError(self.board, "connect", str(exc)) from None
            except BaseException:
                self._drop("connect failed")
                raise
            reconnect = self._connected_once
            try:
                self._on_connect(description, reconnect)  # checks the registry: may refuse the server
            except BaseException:
                self._drop("the server was refused")
                raise
            self._connected_once = True
            if reconnect:
                logger.warning("remote session %s: reconnected to the board server", self.board)

    def _open_socket(self) -> None:
        sock: zmq.Socket = self._context.socket(zmq.DEALER)
        sock.linger = 0
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        if ":" in self.address.host:
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(f"tcp://{host}:{self.address.port}")
        pull: zmq.Socket = self._context.socket(zmq.PULL)
        push: zmq.Socket = self._context.socket(zmq.PUSH)
        endpoint = f"inproc://rpl-noqt-link-wake-{id(self)}-{self._generation}"
        pull.bind(endpoint)
        push.connect(endpoint)
        push.linger = pull.linger = 0
        with self._cond:
            self._sock, self._wake_pull, self._wake_push = sock, pull, push
            self._namespace = None
            self._probe_problem = None
            self._probe_cid = None
            self._last_heard = time.monotonic()

    def _sign_in(self) -> None:
        """Sign in to the coordinator (the namespace comes back with the answer)."""
        try:
            reply = self._exchange(_COORDINATOR, self._generator.build_request_str(method="sign_in"), [],
                                   self.connect_timeout)
        except _Gone as exc:
            if str(exc).startswith("no reply within"):
                raise _Gone(f"no LECO coordinator answered at {self.address.host}:{self.address.port} within "
                            f"{self.connect_timeout:g} s", exc.generation) from None
            raise
        try:
            self._generator.get_result_from_response(reply.payload[0])
        except JSONRPCError as exc:
            taken = exc.rpc_error.code == DUPLICATE_NAME.code
            raise _Gone(f"the client name {self.client_name!r} is already signed in at the coordinator"
                        if taken else f"the coordinator refused the sign-in: {exc}", self._generation) from None
        with self._cond:
            self._namespace = reply.sender_elements.namespace.decode() or None
            self._sign_epoch += 1
            self._probe_problem = None

    def _sign_in_again(self, epoch: int) -> None:
        with self._sign_lock:
            if self._sign_epoch != epoch:  # another thread signed in again since our request went out
                return
            with self._cond:
                self._namespace = None
            self._sign_in()
        # the coordinator forgot us: it (and so, often, the server embedding it) restarted
        self.refresh_description()

    def refresh_description(self) -> None:
        """Ask the server for its description again, as after a reconnect (a restarted server may
        publish elsewhere; one with another registry is refused)."""
        try:
            description, _ = self._ask(self.address.name, "describe", None, [], self.connect_timeout)
        except _Gone as exc:
            self._drop(str(exc), exc.generation)
            raise BoardConnectionError(self.board, "describe", str(exc)) from None
        try:
            self._on_connect(description, True)
        except BaseException:
            self._drop("the server was refused")
            raise

    def _drop(self, reason: str, generation: int | None = None) -> None:
        """Forget the socket: requests in flight fail, queued ones die with it, the next request reconnects.

        ``generation``: drop only if the link is still the one that failed
        (another thread may have reconnected meanwhile).
        """
        with self._conn_lock:
            with self._cond:
                if self._sock is None or (generation is not None and generation != self._generation):
                    return
                self._generation += 1
                self._drop_reason = reason
                self._cond.notify_all()
                while self._owned:  # a reader finishes its slice first
                    self._cond.wait(_SLICE_S)
                sock, pull, push = self._sock, self._wake_pull, self._wake_push
                self._sock = self._wake_pull = self._wake_push = None
                self._outbox.clear()
                signed_in = self._namespace is not None
                self._namespace = None
                self._cond.notify_all()
            try:
                if signed_in and sock is not None and (self._liveness is None or self._liveness() is None):
                    # frees our name at a coordinator that is still there (fire and forget)
                    sock.send_multipart(self._message(_COORDINATOR, self._generator.build_request_str(
                        method="sign_out"), generate_conversation_id(), []), zmq.NOBLOCK)
            except zmq.ZMQError:
                logger.debug("sign-out while dropping the link failed", exc_info=True)
            finally:
                for s in (sock, pull, push):
                    if s is not None:
                        s.close(linger=0)

    def close(self) -> None:
        """Sign out (briefly waiting for the coordinator's answer) and close the socket. Idempotent."""
        with self._conn_lock:
            if self._closed:
                return
            self._closed = True
            if self._sock is not None and self._namespace is not None:
                try:
                    self._exchange(_COORDINATOR, self._generator.build_request_str(method="sign_out"), [], 0.2)
                    with self._cond:
                        self._namespace = None
                except _Gone:
                    pass
            self._drop("the session was closed")
            self._context.destroy(linger=0)
