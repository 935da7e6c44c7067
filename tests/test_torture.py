"""16 threads hammering one board over real TCP: no desync, no reconnect, no error.

Bounded: RPL_NOQT_TORTURE_SECONDS (default 20) of load, every join has a timeout.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

import pytest

import rpl_noqt

DURATION_S = float(os.environ.get("RPL_NOQT_TORTURE_SECONDS", "20"))

# (module, attribute, low, high, absolute tolerance of the register's quantisation)
# asgN.amplitude and asgN.offset share one 32-bit word (read-modify-write).
# PyRPL's lockbox outputs take ownership of free PIDs and rewrite their
# limits, so the test uses the first 16 candidates on modules nobody owns.
CANDIDATES = [
    ("asg0", "frequency", 10.0, 1e6, 0.12),
    ("asg1", "frequency", 10.0, 1e6, 0.12),
    ("asg0", "offset", -0.9, 0.9, 2e-4),
    ("asg1", "offset", -0.9, 0.9, 2e-4),
    ("asg0", "amplitude", 0.0, 0.9, 2e-4),
    ("asg1", "amplitude", 0.0, 0.9, 2e-4),
    ("pid0", "setpoint", -0.9, 0.9, 2e-4),
    ("pid1", "setpoint", -0.9, 0.9, 2e-4),
    ("pid2", "setpoint", -0.9, 0.9, 2e-4),
    ("pid0", "p", -10.0, 10.0, 1e-3),
    ("pid1", "p", -10.0, 10.0, 1e-3),
    ("pid2", "p", -10.0, 10.0, 1e-3),
    ("iq0", "frequency", 1e3, 1e7, 0.05),
    ("iq1", "frequency", 1e3, 1e7, 0.05),
    ("iq2", "frequency", 1e3, 1e7, 0.05),
    ("pid0", "max_voltage", 0.0, 0.9, 2e-4),
    ("pid1", "max_voltage", 0.0, 0.9, 2e-4),
    ("asg0", "start_phase", 0.0, 359.0, 0.01),
    ("asg1", "start_phase", 0.0, 359.0, 0.01),
    ("iq0", "amplitude", 0.0, 0.9, 2e-4),
    ("iq1", "amplitude", 0.0, 0.9, 2e-4),
]


class _CountErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_sixteen_threads_on_one_board(sim, no_leaked_threads):
    counter = _CountErrors()
    client_logger = logging.getLogger("pyrpl.redpitaya_client")
    client_logger.addHandler(counter)
    session = rpl_noqt.connect(sim.host, sim.port, ssh=False)
    rp = session.rp
    rp.scope.setup(duration=0.001, trigger_source="immediately")
    rp.scope.single(timeout=10)  # warm-up: lets the lockbox claim its PIDs now
    targets = [t for t in CANDIDATES if getattr(rp, t[0]).owner is None][:16]
    assert len(targets) == 16, f"not enough unowned registers: {targets}"
    connections_before = sim.connections
    deadline = time.monotonic() + DURATION_S
    errors: list[str] = []
    mismatches: list[str] = []
    stats = {"writes": 0, "singles": 0, "samples": 0}
    stats_lock = threading.Lock()

    def worker(index: int) -> None:
        module_name, attr, low, high, tol = targets[index]
        module = getattr(rp, module_name)
        rnd = random.Random(index)
        done = {"writes": 0, "singles": 0, "samples": 0}
        try:
            iteration = 0
            while time.monotonic() < deadline:
                iteration += 1
                value = rnd.uniform(low, high)
                setattr(module, attr, value)
                written = value
                read_back = getattr(module, attr)
                if abs(read_back - written) > tol + 1e-6 * abs(written):
                    mismatches.append(f"{module_name}.{attr}: wrote {written}, read {read_back}")
                done["writes"] += 1
                if iteration % 8 == 0:
                    float(rp.sampler.in1)
                    done["samples"] += 1
                if index % 4 == 0 and iteration % 20 == 0:
                    curve = rp.scope.single(timeout=10)
                    assert curve.shape == (2, 16384)
                    done["singles"] += 1
        except BaseException as exc:  # reported and asserted below
            errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        with stats_lock:
            for key, value in done.items():
                stats[key] += value

    threads = [threading.Thread(target=worker, args=(i,), name=f"torture-{i}") for i in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DURATION_S + 60)
        alive = [t.name for t in threads if t.is_alive()]
        assert not alive, f"threads still running: {alive}"
    finally:
        session.close()
        client_logger.removeHandler(counter)

    assert errors == []
    assert mismatches == []
    desyncs = [m for m in counter.messages if "control sequence" in m]
    retries = [m for m in counter.messages if "attempt" in m]
    assert desyncs == [] and retries == [] and counter.messages == []
    assert sim.connections == connections_before, "the client reconnected"
    assert stats["writes"] > 16 * 10 and stats["singles"] > 0 and stats["samples"] > 0
    logging.getLogger(__name__).info("torture: %s in %.0f s", stats, DURATION_S)
