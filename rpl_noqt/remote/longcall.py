"""Long module calls that report progress and can be cancelled, in process.

A board server hands a client's long call (``networkanalyzer.single()``,
``spectrumanalyzer.single()``, ``scope.single()``, ``sampler.stats()``...)
to a worker thread. :func:`run_long_call` runs it in that thread, as
PyRPL would, and meanwhile:

* reports progress through a :class:`CallControl` (``{"module", "method",
  "done", "total", "fraction", "elapsed"}``), at most every
  ``min_interval`` seconds and once at the end with ``fraction`` 1.0. The
  reports are made by the calling thread while it holds no board lock, so
  a slow consumer never stalls the board;
* stops the call when another thread calls :meth:`CallControl.cancel`, and
  then raises :class:`~rpl_noqt.errors.CallCancelledError`.

How a cancel stops an acquisition (network analyzer, spectrum analyzer,
scope): the run is PyRPL's own coroutine on rpl-noqt's event loop
(:mod:`rpl_noqt.runtime.loop`). The cancel runs the module's own ``stop()`` *on the
loop thread*, i.e. between two steps of that coroutine: a step (say the
network analyzer's ``_start_trace_acquisition``, which ends by switching its
IQ amplitude on) is never cut in half, and after ``stop()`` cancelled the
task it makes no further register access. So the board is left exactly as
PyRPL's ``stop()`` leaves it: acquisition state ``stopped`` and, for the
network analyzer, its IQ module's amplitude 0 (``_free_up_resources``).
A stop from another thread could interleave with such a step and leave the
amplitude on again.

The sampler's statistics are a plain loop of register reads in the calling
thread that nothing can interrupt; a long one is therefore taken in chunks
of :data:`SAMPLER_CHUNK_S` and combined, and a cancel lands between two
chunks (the sampler has nothing to stop). ``Iq.lockin_xy()`` (rpl-noqt's,
see :mod:`rpl_noqt.runtime.lockin`) changes no setting either: it runs in a helper
thread, and a cancel stops waiting for it; the abandoned reading ends by
itself within its integration time.

Pure in-process: no pyleco, no zmq. The actor maps a client's cancel to
``control.cancel()`` and ``report`` to its progress messages.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..runtime import blocking
from ..runtime import loop as _loop
from ..errors import CallCancelledError, LoopThreadError
from ..runtime.locks import FifoLock
from ..runtime.threadsafe import run_lock_of

__all__ = ("LONG_METHODS", "CallCancelledError", "CallControl", "run_long_call", "supports")

logger = logging.getLogger(__name__)

#: The long methods :func:`run_long_call` can watch and cancel, per PyRPL module class name.
LONG_METHODS: dict[str, tuple[str, ...]] = {
    "NetworkAnalyzer": ("single",),
    "SpectrumAnalyzer": ("single",),
    "Scope": ("single",),
    "Sampler": ("stats", "mean_stddev"),
    "Iq": ("lockin_xy",),  # rpl-noqt's own (rpl_noqt/lockin.py)
}

#: Sampler statistics longer than this are taken in chunks of about this length (s): a cancel's latency
SAMPLER_CHUNK_S = 0.05
#: How long a cancel waits for the module's stop() on the event loop (its register writes have their own
#: link deadline; this only guards against a loop that never gets to it)
STOP_WAIT_S = 30.0
#: Without news (no new point), a report still goes out this often, so a client sees the call is alive
HEARTBEAT_S = 1.0
#: How often a call queued behind another acquisition of the same module looks for a cancel (s)
_QUEUE_POLL_S = 0.02
#: The shortest wait between two looks at the run (a min_interval of 0 must not spin)
_MIN_TICK_S = 0.005
# A long call takes the lock rpl_noqt.runtime.threadsafe queues blocking single() calls of one module on
# (run_lock_of), so it queues with them instead of cancelling them.

_UNITS = {"NetworkAnalyzer": "points", "SpectrumAnalyzer": "spectra", "Scope": "curves", "Sampler": "chunks",
          "Iq": "ms"}


class CallControl:
    """Per-call handle: the actor sets ``report``; a client's cancel calls :meth:`cancel`.

    ``report`` receives each progress dict; it is called from the thread
    running the call, never with a board lock held, and an exception in it
    is logged, not raised (a broken progress channel must not abort a
    sweep). One control serves one call.
    """

    def __init__(self, report: Callable[[dict[str, Any]], None] | None = None, min_interval: float = 0.05) -> None:
        if isinstance(min_interval, bool) or not isinstance(min_interval, (int, float)) \
                or not math.isfinite(min_interval) or min_interval < 0:
            raise ValueError(f"min_interval must be a finite number of seconds >= 0, got {min_interval!r}")
        self._sink = report
        self.min_interval = float(min_interval)
        self._cancelled = threading.Event()
        # set by a cancel and by the end of the run: the calling thread sleeps on it between reports
        self._wake = threading.Event()
        self._claim_lock = threading.Lock()
        self._claimed = False

    def cancel(self) -> None:
        """Ask the call to stop. Any thread, any time, any number of times; returns at once.

        Before the call starts it never touches the board; after it ended it has no effect.
        """
        if not self._cancelled.is_set():
            logger.debug("cancel requested for %r", self)
        self._cancelled.set()
        self._wake.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (whether or not it had anything left to stop)."""
        return self._cancelled.is_set()

    def report(self, progress: dict[str, Any]) -> None:
        """Hand one progress dict to the ``report`` callable given at construction (if any)."""
        if self._sink is not None:
            self._sink(progress)

    def _claim(self) -> None:
        with self._claim_lock:
            if self._claimed:
                raise RuntimeError("this CallControl already served a call; make one per call")
            self._claimed = True


def supports(kind: str, method_name: str) -> bool:
    """Whether :func:`run_long_call` can watch and cancel ``method_name`` of a module of class ``kind``."""
    return method_name in LONG_METHODS.get(kind, ())


def run_long_call(module: Any, method_name: str, args: list[Any], kwargs: dict[str, Any],
                  control: CallControl) -> Any:
    """Run ``module.method_name(*args, **kwargs)`` in this thread, reporting progress, cancellable.

    Returns what PyRPL's method returns. Raises
    :class:`~rpl_noqt.errors.CallCancelledError` when ``control.cancel()``
    stopped it (the module is then stopped as by its own ``stop()``), what
    the method raises otherwise (a dead board: ``BoardConnectionError``
    within the link deadline; ``single(timeout)`` running out:
    ``TimeoutError``, with the run left going, as PyRPL does), and
    ``ValueError`` for a method this module cannot run as a long call.
    """
    kind = _kind_of(module)
    if kind is None or not supports(kind, method_name):
        raise ValueError(f"{_name_of(module)}.{method_name}() is not a long call that can be watched and "
                         f"cancelled (supported: {_describe_supported()})")
    if _loop.in_loop_thread():
        raise LoopThreadError(f"run_long_call({_name_of(module)}.{method_name}) blocks; it cannot run on the "
                              "event-loop thread, which runs the acquisition")
    control._claim()
    bound = _bind(module, method_name, args, kwargs)
    call = _Call(module, kind, method_name, control)
    if control.cancelled:
        raise call.cancelled_error("cancelled before it started; the board was not touched")
    if kind == "Sampler":
        return _run_sampler(call, bound.arguments)
    if kind == "Iq":
        return _run_reading(call, bound)
    return _run_acquisition(call, _check_timeout(bound.arguments.get("timeout")))


# -- the call's bookkeeping -----------------------------------------------------------------------
class _Call:
    """Progress of one call, and its reports (made by the calling thread only)."""

    def __init__(self, module: Any, kind: str, method: str, control: CallControl) -> None:
        self.module = module
        self.kind = kind
        self.name = _name_of(module)
        self.method = method
        self.control = control
        self.unit = _UNITS[kind]
        self.started = time.monotonic()
        self.done = 0  # written by the loop thread (signal slot) or the calling thread, read by the latter
        self.total = 0
        self._last_at: float | None = None
        self._last_done = -1
        self._sink_failed = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self, *, final: bool = False) -> dict[str, Any]:
        total = self.total
        done = total if final else min(self.done, total) if total else self.done
        fraction = 1.0 if final else (done / total if total else 0.0)
        return {"module": self.name, "method": self.method, "done": done, "total": total,
                "fraction": fraction, "elapsed": self.elapsed()}

    def emit(self, *, final: bool = False) -> None:
        """Report, unless the last report was less than min_interval ago (or nothing moved for a while)."""
        now = time.monotonic()
        if not final and self.total and self.done >= self.total:
            return  # the end is the final report's, once (a late look could see the last point counted)
        if not final and self._last_at is not None:
            since = now - self._last_at
            if since < self.control.min_interval:
                return
            if self.done == self._last_done and since < HEARTBEAT_S:
                return
        self._last_at, self._last_done = now, self.done
        progress = self.progress(final=final)
        try:
            self.control.report(progress)
        except Exception:  # a broken progress channel must not abort the measurement
            if not self._sink_failed:
                logger.exception("progress report of %s.%s() failed (later failures of this call are not logged)",
                                 self.name, self.method)
            self._sink_failed = True

    def cancelled_error(self, detail: str) -> CallCancelledError:
        done = min(self.done, self.total) if self.total else self.done
        return CallCancelledError(self.name, self.method, done, self.total, self.elapsed(), unit=self.unit,
                                  detail=detail)


# -- acquisitions: network analyzer, spectrum analyzer, scope ---------------------------------------
def _run_acquisition(call: _Call, timeout: float | None) -> Any:
    module, control = call.module, call.control
    if call.kind == "NetworkAnalyzer":
        points = int(module.points)
        call.total = points * int(module.trace_average)
        signal = module._signal_launcher.update_point

        def on_progress(index: int) -> None:
            # emitted on the loop thread once per point, before the NA counts it; current_avg = traces done
            call.done = int(vars(module).get("current_avg", 0)) * points + int(index) + 1
    else:
        call.total = int(module.trace_average)
        signal = module._signal_launcher.display_curve

        def on_progress(_curve: list) -> None:  # emitted once per averaged trace
            call.done += 1

    run_lock = _run_lock(module)
    with blocking.released_locks():  # the run needs the board on the loop thread; reports hold nothing
        if not run_lock.acquire(cancelled=lambda: control.cancelled, poll=_QUEUE_POLL_S):  # in turn, no barging
            raise call.cancelled_error("cancelled while queued behind another acquisition of the module; "
                                       "the board was not touched")
        try:
            if control.cancelled:
                raise call.cancelled_error("cancelled before it started; the board was not touched")
            signal.connect(on_progress)
            try:
                future = module.single_async()
                future.add_done_callback(lambda _f: control._wake.set())
                return _await_run(call, future, timeout)
            finally:
                signal.disconnect(on_progress)
        finally:
            run_lock.release()


def _await_run(call: _Call, future: Any, timeout: float | None) -> Any:
    control = call.control
    deadline = None if timeout is None else time.monotonic() + timeout
    call.emit()  # the first report: it started
    while not future.done():
        if control.cancelled:
            return _cancel_run(call, future)
        tick = max(control.min_interval, _MIN_TICK_S)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                # as PyRPL's single(timeout): the run goes on, the caller gets TimeoutError
                raise TimeoutError("Timeout exceeded")
            tick = min(tick, left)
        control._wake.wait(tick)
        call.emit()
    return _outcome(call, future)


def _outcome(call: _Call, future: Any) -> Any:
    if future.cancelled():
        if call.control.cancelled:
            raise call.cancelled_error("the module is stopped")
        # PyRPL's stop(), continuous(), a new single_async() from elsewhere or a changed setting
        # (which restarts a running acquisition) replaced this run
        raise call.cancelled_error("stopped or restarted by another caller (stop(), continuous(), a new "
                                   "acquisition of this module, or a change of one of its settings)")
    exc = future.exception()
    if exc is not None:
        raise exc
    result = future.result()
    call.emit(final=True)
    return result


def _cancel_run(call: _Call, future: Any) -> Any:
    t0 = time.monotonic()
    stopping = _loop.run_coroutine(_stop_between_steps(call.module, future))
    try:
        what = stopping.result(STOP_WAIT_S)  # a BoardConnectionError of stop()'s writes is raised here
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"{call.name}.{call.method}(): cancelled, but the event loop did not run the "
                           f"module's stop() within {STOP_WAIT_S:.0f} s") from None
    if what == "finished":  # the run ended before the cancel reached it: the cancel has no effect
        return _outcome(call, future)
    logger.info("%s.%s() cancelled after %d of %d %s (%.2f s; stop took %.1f ms)", call.name, call.method,
                min(call.done, call.total), call.total, call.unit, call.elapsed(), 1e3 * (time.monotonic() - t0))
    raise call.cancelled_error("the module is stopped" if what == "stopped"
                               else "its run had already been replaced; the module was left to its new run")


async def _stop_between_steps(module: Any, future: Any) -> str:
    """On the loop thread, between two steps of the run: stop the module if the run is still ours.

    Running here, not in the cancelling thread, is what keeps a step of the
    run (several register writes with no ``await`` between them) whole.
    """
    if future.done() and not future.cancelled():
        return "finished"
    if vars(module).get("_last_run") is future:
        module.stop()  # PyRPL's own: cancels the run, state 'stopped', frees what the run used
        return "stopped"
    future.cancel()  # another run of the module replaced ours: leave that one alone
    return "replaced"


# -- the sampler ----------------------------------------------------------------------------------
def _run_sampler(call: _Call, arguments: dict[str, Any]) -> Any:
    module, control = call.module, call.control
    signal, duration = arguments["signal"], arguments["t"]
    method = getattr(module, call.method)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration <= SAMPLER_CHUNK_S * 1.5:
        call.total = 1  # short (or odd: PyRPL's call decides): one call, exactly PyRPL's
        result = method(signal=signal, t=duration)
        call.done = 1
        call.emit(final=True)
        return result
    chunks = math.ceil(duration / SAMPLER_CHUNK_S)
    chunk_t = float(duration) / chunks
    call.total = chunks
    parts: list[tuple[float, float, float, float]] = []
    with blocking.released_locks():  # each chunk takes the board for chunk_t; other threads get it between
        call.emit()
        for _ in range(chunks):
            if control.cancelled:
                raise call.cancelled_error("nothing to stop (the sampler only reads)")
            parts.append(module.stats(signal=signal, t=chunk_t))
            call.done += 1
            call.emit()
    # equal durations at the sampler's steady read rate: equal weights
    mean = sum(p[0] for p in parts) / chunks
    mean_square = sum(p[1] ** 2 + p[0] ** 2 for p in parts) / chunks
    stddev = max(mean_square - mean**2, 0.0) ** 0.5
    high, low = max(p[2] for p in parts), min(p[3] for p in parts)
    mean = min(max(mean, low), high)  # a sum of equal values may land an ulp outside them
    call.emit(final=True)
    return (mean, stddev) if call.method == "mean_stddev" else (mean, stddev, high, low)


# -- a reading that changes no setting: Iq.lockin_xy ---------------------------------------------------
def _run_reading(call: _Call, bound: inspect.BoundArguments) -> Any:
    """Run the reading in a helper thread; a cancel stops waiting for it.

    ``lockin_xy`` is one blocking step (start the accumulator, sleep, read
    it) that leaves every setting as it was, so there is nothing to stop
    and nothing to leave half-done: a cancelled reading ends by itself in
    the background (within its integration time) with one read-only access.
    """
    control = call.control
    duration = bound.arguments.get("integration_time")
    expected_s = float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) \
        and math.isfinite(duration) and duration > 0 else 0.0
    call.total = max(1, round(expected_s * 1e3))
    box: dict[str, Any] = {}
    finished = threading.Event()

    def read() -> None:
        try:
            box["result"] = getattr(call.module, call.method)(*bound.args[1:], **bound.kwargs)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            finished.set()
            control._wake.set()

    helper = threading.Thread(target=read, name=f"rpl-noqt-{call.name}.{call.method}", daemon=True)
    with blocking.released_locks():
        helper.start()
        call.emit()
        while not finished.is_set():
            if control.cancelled:
                raise call.cancelled_error(f"nothing to stop (the reading changes no setting; it ends in the "
                                           f"background within {expected_s:.2f} s)")
            control._wake.wait(max(control.min_interval, _MIN_TICK_S))
            call.done = min(call.total - 1, int(call.elapsed() * 1e3))
            call.emit()
    if "error" in box:
        raise box["error"]
    call.done = call.total
    call.emit(final=True)
    return box["result"]


# -- helpers --------------------------------------------------------------------------------------
def _kind_of(module: Any) -> str | None:
    for klass in type(module).__mro__:
        if klass.__name__ in LONG_METHODS:
            return klass.__name__
    return None


def _name_of(module: Any) -> str:
    name = vars(module).get("name") if hasattr(module, "__dict__") else None
    return name if isinstance(name, str) and name else type(module).__name__


def _describe_supported() -> str:
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in LONG_METHODS.items())


def _bind(module: Any, method_name: str, args: list[Any] | None, kwargs: dict[str, Any] | None
          ) -> inspect.BoundArguments:
    """Check the arguments against PyRPL's own signature (a TypeError names what is wrong)."""
    func = getattr(type(module), method_name)
    try:
        bound = inspect.signature(func).bind(module, *(args or ()), **(kwargs or {}))
    except TypeError as exc:
        raise TypeError(f"{_name_of(module)}.{method_name}(): {exc}") from None
    bound.apply_defaults()
    return bound


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise ValueError(f"timeout must be None or a number of seconds, got {timeout!r}")
    return max(0.0, float(timeout))


def _run_lock(module: Any) -> FifoLock:
    return run_lock_of(module)  # the one blocking single() calls queue on
