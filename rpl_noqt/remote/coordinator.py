"""Find the LECO Coordinator a board server signs in to, or run one in-process.

One machine should need one command: if nothing listens at the coordinator
address, ``rpl-noqt serve`` binds pyleco's Coordinator there itself (on the
loopback interface unless told otherwise). If the port is taken, whatever
holds it must answer a LECO sign-in, or we say that it is not a coordinator.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from typing import Any

import zmq
from pyleco.coordinators.coordinator import Coordinator
from pyleco.core.message import Message, MessageTypes
from pyleco.json_utils.rpc_generator import RPCGenerator
from pyleco.utils.coordinator_utils import ZmqMultiSocket

__all__ = ("EmbeddedCoordinator", "coordinator_answers", "is_local_address")

logger = logging.getLogger(__name__)


def is_local_address(host: str) -> bool:
    """Whether this machine could bind ``host`` (loopback, a wildcard, or one of its addresses)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        address = info[4][0]
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            return True
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 0))
                return True
            except OSError:
                continue
    return False


def coordinator_answers(host: str, port: int, timeout: float, context: zmq.Context) -> bool:
    """Whether a LECO Coordinator at host:port answers a ``pong`` within ``timeout`` seconds.

    A bare request to ``COORDINATOR`` from a throw-away identity: it needs no
    sign-in and leaves nothing behind in the coordinator's directory.
    """
    sock: zmq.Socket = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://{_zmq_host(host)}:{port}")
        request = Message(b"COORDINATOR", sender=f"rpl-noqt-probe-{os.getpid()}".encode(),
                          message_type=MessageTypes.JSON,
                          data=RPCGenerator().build_request_str(method="pong"))
        sock.send_multipart(request.to_frames())
        if not sock.poll(int(timeout * 1000)):
            return False
        reply = Message.from_frames(*sock.recv_multipart())
        return reply.conversation_id == request.conversation_id
    except (zmq.ZMQError, TypeError, ValueError):
        return False
    finally:
        sock.close(linger=0)


def _zmq_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Frames(list):
    """A message's payload frames, printed as their sizes.

    pyleco 0.6's Coordinator formats every routed message's payload into a
    debug f-string whether or not debug logging is on: the repr of a 256 kB
    curve frame is a megabyte of text, about a millisecond per curve and hop.
    The frames themselves are untouched (a list, sent as they came).
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{len(self)} frame(s), {sum(len(f) for f in self)} bytes>"

    __str__ = __repr__


class _BoundSocket(ZmqMultiSocket):
    """pyleco's coordinator socket, bound to one interface instead of all of them, and thread-safe.

    pyleco 0.6's Coordinator sends from two threads on this one ROUTER
    socket: its routing loop, and the timer thread that expires silent
    components (``remove_expired_addresses`` sends them a message). ZeroMQ
    sockets are not thread-safe: under load that ended in a libzmq
    assertion and an abort of the whole process (seen in CI). Every socket
    operation here takes one lock; the routing loop polls in short slices so
    the timer never waits long.
    """

    _POLL_SLICE_MS = 10

    def __init__(self, context: zmq.Context, host: str) -> None:
        super().__init__(context=context)
        self._io = threading.Lock()
        self._host = host
        if ":" in host:
            self._sock.setsockopt(zmq.IPV6, 1)

    def bind(self, host: str = "", port: int | str = 0) -> None:
        self._sock.bind(f"tcp://{_zmq_host(self._host)}:{port}")

    def message_received(self, timeout: int = 0) -> bool:
        deadline = time.monotonic() + timeout / 1000
        while True:
            with self._io:
                if self._sock.poll(timeout=min(timeout, self._POLL_SLICE_MS)):
                    return True
            if time.monotonic() >= deadline:
                return False

    def read_message(self) -> tuple[bytes, Message]:
        # The envelope and the first (JSON) payload frame as bytes, as pyleco reads them; binary frames
        # after it (a 256 kB curve) stay zmq frames and go out again without being copied.
        with self._io:
            identity, *frames = self._sock.recv_multipart(copy=False)
        head = [f.bytes for f in frames[:5]]
        message = Message.from_frames(*head)
        message.payload = _Frames([*message.payload, *frames[5:]])
        return identity.bytes, message

    def send_message(self, identity: bytes, message: Message) -> None:
        frames = (identity, *message.to_frames())
        with self._io:
            self._sock.send_multipart(frames, copy=False)


class EmbeddedCoordinator:
    """pyleco's Coordinator, bound to ``bind``:``port``, routing in a daemon thread until :meth:`close`."""

    def __init__(self, bind: str, port: int, context: zmq.Context, namespace: str | None = None) -> None:
        self.bind = bind
        self.port = port
        self._stop = threading.Event()
        kwargs: dict[str, Any] = {"namespace": namespace} if namespace else {}
        self._coordinator = Coordinator(host=bind, port=port, context=context,
                                        multi_socket=_BoundSocket(context, bind), **kwargs)
        self.namespace = self._coordinator.namespace.decode()
        self._thread = threading.Thread(target=self._route, name=f"rpl-noqt-coordinator-{port}", daemon=True)
        self._thread.start()
        logger.info("embedded LECO coordinator (node %r) routing on %s:%d", self.namespace, bind, port)

    @classmethod
    def try_start(cls, bind: str, port: int, context: zmq.Context) -> EmbeddedCoordinator | None:
        """Start one, or None if the address is already in use (someone else may be a coordinator)."""
        try:
            return cls(bind, port, context)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                return None
            raise

    def _route(self) -> None:
        try:
            self._coordinator.routing(stop_event=self._stop)
        except Exception:  # the socket closed under it at shutdown, or a real bug: say so either way
            if not self._stop.is_set():
                logger.exception("embedded LECO coordinator stopped")

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._coordinator.close()
