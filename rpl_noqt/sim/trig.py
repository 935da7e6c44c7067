"""Trigger module, ``red_pitaya_trigger_block.v`` (slot 3).

A Schmitt trigger on the (full-rate) input; a write to 0x100 re-arms it, a
trigger disarms it unless ``auto_rearm``.  On a trigger it takes a timestamp
(0x164) and latches the phase of asg0 (its table pointer, 14 bits) plus
``phase_offset``; ``output_signal`` is either the one-cycle TTL pulse (so the
sampler practically always reads 0) or the latched phase.  The scope uses the
trigger events as trigger source ``dsp`` (10).

Triggers are searched lazily, at 8 ns resolution, in the window since the last
search; a long idle window is searched at its start and at its end only
(``SEARCH_SAMPLES`` each), which is enough for any periodic input above ~500 Hz.
"""

from __future__ import annotations

import numpy as np

from .dsp import DspBlock, EvalContext
from .edges import all_edges
from .signals import CODES_PER_VOLT, CYCLE, signed

FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 1, 5, 1
SEARCH_SAMPLES = 2**18


class Trig(DspBlock):
    def __init__(self, model, number: int) -> None:
        super().__init__(model, number)
        self.flags = 0  # bit 0 auto_rearm, bit 1 phase_abs
        self.source = 0
        self.output_select = 0
        self.phase_offset = 0
        self.threshold = 0
        self.hysteresis = 20
        self.filter = 0
        self.armed = False
        self.t_search = 0.0
        self.state = -1
        self.timestamp = 0
        self.phase = 0
        self.events: list[float] = []  # recent trigger times, for the scope

    def read(self, offset: int) -> int:
        now = self.model.clock.now()
        if offset in (0x100, 0x164, 0x168, 0x10C) or offset == 0x110:
            self.update(now)
        if offset == 0x15C:
            return self.model.cycles(now) & 0xFFFFFFFF
        if offset == 0x160:
            return self.model.cycles(now) >> 32
        regs = {
            0x100: int(self.armed), 0x104: self.flags, 0x108: self.source, 0x10C: self.output_select,
            0x110: self.phase_offset, 0x118: self.threshold, 0x11C: self.hysteresis, 0x120: self.filter,
            0x164: self.timestamp & 0xFFFFFFFF, 0x168: self.timestamp >> 32,
            0x220: FILTERSTAGES, 0x224: FILTERSHIFTBITS, 0x228: FILTERMINBW,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        now = self.model.clock.now()
        self.update(now)
        if offset == 0x100:
            self.armed = True
            self.t_search = now
        elif offset == 0x104:
            self.flags = value & 0x3
        elif offset == 0x108:
            self.source = value & 0x3
        elif offset == 0x10C:
            self.output_select = value & 0xF
        elif offset == 0x110:
            self.phase_offset = value & 0x3FFF
        elif offset == 0x118:
            self.threshold = value & 0x3FFF
        elif offset == 0x11C:
            self.hysteresis = value & 0x3FFF
        elif offset == 0x120:
            self.filter = value & 0xFFFFFFFF

    # -- trigger search -------------------------------------------------------
    def _edges(self, t0: float, n: int) -> np.ndarray:
        t = t0 + CYCLE * np.arange(n)
        x = self.model.bus.input_of(self.number, t, EvalContext(self.model.rng))
        th = signed(self.threshold, 14) / CODES_PER_VOLT
        hy = (self.hysteresis & 0x3FFF) / CODES_PER_VOLT
        hits: list[np.ndarray] = []
        state = self.state
        for positive, bit in ((True, 1), (False, 2)):
            if self.source & bit:
                found, st = all_edges(x, th, hy, positive, state if positive else -1)
                hits.append(found)
                if positive:
                    self.state = st
        if not hits:
            return np.zeros(0)
        return t[np.unique(np.concatenate(hits))]

    def update(self, now: float) -> None:
        """Find trigger events between the last search and ``now``."""
        if not self.armed or self.source == 0 or now <= self.t_search:
            self.t_search = max(self.t_search, now)
            return
        n_total = int((now - self.t_search) / CYCLE)
        windows = [(self.t_search, min(n_total, SEARCH_SAMPLES))]
        if n_total > SEARCH_SAMPLES:
            windows.append((now - SEARCH_SAMPLES * CYCLE, SEARCH_SAMPLES))
        self.t_search = now
        for i, (t0, n) in enumerate(windows):
            if i:
                self.state = -1
            times = self._edges(t0, n)
            if len(times) == 0:
                continue
            chosen = times[-1] if self.flags & 1 else times[0]
            self._fire(float(chosen))
            self.events = [float(x) for x in times[-64:]]
            if not self.flags & 1:
                self.armed = False
                return

    def _fire(self, t: float) -> None:
        self.timestamp = self.model.cycles(t)
        pointer = self.model.asg[0].table_index(t)
        phase = (pointer + self.phase_offset) & 0x3FFF
        if self.flags & 2 and phase & 0x2000:
            phase = (-signed(phase, 14)) & 0x3FFF
        self.phase = phase

    def first_event(self, t_from: float, t_to: float) -> float | None:
        """First trigger time in ``[t_from, t_to]`` (used by the scope source 'dsp')."""
        self.update(t_to)
        for t in self.events:
            if t_from <= t <= t_to:
                return t
        return None

    # -- signals ----------------------------------------------------------------
    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        if self.output_select == 1:
            if self.armed and np.size(t):
                # the phase latched by a trigger up to the instant asked for
                # (a sampler read is the only access right after arming)
                self.update(min(float(np.max(t)), self.model.clock.now()))
            return np.full(np.shape(t), signed(self.phase, 14) / CODES_PER_VOLT)
        return np.zeros(np.shape(t))

    def fallback(self, t: np.ndarray, ctx: EvalContext | None = None) -> np.ndarray:
        return np.zeros(np.shape(t))

