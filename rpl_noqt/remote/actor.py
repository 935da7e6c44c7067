"""The board as a LECO locking actor: pyleco's MessageHandler, our dispatch.

Why not pyleco's ``LockingActor`` (0.6): its ``get_parameters``/``call_action``
walk ``getattr`` along whatever dotted name a client sends; its
``AccessDeniedError`` derives from ``BaseException``, which pyleco's RPC
server does not catch, so the first refused request ends the actor's listen
loop (checked: the refused client then times out and the actor is gone); and
a whole-device lock (``lock()`` without a resource) does not protect any
parameter. We keep its RPC names and locking semantics, so pyleco's
directors work, and resolve every name through the registry (:mod:`.surface`).

Concurrency: the listener thread answers short requests itself (gets,
sets, setup(), lock, pong: each bounded by the board's I/O deadline) and
hands calls the registry marks long (``scope.single()``, a network-analyzer
sweep) to worker threads, which send their replies back through an inproc
PUSH/PULL pair because only the listener may use the LECO socket. So one
client waiting for a curve never holds up another client's get, and a
client can always tell a slow acquisition from a dead server by a ``pong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq
from pyleco.core.message import Message, MessageTypes
from pyleco.json_utils.errors import DUPLICATE_NAME, JSONRPCError
from pyleco.json_utils.json_objects import JsonRpcError
from pyleco.utils.message_handler import MessageHandler
from pyleco.utils.rpc_handler import RpcHandler

from ..errors import BoardConnectionError, BoardLockedError, BoardTimeoutError, CallCancelledError
from . import payloads
from .errors import RemoteNameError
from .longcall import CallControl
from .publisher import acting_for
from .surface import BoardSurface
from .wire import ErrorCode

__all__ = ("BoardActor",)

logger = logging.getLogger(__name__)
_ids = itertools.count(1)


class _Refusal(JSONRPCError):
    """A request answered with an error on purpose (logged by us, not as a pyleco traceback)."""


class _QuietRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Refusal))


_rpc_log = logging.getLogger("pyleco.json_utils.rpc_server")
if not any(isinstance(f, _QuietRefusals) for f in _rpc_log.filters):
    _rpc_log.addFilter(_QuietRefusals())


def _refusal(code: int, message: str, **data: Any) -> _Refusal:
    return _Refusal(JsonRpcError(code=code, message=message, data=data or None))


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as the JSON-RPC error object a client rebuilds it from (for published messages)."""
    error = translate(exc).rpc_error
    return {"code": error.code, "message": error.message, "data": error.data}


def translate(exc: BaseException) -> _Refusal:
    """An exception from the board or the surface as a JSON-RPC error a client can rebuild."""
    if isinstance(exc, _Refusal):
        return exc
    if isinstance(exc, BoardLockedError):
        return _refusal(ErrorCode.LOCKED, str(exc), board=exc.board, holder=exc.holder, resource=exc.resource,
                        operation=exc.operation)
    if isinstance(exc, CallCancelledError):
        return _refusal(ErrorCode.CANCELLED, str(exc), module=exc.module, method=exc.method, done=exc.done,
                        total=exc.total, elapsed=exc.elapsed, unit=exc.unit, detail=exc.detail)
    if isinstance(exc, (RemoteNameError, payloads.PayloadError)):
        return _refusal(ErrorCode.REFUSED, str(exc))
    if isinstance(exc, BoardConnectionError):
        return _refusal(ErrorCode.BOARD_CONNECTION, str(exc), board=exc.board, operation=exc.operation,
                        cause=exc.cause, address=exc.address, timeout=isinstance(exc, BoardTimeoutError))
    if isinstance(exc, (ValueError, TypeError)):
        return _refusal(ErrorCode.VALUE, str(exc), type=type(exc).__name__)
    if isinstance(exc, TimeoutError):  # an acquisition's own timeout: the caller's news, not the server's
        logger.info("remote call timed out on the server: %s", exc)
    else:
        logger.warning("remote call failed on the server", exc_info=exc)
    return _refusal(ErrorCode.CALL_FAILED, f"{type(exc).__name__}: {exc}", type=type(exc).__name__)


class _Endpoints:
    """The board's RPC methods, bound to one RpcHandler (the listener's or a worker's).

    Each handler has its own ``current_message``, so the requester's name is
    the one of the message this thread is answering.
    """

    def __init__(self, actor: BoardActor, handler: RpcHandler) -> None:
        self._actor = actor
        self._handler = handler

    def _requester(self) -> str:
        return self._handler.current_message.sender.decode(errors="replace")

    def _run(self, fn: Callable[[], Any]) -> tuple[Any, list[bytes]]:
        if self._actor.closing:
            raise _refusal(ErrorCode.CLOSING, f"board server {self._actor.name!r} is shutting down")
        acting_for(self._requester())  # an attribute change this causes names the client
        try:
            return payloads.encode(fn())
        except asyncio.CancelledError:  # a BaseException: it must not escape into pyleco's loop
            raise translate(CallCancelledError("board", "call", detail="the acquisition was restarted (a setting of "
                                               "its module changed, or another single() started)")) from None
        except Exception as exc:
            raise translate(exc) from None
        finally:
            acting_for(None)

    def get_parameters(self, parameters: list[str], additional_payload: list[bytes] | None = None
                       ) -> tuple[Any, list[bytes]]:
        """Read 'module.attribute' values (arrays in binary frames)."""
        return self._run(lambda: self._actor.surface.get(parameters))

    def set_parameters(self, parameters: dict[str, Any], additional_payload: list[bytes] | None = None
                       ) -> tuple[Any, list[bytes]]:
        """Write 'module.attribute' values, in order (refused while another client holds a lock on them)."""
        def run() -> None:
            values = payloads.decode(parameters, additional_payload or [])
            self._actor.surface.set(values, self._requester())
        return self._run(run)

    def call_action(self, action: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
                    additional_payload: list[bytes] | None = None, call_id: str | None = None
                    ) -> tuple[Any, list[bytes]]:
        """Call an allowed 'module.method' (see describe()); arrays come back as binary frames.

        ``call_id`` (rpl-noqt's clients, long calls): progress is published on
        ``NAME/calls`` under that id, and ``cancel_call(call_id)`` stops it.
        """
        def run() -> Any:
            frames = additional_payload or []
            decoded_args, decoded_kwargs = payloads.decode(args, frames), payloads.decode(kwargs, frames)
            requester = self._requester()
            if call_id is None:
                return self._actor.surface.call(action, decoded_args, decoded_kwargs, requester)
            with self._actor.long_call(call_id, requester) as control:
                return self._actor.surface.call_long(action, decoded_args, decoded_kwargs, requester, control)
        return self._run(run)

    def register(self) -> None:
        for method in (self.get_parameters, self.set_parameters, self.call_action):
            self._handler.register_binary_rpc_method(method, accept_binary_input=True, return_binary_output=True)


class BoardActor(MessageHandler):
    """A LECO component named ``name`` that serves one board's :class:`BoardSurface`."""

    def __init__(self, name: str, surface: BoardSurface, *, host: str, port: int, context: zmq.Context,
                 info: dict[str, Any], workers: int = 8) -> None:
        self.surface = surface
        #: the server's streams (:mod:`.streams`) and data-protocol facts for describe(), once publishing
        self.streams: Any = None
        self.data_info: dict[str, Any] | None = None
        self._calls: dict[tuple[str, str], CallControl] = {}
        self._calls_lock = threading.Lock()
        self._early_cancels: dict[tuple[str, str], float] = {}
        self.closing = False
        self._info = info
        self.sign_in_error: str | None = None
        self.setup_error: BaseException | None = None
        #: set once listening started (signed in) or failed to (``setup_error``)
        self.ready = threading.Event()
        self._coordinator = f"{host}:{port}"
        super().__init__(name=name, host=host, port=port, context=context,
                         log=logging.getLogger("rpl_noqt.remote.leco"))
        self.timeout = 1.0  # for sign-in/out with the coordinator
        self._context = context
        self._reply_address = f"inproc://rpl-noqt-replies-{next(_ids)}"
        self._replies: zmq.Socket = context.socket(zmq.PULL)
        self._replies.bind(self._reply_address)
        self._work: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._worker, name=f"rpl-noqt-leco-{name}-w{i}", daemon=True)
                         for i in range(workers)]
        for t in self._workers:
            t.start()

    # -- RPC surface ---------------------------------------------------------------------
    def register_rpc_methods(self) -> None:
        super().register_rpc_methods()
        # Anyone on a LECO network may send anything (no authentication): stopping the board
        # server is for whoever started it (a signal, serve()'s handle), not for a client.
        self.rpc.unregister_method("shut_down")
        _Endpoints(self, self.rpc_handler).register()
        for method in (self.describe, self.locks, self.lock, self.unlock, self.force_unlock, self.stream_start,
                       self.stream_renew, self.stream_stop, self.data_probe, self.cancel_call):
            self.register_rpc_method(method)

    def describe(self) -> dict[str, Any]:
        """The registry (modules, attributes, allowed methods), its hash, PyRPL version and server facts.

        ``server["data"]``: where the server publishes (LECO data protocol
        proxy ports, topic prefix) and which modules stream; None if it
        found no proxy.
        """
        return {"registry": self.surface.registry.to_wire(), "server": {**self._info, "data": self.data_info}}

    def _stream_hub(self) -> Any:
        if self.streams is None:
            raise _refusal(ErrorCode.REFUSED, f"board server {self.name!r} publishes no streams (no data proxy)")
        return self.streams

    @contextlib.contextmanager
    def long_call(self, call_id: object, requester: str) -> Iterator[CallControl]:
        """Register a long call under ``call_id`` for its progress messages and for cancel_call()."""
        if not isinstance(call_id, str) or not 0 < len(call_id) <= 64:
            raise RemoteNameError(f"a call id is a string of 1 to 64 characters, got {call_id!r}")
        publisher = self.streams.publisher if self.streams is not None else None

        def report(progress: dict[str, Any]) -> None:
            if publisher is not None:
                publisher.publish("calls", {"call": call_id, "by": requester, "progress": progress})

        control = CallControl(report=report)
        key = (requester, call_id)
        with self._calls_lock:
            if key in self._calls:
                raise RemoteNameError(f"call id {call_id!r} is already in use by this client")
            self._calls[key] = control
            if self._early_cancels.pop(key, None) is not None:
                control.cancel()  # the cancel overtook the call (it waited for a worker)
        try:
            yield control
        finally:
            with self._calls_lock:
                self._calls.pop(key, None)

    def cancel_call(self, call_id: str) -> bool:
        """Cancel the requester's long call ``call_id``; False if it is not running (finished, unknown)."""
        key = (self._requester(), call_id)
        with self._calls_lock:
            control = self._calls.get(key)
            if control is None:
                now = time.monotonic()
                for old in [k for k, t in self._early_cancels.items() if now - t > 60.0]:
                    del self._early_cancels[old]
                if len(self._early_cancels) < 1000 and isinstance(call_id, str) and len(call_id) <= 64:
                    self._early_cancels[key] = now  # a call with that id that starts later starts cancelled
        if control is None:
            return False
        control.cancel()
        logger.info("%s cancelled its call %s", self._requester(), call_id)
        return True

    def data_probe(self, token: str) -> bool:
        """Publish ``{"probe": token}`` on the events topic: a client checks its subscription arrived."""
        hub = self._stream_hub()
        if not isinstance(token, str) or len(token) > 64:
            raise _refusal(ErrorCode.REFUSED, "a probe token is a string of at most 64 characters")
        hub.publisher.publish("events", {"probe": token})
        return True

    def stream_start(self, module: str) -> dict[str, Any]:
        """Subscribe the requester to ``module``'s stream (topic in the answer); renew within the lease."""
        try:
            return self._stream_hub().start(module, self._requester())
        except Exception as exc:
            raise translate(exc) from None

    def stream_renew(self, module: str) -> bool:
        """Renew the requester's lease on ``module``'s stream; False: not subscribed (start again)."""
        try:
            return self._stream_hub().renew(module, self._requester())
        except Exception as exc:
            raise translate(exc) from None

    def stream_stop(self, module: str) -> bool:
        """End the requester's subscription; the acquisition loop stops with its last subscriber."""
        try:
            return self._stream_hub().stop(module, self._requester())
        except Exception as exc:
            raise translate(exc) from None

    def locks(self) -> dict[str, str]:
        """Who holds which lock: {resource ('' for the board): holder}."""
        return {("" if r is None else r): holder for r, holder in self.surface.locks.holders().items()}

    def lock(self, resource: str | None = None) -> bool:
        """Lock the board (None), a module or 'module.name' for the requester; False if another holds it."""
        try:
            resource = self.surface.check_resource(resource)
        except Exception as exc:
            raise translate(exc) from None
        return self.surface.locks.lock(self._requester(), resource)

    def unlock(self, resource: str | None = None) -> bool:
        """Release a lock the requester holds; False if it did not hold it."""
        return self.surface.locks.unlock(self._requester(), resource)

    def force_unlock(self, resource: str | None = None) -> str | None:
        """Release a lock whoever holds it (a client that died holding it); returns the holder it had."""
        holder = self.surface.locks.force_unlock(resource)
        if holder is not None:
            logger.warning("%s forced the lock on %s held by %s", self._requester(),
                           "the board" if resource is None else resource, holder)
        return holder

    def _requester(self) -> str:
        return self.rpc_handler.current_message.sender.decode(errors="replace")

    # -- LECO plumbing -------------------------------------------------------------------
    def sign_in(self) -> None:
        """Sign in to the coordinator, keeping the reason when it fails (a taken name, no answer)."""
        self.sign_in_error = None
        try:
            response = self.ask(b"COORDINATOR", data=self.rpc_generator.build_request_str(method="sign_in"),
                                message_type=MessageTypes.JSON)
            self.interpret_rpc_response(response)
        except JSONRPCError as exc:
            taken = exc.rpc_error.code == DUPLICATE_NAME.code
            self.sign_in_error = (f"the name {self.name!r} is already signed in at coordinator {self._coordinator}"
                                  if taken else f"coordinator {self._coordinator} refused the sign-in: {exc}")
        except TimeoutError:
            self.sign_in_error = f"no coordinator answered at {self._coordinator} within {self.timeout:g} s"
        else:
            self.finish_sign_in(response)
        if self.sign_in_error:
            logger.error("board server %r: %s", self.name, self.sign_in_error)

    def _listen_setup(self) -> zmq.Poller:
        try:
            poller = super()._listen_setup()
            if self.namespace is None:
                raise ConnectionRefusedError(self.sign_in_error or "sign-in failed")
            poller.register(self._replies, zmq.POLLIN)
            return poller
        except BaseException as exc:
            self.setup_error = exc
            raise
        finally:
            self.ready.set()

    def _listen_loop_element(self, poller: zmq.Poller, waiting_time: int | None) -> dict[zmq.Socket, int]:
        socks = super()._listen_loop_element(poller, waiting_time)
        if self._replies in socks:
            while True:  # forward every reply the workers finished
                try:
                    frames = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)  # a curve: no copy here
                except zmq.Again:
                    break
                self.socket.send_multipart(frames, copy=False)
            del socks[self._replies]
        return socks

    def read_and_handle_message(self) -> None:
        # as pyleco's, without formatting every message into a debug f-string (a curve is 256 kB)
        try:
            message = self.read_message(timeout=0)
        except TimeoutError:
            return
        if not message.payload:
            return
        try:
            self.handle_message(message)
        except (Exception, asyncio.CancelledError):  # one malformed or unlucky message must not end the server's listen loop
            logger.exception("board server %r: a message from %r could not be handled", self.name,
                             message.sender.decode(errors="replace"))

    def handle_json_request(self, message: Message) -> None:
        if self._is_long_call(message):
            self._work.put(message)
            return
        response = self.rpc_handler.process_request(message)
        if response is not None:
            self._send(response)

    def _send(self, message: Message) -> None:
        message.sender = self.full_name.encode()
        self.socket.send_multipart(message.to_frames())

    def _is_long_call(self, message: Message) -> bool:
        try:
            request = json.loads(message.payload[0])
        except ValueError:
            return False
        if not isinstance(request, dict) or request.get("method") != "call_action":
            return False
        params = request.get("params")
        action = params.get("action") if isinstance(params, dict) else (params[0] if params else None)
        return self.surface.is_long(action)

    def _worker(self) -> None:
        handler = RpcHandler(title=self.name)
        _Endpoints(self, handler).register()
        push: zmq.Socket = self._context.socket(zmq.PUSH)
        push.connect(self._reply_address)
        try:
            while True:
                message = self._work.get()
                if message is None:
                    return
                try:
                    response = handler.process_request(message)
                except (Exception, asyncio.CancelledError):  # never lose a worker to one request
                    logger.exception("board server %r: a long call could not be answered", self.name)
                    continue
                if response is None:
                    continue
                response.sender = self.full_name.encode()
                try:
                    push.send_multipart(response.to_frames(), copy=False)  # bytes frames: nothing to copy
                except zmq.ZMQError:  # shutting down: the listener is gone
                    return
        finally:
            push.close(linger=0)

    def stop_workers(self) -> None:
        """Tell the workers to end after their current call (they are daemon threads: never waited for long)."""
        self.closing = True
        for _ in self._workers:
            self._work.put(None)

    def join_workers(self, timeout: float) -> None:
        for t in self._workers:
            t.join(timeout)

    def close(self) -> None:
        self._replies.close(linger=0)
        super().close()
