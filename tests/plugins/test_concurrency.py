"""The issue's endurance test: the scope grabs continuously while the ASG and the PID move, >= 20 s.

Three PyMoDAQ control modules, three worker QThreads, one board: every
frame must be a clean 16384-point curve of what was commanded, every move
must report the value the board took, and nothing may log an error or a
protocol desync ("Wrong control sequence").
"""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np
import pytest
from pmd_helpers import GRAB_TIMEOUT_MS, MOVE_TIMEOUT_MS, set_setting

from rpl_noqt.analysis import fit_sine

pytestmark = [pytest.mark.qt, pytest.mark.slow]

DURATION_S = 20.0
FREQUENCIES = (1000.0, 1700.0, 2900.0, 4100.0)
SETPOINTS = (0.3, -0.2, 0.1, -0.35)
# Amounts of work, not rates: the test runs for DURATION_S *and* until these are
# done, however slow the machine (measured here in the 20 s: 40-60 rounds and
# 45-77 frames without load, about 40 and 40 with a CPU hog on the other core,
# 18 rounds with three hogs); TIME_LIMIT_S
# bounds it, so a stall still fails.
MIN_ROUNDS = 20  # move rounds: both actuators moved at once, each in its thread
MIN_FRAMES = 20
TIME_LIMIT_S = 100.0
# "Continuously", counted in the other threads' progress instead of seconds: the
# scope thread stalled (or starved by the actuators) shows as many move rounds
# without a frame, the reverse as many frames without a round. About 1 frame per
# round here, idle or loaded; the old 3 s wall-clock bound was about 9 rounds.
MAX_ROUNDS_WITHOUT_FRAME = 8
MAX_FRAMES_WITHOUT_ROUND = 8
GRAB_WAIT_S = 30.0  # the scope plugin's trigger timeout here


@pytest.mark.timeout(TIME_LIMIT_S + 60)
def test_scope_grabs_while_asg_and_pid_move_for_20_s(qtbot, modules, error_log) -> None:
    # A grab that outlasts its trigger timeout (2 s by default, wall clock) stops the
    # continuous grab; with the trigger 'immediately' that is only the machine's speed
    # (seen with a CPU hog beside other work). A stuck scope still shows: as move
    # rounds without a frame, and after this long as a grab that stopped by itself.
    scope = modules.viewer("RplScope", "DAQ1D", "scope", settings={("trigger_timeout",): GRAB_WAIT_S})
    asg = modules.move("RplAsg", "asg", axis="asg0")
    pid = modules.move("RplPid", "pid", axis="pid0")
    board = scope.controller_and_thread.controller
    for name, value in (("input", "in2"), ("output_direct", "out2"), ("p", 0.0), ("i", -1000.0)):
        set_setting(qtbot, pid, (name,), value,
                    until=lambda n=name, v=value: getattr(board.rp.pid0, n) == v if isinstance(v, str)
                    else abs(getattr(board.rp.pid0, n) - v) < 1e-3 * max(1, abs(v)))

    frames: list[tuple[float, float, float, bool]] = []  # (arrival, ch1 frequency, ch2 amplitude, clean)

    def on_frame(dte) -> None:
        data = dte[0]
        times = data.axes[0].get_data()
        ch1, ch2 = data.data
        clean = (times.shape == ch1.shape == ch2.shape == (2**14,)
                 and bool(np.all(np.isfinite(ch1))) and bool(np.all(np.isfinite(ch2))))
        frames.append((time.monotonic(), fit_sine(times, ch1).frequency, float(np.ptp(ch2)) / 2, clean))

    scope.grab_done_signal.connect(on_frame)
    grab_states: list[bool] = []
    scope.grab_status.connect(grab_states.append)
    asg_reached, pid_reached = [], []
    rounds_done: list[float] = []  # when each move round completed
    with qtbot.waitSignal(scope.grab_status, timeout=GRAB_TIMEOUT_MS, check_params_cb=lambda on: on):
        scope.grab_data(True)
    start = time.monotonic()
    try:
        for frequency, setpoint in itertools.cycle(zip(FREQUENCIES, SETPOINTS)):
            elapsed = time.monotonic() - start
            frames_so_far = sum(1 for f in frames if f[0] >= start)
            if elapsed >= DURATION_S and len(rounds_done) >= MIN_ROUNDS and frames_so_far >= MIN_FRAMES:
                break
            if not (grab_states and grab_states[-1]):
                break  # the grab ended by itself: reported below
            assert elapsed < TIME_LIMIT_S, (f"stalled: {len(rounds_done)} move rounds and {frames_so_far} frames "
                                            f"in {elapsed:.0f} s")
            # both moves run at once, each in its module's thread, while the scope grabs in its own
            with qtbot.waitSignals([asg.move_done_signal, pid.move_done_signal], timeout=MOVE_TIMEOUT_MS):
                asg.move_abs(frequency)
                pid.move_abs(setpoint)
            asg_reached.append((frequency, board.rp.asg0.frequency))
            pid_reached.append((setpoint, board.rp.pid0.setpoint))
            rounds_done.append(time.monotonic())
    finally:
        still_grabbing = bool(grab_states) and grab_states[-1]
        if still_grabbing:
            with qtbot.waitSignal(scope.grab_status, timeout=GRAB_TIMEOUT_MS, check_params_cb=lambda on: not on):
                scope.stop_grab()
    elapsed = time.monotonic() - start

    assert still_grabbing, "the scope stopped grabbing by itself (a grab timed out? see the log)"
    assert elapsed >= DURATION_S
    assert not error_log.messages(), error_log.messages()
    assert len(asg_reached) >= MIN_ROUNDS
    for wanted, reached in asg_reached:
        assert reached == pytest.approx(wanted, abs=0.12)
    for wanted, reached in pid_reached:
        assert reached == pytest.approx(wanted, abs=2e-4)

    during = [f for f in frames if start <= f[0] <= start + elapsed]
    logging.getLogger(__name__).info("%d frames, %d moves of each actuator in %.1f s", len(during),
                                     len(asg_reached), elapsed)
    # "grabs continuously while they move": frames and move rounds interleave all
    # along (the rates themselves are benchmark numbers, not a test)
    assert len(during) >= MIN_FRAMES
    arrivals = [f[0] for f in during]
    rounds_between = [sum(1 for r in rounds_done if a < r <= b)
                      for a, b in zip([start, *arrivals], [*arrivals, start + elapsed], strict=True)]
    frames_between = [sum(1 for f in arrivals if a < f <= b)
                      for a, b in zip([start, *rounds_done], [*rounds_done, start + elapsed], strict=True)]
    assert max(rounds_between) <= MAX_ROUNDS_WITHOUT_FRAME, f"{max(rounds_between)} move rounds without a frame"
    assert max(frames_between) <= MAX_FRAMES_WITHOUT_ROUND, f"{max(frames_between)} frames without a move round"
    assert all(clean for *_, clean in during)
    assert all(0.49 <= amplitude <= 0.51 for _, _, amplitude, _ in during)  # asg0 itself on ch2
    # a curve spanning a frequency change fits neither value; all others show a commanded frequency
    matching = [f for f in during if any(abs(f[1] / w - 1) < 1e-3 for w, _ in asg_reached)]
    assert len(matching) >= 0.8 * len(during), f"{len(matching)} of {len(during)} frames show a set frequency"
    frequencies_seen = {min(FREQUENCIES, key=lambda w: abs(f[1] - w)) for f in matching}
    assert frequencies_seen == set(FREQUENCIES)

    # afterwards everything still answers: the lock followed the last setpoint
    last = pid_reached[-1][1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and abs(board.rp.sampler.in2 - last) > 0.005:
        qtbot.wait(20)
    assert board.rp.sampler.in2 == pytest.approx(last, abs=0.005)
