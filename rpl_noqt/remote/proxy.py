"""The LECO data protocol's proxy: where a board server publishes and its clients subscribe.

LECO's data protocol is ZeroMQ PUB/SUB through a proxy (an XSUB socket that
publishers connect to, an XPUB socket that subscribers connect to; pyleco's
``proxy_server`` uses ports 11100 and 11099). A board server publishes its
attribute changes, streams and call progress there; clients learn the
proxy's address from the server's description, so the ports need not be
fixed. Which proxy a server uses:

* the coordinator is on this machine at LECO's default port: the LECO
  default proxy ports (so pyleco's own tools see the data), started here if
  free, else the proxy already listening there if it answers a probe, else
  a proxy of our own on free ports;
* any other local coordinator (an isolated child, tests): our own proxy on
  free ports, bound like the coordinator (loopback unless ``--bind``);
* a coordinator on another machine: the proxy at its default ports if one
  answers there, else our own, on ``--bind`` (clients elsewhere reach it
  only if that is a lab-network interface).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass

import zmq

from .coordinator import is_local_address

__all__ = ("DataEndpoint", "EmbeddedProxy", "find_data_endpoint", "proxy_answers")

logger = logging.getLogger(__name__)

#: pyleco's default proxy ports: publishers connect to the first, subscribers to the second
LECO_PROXY_PORTS = (11100, 11099)
_LECO_COORDINATOR_PORT = 12300


def _zmq_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class DataEndpoint:
    """Where to publish (``receiving_port``) and subscribe (``sending_port``); ``host`` None: the coordinator's."""

    receiving_port: int
    sending_port: int
    host: str | None = None

    def publish_address(self, coordinator_host: str) -> str:
        return f"tcp://{_zmq_host(self.host or coordinator_host)}:{self.receiving_port}"

    def subscribe_address(self, coordinator_host: str) -> str:
        return f"tcp://{_zmq_host(self.host or coordinator_host)}:{self.sending_port}"

    def as_dict(self) -> dict[str, object]:
        return {"host": self.host, "receiving_port": self.receiving_port, "sending_port": self.sending_port}


class EmbeddedProxy:
    """An XSUB/XPUB forwarder bound to ``bind`` (port 0: a free port), in a daemon thread until :meth:`close`."""

    def __init__(self, bind: str, context: zmq.Context, ports: tuple[int, int] = (0, 0)) -> None:
        self.bind = bind
        self._xsub: zmq.Socket = context.socket(zmq.XSUB)
        self._xpub: zmq.Socket = context.socket(zmq.XPUB)
        self._control: zmq.Socket = context.socket(zmq.PAIR)
        self._command: zmq.Socket = context.socket(zmq.PAIR)
        sockets = (self._xsub, self._xpub, self._control, self._command)
        try:
            for sock in sockets:
                sock.linger = 0
                if ":" in bind:
                    sock.setsockopt(zmq.IPV6, 1)
            self.receiving_port = self._bind(self._xsub, ports[0])
            self.sending_port = self._bind(self._xpub, ports[1])
            endpoint = f"inproc://rpl-noqt-proxy-control-{id(self)}"
            self._control.bind(endpoint)
            self._command.connect(endpoint)
        except BaseException:
            for sock in sockets:
                sock.close(linger=0)
            raise
        self._thread = threading.Thread(target=self._forward, name=f"rpl-noqt-proxy-{self.receiving_port}",
                                        daemon=True)
        self._thread.start()
        logger.info("LECO data proxy on %s: publishers %d, subscribers %d", bind, self.receiving_port,
                    self.sending_port)

    def _bind(self, sock: zmq.Socket, port: int) -> int:
        if port:
            sock.bind(f"tcp://{_zmq_host(self.bind)}:{port}")
            return port
        return sock.bind_to_random_port(f"tcp://{_zmq_host(self.bind)}")

    @classmethod
    def try_start(cls, bind: str, context: zmq.Context, ports: tuple[int, int]) -> EmbeddedProxy | None:
        """Start one on ``ports``, or None if one of them is in use."""
        try:
            return cls(bind, context, ports)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                return None
            raise

    @property
    def endpoint(self) -> DataEndpoint:
        return DataEndpoint(self.receiving_port, self.sending_port)

    def _forward(self) -> None:
        try:
            zmq.proxy_steerable(self._xpub, self._xsub, None, self._control)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError:
            logger.debug("data proxy stopped", exc_info=True)
        finally:
            for sock in (self._xsub, self._xpub, self._control):
                sock.close(linger=0)

    def close(self, timeout: float = 1.0) -> None:
        try:
            self._command.send(b"TERMINATE")
        except zmq.ZMQError:
            pass
        self._thread.join(timeout)
        self._command.close(linger=0)


def proxy_answers(publish: str, subscribe: str, context: zmq.Context, timeout: float = 1.0) -> bool:
    """Whether a proxy forwards a probe published at ``publish`` to a subscriber at ``subscribe``."""
    topic = f"rpl-noqt-probe-{os.getpid()}-{id(context)}".encode()
    sub: zmq.Socket = context.socket(zmq.SUB)
    pub: zmq.Socket = context.socket(zmq.PUB)
    try:
        sub.linger = pub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(subscribe)
        pub.connect(publish)
        rounds = max(1, int(timeout / 0.02))
        for _ in range(rounds):  # subscriptions take a moment to reach the publisher: repeat
            pub.send_multipart([topic, b"probe"])
            if sub.poll(20):
                return True
        return False
    except zmq.ZMQError:
        return False
    finally:
        sub.close(linger=0)
        pub.close(linger=0)


def find_data_endpoint(coordinator_host: str, coordinator_port: int, bind: str | None, context: zmq.Context,
                       probe_timeout: float = 1.0) -> tuple[DataEndpoint | None, EmbeddedProxy | None]:
    """The proxy this server publishes to (module docstring): (endpoint or None, proxy we started or None)."""
    local = is_local_address(coordinator_host)
    if local and coordinator_port == _LECO_COORDINATOR_PORT:
        host = bind or coordinator_host
        proxy = EmbeddedProxy.try_start(host, context, LECO_PROXY_PORTS)
        if proxy is not None:
            return proxy.endpoint, proxy
        existing = DataEndpoint(*LECO_PROXY_PORTS)
        if proxy_answers(existing.publish_address(coordinator_host), existing.subscribe_address(coordinator_host),
                         context, probe_timeout):
            logger.info("publishing to the LECO data proxy already at ports %d/%d", *LECO_PROXY_PORTS)
            return existing, None
    if local:
        proxy = EmbeddedProxy(bind or coordinator_host, context)
        return proxy.endpoint, proxy
    existing = DataEndpoint(*LECO_PROXY_PORTS)
    if proxy_answers(existing.publish_address(coordinator_host), existing.subscribe_address(coordinator_host),
                     context, probe_timeout):
        return existing, None
    proxy = EmbeddedProxy(bind or "127.0.0.1", context)
    host = bind if bind and bind not in ("0.0.0.0", "::", "*") else None
    if host is None:
        logger.warning("no LECO data proxy answers at %s:%d; events and streams are published on this machine's "
                       "loopback only (use --bind to reach clients elsewhere)", coordinator_host,
                       LECO_PROXY_PORTS[0])
        host = "127.0.0.1"
    return DataEndpoint(proxy.receiving_port, proxy.sending_port, host), proxy
