"""The simulated Red Pitaya that plugins use when their host is ``"simulator"``.

One simulator per process, started by its first user and stopped (thread
joined) when its last user releases it, so a dashboard with no hardware shows
live data and leaves nothing running after its plugins close. Each lease is
one :func:`acquire` balanced by one :func:`release`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from .options import SCOPE_DURATIONS

__all__ = ("SIMULATOR_HOST", "SimulatorLease", "acquire", "apply_demo_signals", "release", "simulator", "users")

logger = logging.getLogger(__name__)

#: The host name that selects the on-demand simulator (compared case-insensitively).
SIMULATOR_HOST = "simulator"

_lock = threading.Lock()
_simulator: Any = None
_users = 0


@dataclass(frozen=True)
class SimulatorLease:
    """Where the shared simulator listens, and whether this lease started it."""

    host: str
    port: int
    fresh: bool


def acquire(noise: float = 0.0) -> SimulatorLease:
    """Start the shared simulator if needed and count one more user.

    ``noise`` (V rms) is put on both out -> in cables when the simulator starts;
    it makes traces visibly live.
    """
    global _simulator, _users
    from rpl_noqt.sim import Simulator

    with _lock:
        fresh = _simulator is None
        if fresh:
            sim = Simulator()
            sim.start()
            if noise:
                for channel in (1, 2):
                    sim.model.set_loopback(channel, noise=noise)
            _simulator = sim
            logger.info("started the on-demand simulator on %s:%d", sim.host, sim.port)
        _users += 1
        return SimulatorLease(_simulator.host, _simulator.port, fresh)


def release() -> None:
    """Count one user less; the last release stops the simulator and joins its thread."""
    global _simulator, _users
    with _lock:
        if _users == 0:
            raise RuntimeError("the on-demand simulator was released more often than acquired")
        _users -= 1
        if _users:
            return
        sim, _simulator = _simulator, None
    sim.stop()
    logger.info("stopped the on-demand simulator")


def users() -> int:
    """How many leases are held (0: no simulator runs)."""
    with _lock:
        return _users


def simulator() -> Any:
    """The running shared :class:`rpl_noqt.sim.Simulator`, or None (for tests and diagnostics)."""
    with _lock:
        return _simulator


def apply_demo_signals(rp: Any) -> None:
    """Give a fresh simulator something to look at: a 1 kHz, 0.5 V sine on out1 (looped back to in1).

    The scope is set to show 8.4 ms (decimation 64) of it on both channels (in1
    and the generator itself), triggered immediately. Only done on a simulator
    that this process just started, never on a board.
    """
    rp.asg0.setup(waveform="sin", frequency=1e3, amplitude=0.5, offset=0.0,
                  trigger_source="immediately", output_direct="out1")
    rp.scope.setup(input1="in1", input2="asg0", duration=SCOPE_DURATIONS[6], trigger_source="immediately",
                   average=True, trace_average=1, rolling_mode=False)
