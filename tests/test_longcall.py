"""Long calls with progress and cancel (issue 14, item 5), through a real Session on the simulator.

``rpl_noqt.remote.longcall.run_long_call`` runs PyRPL's own long methods in
the calling thread; these tests drive it as the board server's worker
thread will, cancel it from other threads at every stage (before, during,
after, twice, while other threads use the board, while queued), and read
the board back: a cancelled network-analyzer sweep must leave the board as
PyRPL's own ``stop()`` does, and stay that way. A board that goes away
mid-sweep must end in ``BoardConnectionError`` within the link deadline.
Every wait is bounded.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import rpl_noqt
from rpl_noqt import BoardConnectionError, BoardTimeoutError, CallCancelledError
from rpl_noqt.runtime import loop as rpl_loop
from rpl_noqt.remote.longcall import LONG_METHODS, CallControl, run_long_call, supports

pytestmark = pytest.mark.timeout(90)

CONNECT = 1.5  # the link fixture's connect timeout (s)
IO = 1.0  # the link deadline of the fault tests
SLACK = 1.0  # "within the deadline + 1 s", as tests/test_link_failures.py
CANCEL_TARGET_S = 0.2  # issue 14's cancel latency target, plus one point's time for the NA
IQ_KEYS = ("input", "acbandwidth", "bandwidth", "quadrature_factor", "output_signal", "gain", "amplitude",
           "phase", "output_direct", "modulation_at_2f", "demodulation_at_2f")


# -- helpers -----------------------------------------------------------------------------------------
class _Runner:
    """run_long_call in a worker thread (as the server's worker), with its outcome and timings."""

    def __init__(self, module: Any, method: str, control: CallControl, args: list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(module, method, args or [], kwargs or {}, control),
                                        name=f"long-{method}", daemon=True)
        self._thread.start()

    def _run(self, module: Any, method: str, args: list[Any], kwargs: dict[str, Any], control: CallControl) -> None:
        try:
            self.result = run_long_call(module, method, args, kwargs, control)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def join(self, timeout: float = 30.0) -> _Runner:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the long call did not end"
        return self


class _Reports:
    """A report sink that remembers what it got and when."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self.items.append(dict(progress))
            self.times.append(time.monotonic())
            self.threads.add(threading.current_thread().name)

    def done(self) -> int:
        with self._lock:
            return self.items[-1]["done"] if self.items else -1


def _until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def _setup_na(session, *, points: int = 200, rbw: float = 100.0, trace_average: int = 1):
    na = session.pyrpl.networkanalyzer
    na.setup(start_freq=1e3, stop_freq=1e5, points=points, rbw=rbw, average_per_point=1,
             trace_average=trace_average, input="iq0", output_direct="out1", amplitude=0.2, logscale=True,
             auto_bandwidth=False, auto_amplitude=False)
    return na


def _iq_state(na) -> dict[str, Any]:
    """The NA's IQ module as the board has it (registers read back), without the swept frequency."""
    setup = na.iq.setup_attributes
    state = {key: setup[key] for key in IQ_KEYS}
    state["running_state"] = na.running_state
    return state


def _lock_free(session) -> bool:
    ok = session.lock.acquire(timeout=2)
    if ok:
        session.lock.release()
    return ok


# -- progress --------------------------------------------------------------------------------------
def test_na_single_reports_progress_and_returns_pyrpls_curve(session, no_leaked_threads):
    na = _setup_na(session, points=40, rbw=500.0, trace_average=2)
    reports = _Reports()
    control = CallControl(report=reports, min_interval=0.05)
    curve = _Runner(na, "single", control).join().result
    assert isinstance(curve, np.ndarray) and curve.shape == (40,) and np.iscomplexobj(curve)
    items = reports.items
    assert items[0]["done"] == 0 and items[0]["total"] == 80  # points x trace_average
    assert items[-1] == {**items[-1], "module": "networkanalyzer", "method": "single", "done": 80, "total": 80,
                         "fraction": 1.0}
    assert [r["fraction"] for r in items].count(1.0) == 1  # the end is reported once
    dones = [r["done"] for r in items]
    assert dones == sorted(dones) and len(set(dones)) > 5  # it moved, point by point, never backwards
    assert all(0.0 <= r["fraction"] <= 1.0 and r["elapsed"] >= 0 for r in items)
    gaps = np.diff(reports.times[:-1])  # the final report is the only one allowed to come sooner
    assert gaps.size and gaps.min() >= 0.05 - 0.005, gaps.min()
    assert reports.threads == {"long-single"}  # reports come from the calling thread
    assert na.running_state == "stopped" and na.iq.amplitude == 0  # as PyRPL ends a single
    assert _lock_free(session)


def test_scope_and_spectrum_analyzer_count_their_curves(session):
    scope = session.rp.scope
    scope.setup(duration=0.001, trigger_source="immediately", input1="in1", input2="in2", trace_average=3)
    reports = _Reports()
    curves = _Runner(scope, "single", CallControl(report=reports, min_interval=0.0)).join().result
    assert curves.shape == (2, scope.data_length)
    assert reports.items[-1]["done"] == 3 and reports.items[-1]["total"] == 3
    assert scope.running_state == "stopped"

    sa = session.pyrpl.spectrumanalyzer
    sa.setup(span=1e5, baseband=True, trace_average=2)
    reports = _Reports()
    spectrum = _Runner(sa, "single", CallControl(report=reports)).join().result
    assert spectrum.shape[0] == 4  # baseband: two spectra and the cross spectrum
    assert reports.items[-1] == {**reports.items[-1], "done": 2, "total": 2, "fraction": 1.0}


def test_sampler_stats_in_chunks_match_one_call(session):
    session.rp.asg0.setup(waveform="dc", offset=0.3, amplitude=0.0, output_direct="off", trigger_source="immediately")
    sampler = session.rp.sampler
    reports = _Reports()
    mean, stddev, high, low = _Runner(sampler, "stats", CallControl(report=reports), ["asg0"],
                                      {"t": 0.4}).join().result
    assert mean == pytest.approx(0.3, abs=2e-3) and stddev < 2e-3 and low <= mean <= high
    assert reports.items[-1]["total"] >= 8 and reports.items[-1]["fraction"] == 1.0  # taken in chunks
    # short: one call of PyRPL's own, and mean_stddev keeps its two-value shape
    assert _Runner(sampler, "mean_stddev", CallControl(), [], {"signal": "asg0", "t": 0.01}).join().result == \
        pytest.approx((0.3, 0.0), abs=2e-3)
    two = _Runner(sampler, "mean_stddev", CallControl(), ["asg0", 0.2]).join().result
    assert len(two) == 2 and two[0] == pytest.approx(0.3, abs=2e-3)


def test_a_failing_report_sink_does_not_abort_the_call(session, caplog):
    na = _setup_na(session, points=20, rbw=1000.0)

    def broken(_progress: dict[str, Any]) -> None:
        raise RuntimeError("the progress channel is gone")

    with caplog.at_level(logging.ERROR, logger="rpl_noqt.remote.longcall"):
        runner = _Runner(na, "single", CallControl(report=broken, min_interval=0.0)).join()
    assert runner.error is None and runner.result.shape == (20,)
    assert sum("progress report" in r.getMessage() for r in caplog.records) == 1  # logged once, not per point


# -- cancel ---------------------------------------------------------------------------------------
def _cancel_mid_sweep(na, *, at_done: int = 10, extra: Callable[[], None] | None = None):
    """Start a sweep, cancel it once ``at_done`` points are in; returns (runner, cancel time, reports)."""
    reports = _Reports()
    control = CallControl(report=reports, min_interval=0.02)
    runner = _Runner(na, "single", control)
    _until(lambda: reports.done() >= at_done or runner.ended_at is not None, what="the sweep to progress")
    if extra is not None:
        extra()
    t_cancel = time.monotonic()
    control.cancel()
    runner.join()
    return runner, t_cancel, reports


def test_cancel_mid_sweep_stops_the_board_as_pyrpls_stop(session, no_leaked_threads):
    na = _setup_na(session)
    # reference 1: how PyRPL leaves it after a whole single()
    _Runner(na, "single", CallControl()).join()
    after_single = _iq_state(na)
    # reference 2: PyRPL's own stop() mid-sweep (called on the loop thread, between steps of the run)
    na.single_async()
    _until(lambda: vars(na).get("current_point", 0) >= 10, what="the reference sweep")
    rpl_loop.call(na.stop)
    after_stop = _iq_state(na)
    assert after_stop == after_single
    assert after_stop["amplitude"] == 0 and after_stop["output_direct"] == "out1"
    assert after_stop["running_state"] == "stopped"

    runner, t_cancel, reports = _cancel_mid_sweep(na)
    latency = runner.ended_at - t_cancel
    err = runner.error
    assert isinstance(err, CallCancelledError), repr(err)
    assert latency < CANCEL_TARGET_S + na.time_per_point, latency
    assert err.module == "networkanalyzer" and err.method == "single" and err.total == 200
    assert 10 <= err.done < 200 and err.unit == "points"
    assert str(err).startswith(f"networkanalyzer.single() cancelled after {err.done} of 200 points")
    assert all(r["fraction"] < 1.0 for r in reports.items)  # a cancelled call never reports its end
    # the board, read back: exactly as after PyRPL's stop(), and it stays there (no late write of the run)
    state = _iq_state(na)
    assert state == after_stop
    frequency = na.iq.frequency
    time.sleep(max(0.3, 5 * na.time_per_point))
    assert na.iq.frequency == frequency and na.iq.amplitude == 0 and na.running_state == "stopped"
    assert vars(na)["_last_run"].cancelled()
    assert _lock_free(session)
    # and it is usable: the next sweep runs to the end
    na.points = 20
    assert _Runner(na, "single", CallControl()).join().result.shape == (20,)


def test_cancel_before_the_call_starts_touches_nothing(session, sim):
    na = _setup_na(session)
    na.iq.amplitude = 0.25  # a state a sweep start would change at once
    control = CallControl()
    control.cancel()
    requests = sim.requests
    t0 = time.monotonic()
    runner = _Runner(na, "single", control).join()
    assert isinstance(runner.error, CallCancelledError) and "before it started" in str(runner.error)
    assert runner.ended_at - t0 < 0.2
    assert sim.requests == requests  # not one register access
    assert na.iq.amplitude == pytest.approx(0.25, abs=1e-3) and na.running_state == "stopped"


def test_cancel_after_the_call_finished_has_no_effect(session):
    na = _setup_na(session, points=20, rbw=1000.0)
    control = CallControl()
    runner = _Runner(na, "single", control).join()
    assert runner.error is None
    na.iq.amplitude = 0.125  # whatever the board holds now must stay
    control.cancel()
    control.cancel()
    time.sleep(0.1)
    assert control.cancelled
    assert na.iq.amplitude == pytest.approx(0.125, abs=1e-3) and na.running_state == "stopped"
    with pytest.raises(RuntimeError, match="one per call"):
        run_long_call(na, "single", [], {}, control)  # a control serves one call


def test_two_cancels_from_two_threads(session, no_leaked_threads):
    na = _setup_na(session)
    reports = _Reports()
    control = CallControl(report=reports, min_interval=0.02)
    runner = _Runner(na, "single", control)
    _until(lambda: reports.done() >= 5, what="the sweep to progress")
    barrier = threading.Barrier(2)

    def cancel() -> None:
        barrier.wait(5)
        control.cancel()

    cancellers = [threading.Thread(target=cancel) for _ in range(2)]
    t_cancel = time.monotonic()
    for t in cancellers:
        t.start()
    for t in cancellers:
        t.join(5)
    control.cancel()  # and a third, late one
    runner.join()
    assert isinstance(runner.error, CallCancelledError), repr(runner.error)
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S + na.time_per_point
    assert na.iq.amplitude == 0 and na.running_state == "stopped"
    assert _lock_free(session)


def test_cancel_while_another_thread_uses_the_board(session, no_leaked_threads):
    na = _setup_na(session)
    asg = session.rp.asg1
    stop = threading.Event()
    failures: list[BaseException] = []
    rounds = [0]

    def busy() -> None:  # register traffic, and short transactions under the board lock
        i = 0
        while not stop.is_set():
            i += 1
            try:
                with session.lock:
                    asg.frequency = 1000.0 + i
                    time.sleep(0.01)
                    assert asg.frequency == pytest.approx(1000.0 + i, abs=0.1)
                asg.offset = (i % 10) / 100
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return
            rounds[0] = i

    worker = threading.Thread(target=busy, name="busy")
    worker.start()
    try:
        runner, t_cancel, _ = _cancel_mid_sweep(na, at_done=5)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive() and not failures, failures
    assert rounds[0] > 5  # the other thread really shared the board
    assert isinstance(runner.error, CallCancelledError), repr(runner.error)
    # the stop waits for the board lock like any access: at most one 10 ms transaction more
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S + na.time_per_point + 0.05
    assert _iq_state(na)["amplitude"] == 0 and na.running_state == "stopped"
    assert _lock_free(session)


def test_a_long_call_queues_with_plain_single_calls_and_can_be_cancelled_queued(session, no_leaked_threads):
    na = _setup_na(session, points=60, rbw=500.0)
    box: dict[str, Any] = {}

    def plain() -> None:
        box["curve"] = na.single(timeout=30)  # rpl_noqt's queued single(), as any other thread would

    first = threading.Thread(target=plain)
    first.start()
    _until(lambda: vars(na).get("current_point", 0) >= 3, what="the plain sweep to start")
    control = CallControl()
    queued = _Runner(na, "single", control)
    time.sleep(0.1)
    assert queued.ended_at is None  # waiting for the plain single(), not cancelling it
    t_cancel = time.monotonic()
    control.cancel()
    queued.join()
    assert isinstance(queued.error, CallCancelledError) and "queued" in str(queued.error)
    assert queued.ended_at - t_cancel < CANCEL_TARGET_S
    first.join(30)
    assert not first.is_alive() and box["curve"].shape == (60,)  # the other caller's sweep was not touched

    # the other way round: a plain single() waits for a long call
    long_call = _Runner(na, "single", CallControl())
    _until(lambda: vars(na).get("current_point", 0) >= 3, what="the long call to start")
    second = threading.Thread(target=plain)
    second.start()
    long_call.join()
    second.join(30)
    assert long_call.error is None and long_call.result.shape == (60,)
    assert not second.is_alive() and box["curve"].shape == (60,)


def test_a_stop_by_someone_else_ends_the_call_as_cancelled(session):
    na = _setup_na(session)
    reports = _Reports()
    runner = _Runner(na, "single", CallControl(report=reports, min_interval=0.02))
    _until(lambda: reports.done() >= 5, what="the sweep to progress")
    rpl_loop.call(na.stop)
    runner.join()
    assert isinstance(runner.error, CallCancelledError) and "another caller" in str(runner.error)
    assert na.running_state == "stopped" and na.iq.amplitude == 0


def test_cancel_scope_waiting_for_a_trigger_and_a_long_spectrum(session):
    scope = session.rp.scope
    scope.setup(duration=0.01, trigger_source="ext_positive_edge", input1="in1", input2="in2", trace_average=1)
    control = CallControl()
    runner = _Runner(scope, "single", control)
    time.sleep(0.3)
    assert runner.ended_at is None  # no trigger ever comes
    t_cancel = time.monotonic()
    control.cancel()
    runner.join()
    assert isinstance(runner.error, CallCancelledError) and "scope.single() cancelled after 0 of 1 curves" in \
        str(runner.error)
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S
    assert scope.running_state == "stopped"

    sa = session.pyrpl.spectrumanalyzer
    sa.setup(span=1e4, baseband=True, trace_average=1)  # about 2 s a spectrum on the simulator
    control = CallControl()
    runner = _Runner(sa, "single", control)
    time.sleep(0.3)
    t_cancel = time.monotonic()
    control.cancel()
    runner.join()
    assert isinstance(runner.error, CallCancelledError), repr(runner.error)
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S
    assert sa.running_state == "stopped"
    assert session.rp.scope.owner is None  # the spectrum analyzer's stop() freed the scope it borrowed


def test_cancel_sampler_stats(session):
    sampler = session.rp.sampler
    control = CallControl()
    runner = _Runner(sampler, "stats", control, ["in1"], {"t": 10.0})
    time.sleep(0.3)
    t_cancel = time.monotonic()
    control.cancel()
    runner.join()
    assert isinstance(runner.error, CallCancelledError) and "nothing to stop" in str(runner.error)
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S
    assert 0 < runner.error.done < runner.error.total and runner.error.unit == "chunks"


def test_lockin_reading_reports_and_a_cancel_leaves_it_to_end_alone(session):
    iq = session.rp.iq0
    iq.setup(frequency=10e3, bandwidth=[1e3, 1e3], gain=0, amplitude=0.2, input="iq0", output_direct="off",
             output_signal="quadrature")
    before = dict(iq.setup_attributes)
    reports = _Reports()
    xy = _Runner(iq, "lockin_xy", CallControl(report=reports), [0.3]).join().result
    assert xy.shape == (2,) and reports.items[-1]["fraction"] == 1.0 and reports.items[-1]["total"] == 300
    assert len(reports.items) > 3
    control = CallControl()
    runner = _Runner(iq, "lockin_xy", control, [], {"integration_time": 2.0})
    time.sleep(0.2)
    t_cancel = time.monotonic()
    control.cancel()
    runner.join()
    assert isinstance(runner.error, CallCancelledError) and "nothing to stop" in str(runner.error)
    assert runner.ended_at - t_cancel < CANCEL_TARGET_S
    # the abandoned reading ends by itself; the next one queues behind it and works
    assert _Runner(iq, "lockin_xy", CallControl(), [0.01]).join(10).result.shape == (2,)
    assert dict(iq.setup_attributes) == before


def test_timeout_is_pyrpls(session):
    na = _setup_na(session)
    t0 = time.monotonic()
    runner = _Runner(na, "single", CallControl(), [0.3]).join()
    assert isinstance(runner.error, TimeoutError) and "Timeout exceeded" in str(runner.error)
    assert runner.ended_at - t0 < 0.3 + 0.5
    assert na.running_state == "running_single"  # as PyRPL: the run goes on
    rpl_loop.call(na.stop)
    assert na.running_state == "stopped"


# -- a board that goes away ----------------------------------------------------------------------
def test_board_gone_mid_sweep_is_a_board_connection_error_within_the_deadline(link, fixed_sim):
    na = _setup_na(link)
    reports = _Reports()
    control = CallControl(report=reports, min_interval=0.02)
    runner = _Runner(na, "single", control)
    _until(lambda: reports.done() >= 5, what="the sweep to progress")
    t_gone = time.monotonic()
    fixed_sim.stop()
    runner.join(IO + 10)
    assert isinstance(runner.error, BoardConnectionError), repr(runner.error)
    assert runner.ended_at - t_gone < IO + SLACK
    assert _lock_free(link)
    control.cancel()  # after the end: nothing happens, nothing hangs
    fixed_sim.start()
    na.points = 20
    assert _Runner(na, "single", CallControl()).join().result.shape == (20,)


def test_board_silent_mid_sweep_is_a_timeout_within_the_deadline(link, fixed_sim):
    na = _setup_na(link)
    reports = _Reports()
    runner = _Runner(na, "single", CallControl(report=reports, min_interval=0.02))
    _until(lambda: reports.done() >= 5, what="the sweep to progress")
    t_silent = time.monotonic()
    fixed_sim.faults.latency = IO + 0.5
    try:
        runner.join(IO + 10)
    finally:
        fixed_sim.faults.clear()
    assert isinstance(runner.error, BoardTimeoutError), repr(runner.error)
    assert runner.ended_at - t_silent < IO + SLACK
    assert _lock_free(link)


def test_cancel_while_the_board_is_gone(link, fixed_sim):
    na = _setup_na(link)
    reports = _Reports()
    control = CallControl(report=reports, min_interval=0.02)
    runner = _Runner(na, "single", control)
    _until(lambda: reports.done() >= 5, what="the sweep to progress")
    fixed_sim.stop()
    t_cancel = time.monotonic()
    control.cancel()
    runner.join(IO + 10)
    # the stop could not reach the board (or the run failed first): never a hang, never a false "stopped"
    assert isinstance(runner.error, BoardConnectionError), repr(runner.error)
    assert runner.ended_at - t_cancel < IO + SLACK
    assert _lock_free(link)
    fixed_sim.start()
    rpl_loop.call(na.stop)  # once it is back, PyRPL's stop() does what the cancel could not
    assert na.iq.amplitude == 0 and na.running_state == "stopped"


# -- the contract ---------------------------------------------------------------------------------
def test_every_long_method_of_the_registry_is_supported():
    from rpl_noqt.remote.registry import METHODS

    long_ones = {(kind, m.name) for kind, specs in METHODS.items() for m in specs if m.long}
    assert long_ones and all(supports(kind, name) for kind, name in long_ones), long_ones
    assert {(kind, name) for kind, names in LONG_METHODS.items() for name in names} >= long_ones


def test_refusals(session):
    with pytest.raises(ValueError, match=r"asg0\.setup\(\) is not a long call"):
        run_long_call(session.rp.asg0, "setup", [], {}, CallControl())
    with pytest.raises(ValueError, match="not a long call"):
        run_long_call(session.rp.scope, "stop", [], {}, CallControl())
    with pytest.raises(TypeError, match=r"networkanalyzer\.single\(\)"):
        run_long_call(session.pyrpl.networkanalyzer, "single", [1, 2], {}, CallControl())
    with pytest.raises(ValueError, match="timeout"):
        run_long_call(session.rp.scope, "single", [], {"timeout": "soon"}, CallControl())
    for bad in (-1, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="min_interval"):
            CallControl(min_interval=bad)
    with pytest.raises(rpl_noqt.errors.LoopThreadError):
        rpl_loop.call(run_long_call, session.rp.scope, "single", [], {}, CallControl())


def test_call_cancelled_error_is_exported_and_picklable():
    assert rpl_noqt.CallCancelledError is CallCancelledError and "CallCancelledError" in rpl_noqt.__all__
    err = CallCancelledError("networkanalyzer", "single", 37, 200, 0.612, unit="points", detail="the module is stopped")
    assert str(err) == "networkanalyzer.single() cancelled after 37 of 200 points (18%), 0.61 s: the module is stopped"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is CallCancelledError and str(again) == str(err) and again.done == 37
    assert str(CallCancelledError("sampler", "stats")) == "sampler.stats() cancelled after 0.00 s"


def test_the_module_imports_no_leco(run_python):
    proc = run_python("import sys, rpl_noqt.remote.longcall\n"
                      "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyleco', 'zmq'))\n"
                      "print(bad)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_only_the_final_report_says_done():
    """A look at the progress just after the last point was counted (a loaded machine) must not
    report fraction 1.0 ahead of the final report: the end is reported once."""
    from types import SimpleNamespace

    from rpl_noqt.remote.longcall import _Call

    reports: list[dict] = []
    call = _Call(SimpleNamespace(name="networkanalyzer"), "NetworkAnalyzer", "single",
                 CallControl(report=reports.append, min_interval=0.0))
    call.total = 10
    call.done = 4
    call.emit()
    call.done = 10
    call.emit()  # the last point is in, the call has not returned yet
    call.emit(final=True)
    assert [r["fraction"] for r in reports] == [0.4, 1.0]
