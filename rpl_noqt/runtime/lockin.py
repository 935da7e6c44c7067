"""``Iq.lockin_xy()``: one lock-in reading of an IQ module, a public method rpl-noqt adds to PyRPL's ``Iq``.

PyRPL 0.9.9.1's IQ module has an accumulator (the network analyzer's) that
sums the demodulated quadratures over a set number of cycles, but it offers
it only through private members (``_na_averages``, ``_na_sleepcycles``,
``_nadata``) or through ``na_trace()``, a sweep that rewrites the module's
setup (phase 0, ``output_signal``, amplitude) and switches the excitation off
when it ends. A lock-in reading needs neither: :func:`lockin_xy` reads the
accumulator once and leaves every setting as it was.

It is added to the class when PyRPL's ``pyrpl.hardware_modules.iq`` is
imported through an activated rpl-noqt (recorded in
:func:`rpl_noqt.patch_record`, removed by :func:`rpl_noqt.deactivate`), so
in-process code calls ``rp.iq0.lockin_xy(0.01)``, and a board server offers
the same method by name in its registry (``METHODS["Iq"]``): a remote client
gets the same numbers without reaching anything private.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import types
from typing import Any

import numpy as np

from . import blocking
from .patching import PatchRecord

__all__ = ("CLOCK_HZ", "install", "lockin_xy")

logger = logging.getLogger(__name__)

#: FPGA clock: one accumulator cycle
CLOCK_HZ = 125e6
#: shortest and longest integration a reading takes (s)
INTEGRATION_LIMITS = (1e-6, 10.0)
#: settling before the sum starts, in time constants of the first quadrature filter
_SETTLE_TIME_CONSTANTS = 2.0
#: bandwidth assumed when the quadrature filter is off (0 Hz)
_UNFILTERED_BANDWIDTH_HZ = 1e3
#: polls of the accumulator's ready bits after the expected end (1 ms apart)
_READY_POLLS = 100
_RUN_LOCK_ATTR = "_rpl_noqt_lockin_lock"
_RUN_LOCK_LOCK = threading.Lock()


def _signed62(value: int) -> int:
    """Two's complement of a 62-bit integer."""
    return value - (1 << 62) if value & (1 << 61) else value


def _run_lock(module: Any) -> threading.Lock:
    lock = module.__dict__.get(_RUN_LOCK_ATTR)
    if lock is None:
        with _RUN_LOCK_LOCK:
            lock = module.__dict__.setdefault(_RUN_LOCK_ATTR, threading.Lock())
    return lock


def lockin_xy(self: Any, integration_time: float = 0.01) -> np.ndarray:
    """Demodulate for ``integration_time`` s; returns ``[X, Y]`` (float64, volts at the DSP input).

    The module's input component at its ``frequency``, as the two quadratures
    after its quadrature filters: the accumulator waits two time constants
    of the first filter stage (settling), then sums ``integration_time`` x
    125 MHz cycles. Nothing of the module's setup changes (the accumulator's
    own registers are written, and the frequency is written back unchanged,
    which restarts it). Volts are those PyRPL reports for the input signal
    (in1/in2 at the ADC: the input jumper's x20 is not known here). Phases
    include the module's pipeline delay. Readings of one module queue; the
    board is free for others while the accumulator runs.
    """
    if isinstance(integration_time, bool) or not isinstance(integration_time, (int, float, np.floating, np.integer)):
        raise TypeError(f"integration_time must be a number of seconds, got {integration_time!r}")
    integration_time = float(integration_time)
    low, high = INTEGRATION_LIMITS
    if not (math.isfinite(integration_time) and low <= integration_time <= high):
        raise ValueError(f"integration_time = {integration_time!r} s is out of range; allowed: {low:g} to {high:g} s")
    from .threadsafe import board_lock  # local: threadsafe imports PyRPL-facing machinery

    run_lock = _run_lock(self)
    with blocking.released_locks():  # wait for another reading without holding the board
        run_lock.acquire()
    try:
        board = board_lock(self)
        if board is not None:
            board.acquire()
        try:  # one step: nobody changes the module between reading the filter and restarting
            bandwidth = abs(float(self.bandwidth[0])) or _UNFILTERED_BANDWIDTH_HZ
            averages = max(1, int(round(integration_time * CLOCK_HZ)))
            sleep_cycles = int(round(_SETTLE_TIME_CONSTANTS / bandwidth * CLOCK_HZ))
            self._na_averages = averages
            self._na_sleepcycles = sleep_cycles
            self.frequency = self.frequency  # writing the frequency restarts the accumulator
            lpf_bits = int(self._LPFBITS)
        finally:
            if board is not None:
                board.release()
        with blocking.released_locks():
            time.sleep((averages + sleep_cycles) / CLOCK_HZ + 2e-3)
            total = None
            for _ in range(_READY_POLLS):  # normally ready at once; bounded in case the board is slow
                a, b, c, d = (int(w) for w in self._reads(0x140, 4))
                if not (a >> 31 or b >> 31 or c >> 31 or d >> 31):
                    total = (_signed62(a + (b << 31)), _signed62(c + (d << 31)))
                    break
                time.sleep(1e-3)
    finally:
        run_lock.release()
    if total is None:
        raise TimeoutError(f"{self.name}: the lock-in accumulator did not finish "
                           f"({_READY_POLLS} ms after the expected end)")
    scale = 4.0 / 2**lpf_bits / averages  # 4: the FPGA's scaling of the accumulator
    return np.array([total[0] * scale, total[1] * scale], dtype=np.float64)


def _patch_iq(module: types.ModuleType, record: PatchRecord) -> None:
    cls = module.Iq
    if record.is_patched(cls, "lockin_xy"):
        return
    if "lockin_xy" in vars(cls):  # a PyRPL that has its own: leave it
        logger.warning("pyrpl's Iq already has lockin_xy: rpl-noqt's is not installed")
        return
    record.patch_attribute(cls, "lockin_xy", lockin_xy,
                           "added: one lock-in reading of the IQ accumulator, settings untouched "
                           "(public, so a board server can offer it)")


def install(redirector: Any, record: PatchRecord) -> None:
    """Add :func:`lockin_xy` to PyRPL's ``Iq`` when its module is imported."""
    redirector.when_imported("pyrpl.hardware_modules.iq", lambda m: _patch_iq(m, record))
