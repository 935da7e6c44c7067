"""Long remote calls: network-analyzer progress and cancel from the client, interrupts, other clients.

The board server runs in this process on a simulated board (embedded
coordinator and data proxy on free loopback ports); another client is a
real child process. Every wait is bounded.
"""

from __future__ import annotations

import _thread
import json
import threading
import time

import pytest

pytest.importorskip("pyleco", reason="remote sessions need the [remote] extra (pyleco)")

import rpl_noqt  # noqa: E402
from rpl_noqt.errors import BoardConnectionError, CallCancelledError  # noqa: E402
from rpl_noqt.remote.errors import RemoteNameError  # noqa: E402
from helpers import wait_until  # noqa: E402
from remote_helpers import CHILD_TIMEOUT_S, child, served_in_process  # noqa: E402

POINTS = 120


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with served_in_process(tmp_path_factory.mktemp("remote-calls-user"), "rpcalls") as server:
        yield server


@pytest.fixture
def remote(served):
    with rpl_noqt.connect(served.url, io_timeout=5) as session:
        session.pyrpl.networkanalyzer.setup(start_freq=2e3, stop_freq=2e5, points=POINTS, rbw=1000,
                                            average_per_point=1, trace_average=1, input="in1",
                                            output_direct="out1", amplitude=0.1, logscale=True)
        yield session


def _na_iq(served):
    return served.session.pyrpl.networkanalyzer.iq  # the IQ module the board's NA drives


def test_progress_reaches_the_client_and_ends_at_one(remote):
    reports: list[dict] = []
    call = remote.pyrpl.networkanalyzer.single.submit(on_progress=reports.append)
    data = call.result(timeout=60)
    assert data.shape == (POINTS,)
    assert wait_until(lambda: reports and reports[-1]["fraction"] == 1.0, 2)
    done = [r["done"] for r in reports]
    assert done == sorted(done) and reports[-1]["done"] == reports[-1]["total"] == POINTS
    assert len(reports) >= 2  # reports while it ran, not only the last
    assert all(r["module"] == "networkanalyzer" and r["method"] == "single" for r in reports)
    assert call.progress == reports[-1]
    assert call.cancel() is False  # done: nothing to cancel


def test_cancel_mid_sweep_leaves_the_board_stopped(remote, served):
    call = remote.pyrpl.networkanalyzer.single.submit()
    assert wait_until(lambda: call.progress is not None and call.progress["done"] >= 10, 30), call.progress
    t0 = time.monotonic()
    assert call.cancel() is True
    with pytest.raises(CallCancelledError) as info:
        call.result(timeout=10)
    elapsed = time.monotonic() - t0
    error = info.value
    assert error.module == "networkanalyzer" and error.method == "single"
    assert 10 <= error.done < POINTS and error.total == POINTS
    assert "networkanalyzer.single() cancelled" in str(error)
    assert elapsed < 2.0, elapsed
    # stopped as PyRPL's stop() leaves it, read through the remote session and on the board itself
    assert remote.pyrpl.networkanalyzer.running_state == "stopped"
    iq_name = _na_iq(served).name
    assert getattr(remote.rp, iq_name).amplitude == 0.0
    # the board stays usable: a full sweep right after
    assert remote.pyrpl.networkanalyzer.single(timeout=60).shape == (POINTS,)


def test_a_cancel_that_overtakes_the_call_cancels_it_before_it_touches_the_board(remote):
    call = remote.pyrpl.networkanalyzer.single.submit()
    call.cancel()  # most likely before the server started it: the server keeps the cancel for it
    with pytest.raises(CallCancelledError):
        call.result(timeout=30)
    assert remote.pyrpl.networkanalyzer.running_state == "stopped"


def test_ctrl_c_while_waiting_cancels_on_the_server(remote, served):
    """KeyboardInterrupt in the thread blocked in single(): the server stops the sweep too."""
    remote.pyrpl.networkanalyzer.points = 2000  # seconds: the interrupt comes while it runs
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            remote.pyrpl.networkanalyzer.single(timeout=60)
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 5
    assert wait_until(lambda: remote.pyrpl.networkanalyzer.running_state == "stopped", 5)
    assert getattr(remote.rp, _na_iq(served).name).amplitude == 0.0
    remote.rp.pid0.setpoint = 0.01  # the session still works
    assert remote.rp.pid0.setpoint == pytest.approx(0.01, abs=1e-3)


OTHER = r"""
import json, sys
import rpl_noqt
with rpl_noqt.connect(sys.argv[1], io_timeout=5) as r:
    print(json.dumps({"cancelled": r._request("cancel_call", {"call_id": sys.argv[2]})[0]}), flush=True)
"""


def test_another_client_cannot_cancel_my_call(remote):
    call = remote.pyrpl.networkanalyzer.single.submit()
    assert wait_until(lambda: call.progress is not None, 30)
    other = child(OTHER, remote.url, call.id)
    out, err = other.communicate(timeout=CHILD_TIMEOUT_S)
    assert other.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"cancelled": False}
    assert call.result(timeout=60).shape == (POINTS,)  # ran to the end


def test_submit_checks_arguments_before_sending(remote):
    with pytest.raises(RemoteNameError, match="timeout"):
        remote.pyrpl.networkanalyzer.single.submit(tiemout=3)
    with pytest.raises(RemoteNameError, match="short call"):
        remote.rp.asg0.setup.submit(frequency=1e3)
    with pytest.raises(TypeError, match="on_progress"):
        remote.pyrpl.networkanalyzer.single.submit(on_progress=3)


def test_board_dropping_mid_sweep_ends_the_call_with_the_board_error(remote, served):
    call = remote.pyrpl.networkanalyzer.single.submit()
    assert wait_until(lambda: call.progress is not None, 30)
    served.sim.faults.garble = 10_000
    try:
        with pytest.raises(BoardConnectionError):
            call.result(timeout=20)
    finally:
        served.sim.faults.clear()
    remote.pyrpl.networkanalyzer.stop()
    assert remote.pyrpl.networkanalyzer.single(timeout=60).shape == (POINTS,)


def test_sets_and_gets_are_served_while_a_sweep_runs(remote):
    remote.pyrpl.networkanalyzer.points = 2000  # a sweep of a few seconds
    call = remote.pyrpl.networkanalyzer.single.submit()
    assert wait_until(lambda: call.progress is not None, 30)
    remote.rp.pid0.setpoint = 0.05
    assert remote.rp.pid0.setpoint == pytest.approx(0.05, abs=1e-3)
    assert not call.done()  # served between the sweep's points, not after it
    assert call.progress["done"] < 2000
    call.cancel()
    with pytest.raises(CallCancelledError):
        call.result(timeout=30)


def test_the_last_progress_report_counts_even_when_it_comes_after_the_result(remote, served, monkeypatch):
    """Progress travels on LECO's data protocol, the result as the reply: the final report may
    come second (it did under load in CI). Delay it on purpose: the call still gets it."""
    publisher = served.publisher
    original = publisher.publish

    def late_final(suffix, data, frames=None):
        if suffix == "calls" and data.get("progress", {}).get("fraction") == 1.0:
            threading.Timer(0.3, original, args=(suffix, data, frames)).start()
        else:
            original(suffix, data, frames)

    monkeypatch.setattr(publisher, "publish", late_final)
    reports: list[dict] = []
    call = remote.pyrpl.networkanalyzer.single.submit(on_progress=reports.append)
    call.result(timeout=60)
    assert not reports or reports[-1]["fraction"] < 1.0  # the result came first
    assert wait_until(lambda: reports and reports[-1]["fraction"] == 1.0, 5), reports[-1:]
