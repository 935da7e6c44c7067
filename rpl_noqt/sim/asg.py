"""Arbitrary signal generator, ``red_pitaya_asg.v`` + ``red_pitaya_asg_ch.v``.

Register map (channel b adds 0x20 to the value registers and 16 to the control
bits): 0x0 control word ``[2:0]`` trigger source, bit 4 wrap, 5 once, 6 state
machine reset, 7 zero output (``on`` inverted), 8 gated repetitions, 9..11
advanced trigger, 12 random pointer (noise); 0x4 amplitude ``[13:0]`` and offset
``[29:16]``; 0x8 counter wrap ("size"); 0xC start pointer; 0x10 step (frequency);
0x18 cycles per burst; 0x1C bursts; 0x20 delay between bursts (us); 0x114 pointer
at the last scope trigger; 0x10000/0x20000 the 2**14-word tables.

The read pointer is a 30-bit phase accumulator: after a trigger it starts at
the start pointer and advances by ``step`` every cycle modulo ``size + 1``; the
table index is ``pointer >> 16``; output is ``sat14(table * amp / 2**13 + offset)``.
A trigger arrives when the control word is written with source 1 and bit 0 set
(software trigger, PyRPL's ``immediately``), or continuously with source 5.
With ``cycles_per_burst`` N > 0 the generator stops after N wraps and holds the
last value, and restarts ``bursts`` more times after ``delay`` microseconds.
Everything is evaluated in closed form (integer arithmetic on the cycle number),
so any time can be queried in O(1) per sample.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .signals import CYCLE, Spectrum, V_MAX, signed

if TYPE_CHECKING:
    from .fpga import FpgaModel

ASG_BASE = 0x40200000
TABLE_SIZE = 2**14
RSZ = 14
MAX_HARMONICS = 32


class AsgChannel:
    """One channel of the generator (``channel`` 0 = asg0, 1 = asg1)."""

    def __init__(self, model: FpgaModel, channel: int) -> None:
        self.model = model
        self.channel = channel
        self.ctrl = 1 << 9  # this channel's control bits; at_reset (bit 9) is set at reset
        self.amp = 0x2000
        self.dc = 0
        self.size = 2 ** (RSZ + 16) - 1
        self.ofs = 0
        self.step = 0
        self.ncyc = 0
        self.rnum = 0
        self.rdly = 0
        self.at_counts = 0
        self.table = np.zeros(TABLE_SIZE, dtype=np.int64)
        self.table_version = 0
        self.started = False
        self.t0 = 0.0
        self.p0 = 0
        self.reps = 0  # extra bursts after the first; -1 = forever
        self.hold = 0
        self.trig_pointer = TABLE_SIZE - 1
        self._spectrum_cache: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None
        self._volts_cache: tuple[tuple, np.ndarray, np.ndarray] | None = None
        self._phasor_cache: tuple[tuple[int, float], float, np.ndarray, np.ndarray, float] | None = None
        self.noise_key = int(model.rng.integers(0, 2**63))

    # -- control bits ------------------------------------------------------------
    @property
    def source(self) -> int:
        return self.ctrl & 0x7

    @property
    def reset(self) -> bool:
        return bool(self.ctrl >> 6 & 1)

    @property
    def zero(self) -> bool:
        return bool(self.ctrl >> 7 & 1)

    @property
    def random(self) -> bool:
        return bool(self.ctrl >> 12 & 1)

    @property
    def modulus(self) -> int:
        return self.size + 1

    # -- register writes ----------------------------------------------------------
    def write_ctrl(self, bits: int, now: float) -> None:
        """Write this channel's 16-bit field of the control word."""
        self._reanchor(now)
        sw = bool(bits & 1)
        self.ctrl = bits & 0x1FF7
        if self.reset:
            self.started = False
            self.hold = self.ofs
            return
        if (self.source == 1 and sw) or self.source == 5:
            self._trigger(now)

    def external_trigger(self, t: float) -> None:
        """An accepted DIO0_P edge with source 2 (``ext_positive_edge``) or 3 (``ext_negative_edge``), ``dio.py``."""
        if not self.reset:
            self._trigger(t)

    def raw_level(self, t: float, level: bool) -> None:
        """DIO0_P changed with source 4 (``ext_raw``: ``trig_in`` is the level, asg_ch.v line 189).

        High: like source 5 while it stays high.  Low: a generator running in
        bursts finishes the one it is in (``cycles_per_burst`` 0 runs on).
        """
        if self.reset:
            return
        if level:
            self._trigger(t)
            if self.started:
                self.reps = -1
        elif self.started and self.reps == -1 and self.ncyc and self.step:
            n = int((t - self.t0) / CYCLE)
            gap = self.rdly * 125 + 1
            m = n - self._burst_cycles(self.p0) - gap
            self.reps = 0 if m < 0 else m // (self._burst_cycles(self.ofs) + gap) + 1

    def _trigger(self, now: float) -> None:
        if self.is_running(now):
            if self.ncyc:  # RTL reloads the cycle counter, the pointer keeps going
                self.p0 = int(self.pointer(np.array([now]))[0])
                self.t0 = now
            return
        self.started = True
        self.t0 = now
        self.p0 = self.ofs
        self.reps = -1 if self.source == 5 else self.rnum

    def _reanchor(self, now: float) -> None:
        """Keep the phase continuous when step/size change while running."""
        if self.started and self.is_running(now) and (self.ncyc == 0):
            self.p0 = int(self.pointer(np.array([now]))[0])
            self.t0 = now

    def write(self, offset: int, value: int, now: float) -> None:
        """Value registers, ``offset`` relative to this channel's block."""
        if offset == 0x4:
            self.amp = value & 0x3FFF
            self.dc = signed(value >> 16, 14)
        elif offset == 0x8:
            self._reanchor(now)
            self.size = value & (2 ** (RSZ + 16) - 1)
        elif offset == 0xC:
            self.ofs = value & (2 ** (RSZ + 16) - 1)
        elif offset == 0x10:
            self._reanchor(now)
            self.step = value & (2 ** (RSZ + 16) - 1)
        elif offset == 0x18:
            self.ncyc = value & 0xFFFFFFFF
        elif offset == 0x1C:
            self.rnum = value & 0xFFFF
        elif offset == 0x20:
            self.rdly = value & 0xFFFFFFFF

    _REGISTERS = {0x8: "size", 0xC: "ofs", 0x10: "step", 0x18: "ncyc", 0x1C: "rnum", 0x20: "rdly"}

    def read(self, offset: int) -> int:
        name = self._REGISTERS.get(offset)
        if name is not None:
            return getattr(self, name)
        if offset == 0x4:
            return ((self.dc & 0x3FFF) << 16) | self.amp
        return 0

    def write_table(self, index: int, values: np.ndarray) -> None:
        end = min(TABLE_SIZE, index + len(values))
        codes = np.asarray(values[: end - index], dtype=np.int64) & 0x3FFF
        self.table[index:end] = np.where(codes >= 2**13, codes - 2**14, codes)
        self.table_version += 1

    # -- time behaviour --------------------------------------------------------------
    def _burst_cycles(self, start: int) -> int:
        return max(1, math.ceil((self.ncyc * self.modulus - start) / self.step))

    def is_running(self, now: float) -> bool:
        if not self.started or self.reset:
            return False
        if self.ncyc == 0 or self.step == 0 or self.reps == -1:
            return True
        n = int((now - self.t0) / CYCLE)
        nb1 = self._burst_cycles(self.p0)
        if n < nb1:
            return True
        if self.reps <= 0:
            return False
        nb2 = self._burst_cycles(self.ofs)
        period = nb2 + self.rdly * 125 + 1
        m = n - nb1 - self.rdly * 125 - 1
        return m < 0 or m // period < self.reps

    def pointer(self, t: np.ndarray) -> np.ndarray:
        """The 30-bit read pointer at model times ``t``."""
        t = np.asarray(t, dtype=float)
        if not self.started or self.reset:
            return np.full(t.shape, self.hold, dtype=np.int64)
        M, step = self.modulus, self.step
        n = np.floor((t - self.t0) / CYCLE).astype(np.int64)
        n = np.maximum(n, 0)
        p = (self.p0 + (n % M) * step) % M
        if self.ncyc == 0 or step == 0:
            return p
        nb1 = self._burst_cycles(self.p0)
        hold1 = (self.p0 + nb1 * step - self.ncyc * M) % M
        p = np.where(n < nb1, p, hold1)
        if self.reps != 0:
            gap = self.rdly * 125 + 1
            nb2 = self._burst_cycles(self.ofs)
            period = nb2 + gap
            m = n - nb1 - gap
            k = np.floor_divide(m, period)
            r = m - k * period
            valid = m >= 0
            if self.reps > 0:
                valid &= k < self.reps
            in_burst = valid & (r < nb2)
            hold2 = (self.ofs + nb2 * step - self.ncyc * M) % M
            p = np.where(in_burst, (self.ofs + (r % M) * step) % M, np.where(m >= 0, hold2, p))
        return p

    def cycle_start(self, t: np.ndarray) -> np.ndarray:
        """Start of the generator's cycle that holds each time ``t`` (its cycles count from the trigger)."""
        t = np.asarray(t, dtype=float)
        if not self.started or self.reset:
            return t
        return self.t0 + np.maximum(np.floor((t - self.t0) / CYCLE), 0) * CYCLE

    def table_index(self, t: float) -> int:
        return int(self.pointer(np.array([t]))[0] >> 16) & (TABLE_SIZE - 1)

    def _table_volts(self) -> np.ndarray:
        """The table in volts as the output stage scales it; kept until the table, amplitude or offset change."""
        key = (self.table_version, self.amp, self.dc)
        cached = self._volts_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        v = np.floor_divide(self.table * self.amp, 2**13) + self.dc
        volts = np.clip(v, -(2**13), 2**13 - 1) / 2**13
        self._volts_cache = (key, volts, np.minimum(volts, V_MAX))
        return volts

    def _output_volts(self) -> np.ndarray:
        """:meth:`_table_volts` capped at the largest positive sample (what :meth:`output` indexes)."""
        self._table_volts()
        return self._volts_cache[2]  # type: ignore[index]

    def output(self, t: np.ndarray) -> np.ndarray:
        """Output voltage at model times ``t``."""
        t = np.asarray(t, dtype=float)
        if self.zero:
            return np.zeros(t.shape)
        if self.random and self.started and not self.reset:
            idx = self._random_index(t)
        else:
            idx = (self.pointer(t) >> 16) & (TABLE_SIZE - 1)
        return self._output_volts()[idx]

    def _random_index(self, t: np.ndarray) -> np.ndarray:
        """Table index of the noise mode: one pseudo-random index per FPGA cycle.

        A fixed function of the cycle number (a counter-based hash, seeded per
        channel), like the RTL's pseudo-random generator: every reader of this
        output at the same cycle (both scope channels, a module filtering it)
        sees the same sample.
        """
        n = np.floor(np.atleast_1d(t) / CYCLE).astype(np.int64).astype(np.uint64)
        z = n ^ np.uint64(self.noise_key)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(64 - RSZ)).astype(np.int64).reshape(np.shape(t))

    def next_wrap(self, t: float) -> float | None:
        """Time of the first ``trig_done`` pulse at or after ``t``: the trigger that
        started the generator, or a pointer wrap while it runs (what the scope's
        asg trigger sources see)."""
        if not self.started or self.reset:
            return None
        if self.t0 >= t:
            return self.t0
        if not self.is_running(t) or self.step == 0:
            return None
        n_a = max(0, int((t - self.t0) / CYCLE))
        M = self.modulus
        w_a = (self.p0 + n_a * self.step) // M
        n_w = -((-((w_a + 1) * M - self.p0)) // self.step) - 1
        return self.t0 + max(n_w, n_a) * CYCLE

    # -- phasor view ---------------------------------------------------------------
    def spectrum(self) -> Spectrum:
        """The steady-state spectrum now; kept for the rest of the access (same instant, same registers)."""
        now = self.model.clock.now()
        key = (self.model.version, now)
        cached = self._phasor_cache
        if cached is None or cached[0] != key:
            s = self._spectrum(now)
            cached = self._phasor_cache = (key, s.dc, s.freqs, s.amps, s.noise)
        return Spectrum(dc=cached[1], freqs=cached[2].copy(), amps=cached[3].copy(), noise=cached[4])

    def _spectrum(self, now: float) -> Spectrum:
        if self.zero:
            return Spectrum()
        vt = self._table_volts()
        if self.random and self.started and not self.reset:
            return Spectrum(dc=float(vt.mean()), noise=float(vt.std()))
        if not self.is_running(now) or self.step == 0:
            return Spectrum(dc=float(self.output(np.array([now]))[0]))
        harmonics, coefs = self._harmonics(vt)
        f = self.step / (self.modulus * CYCLE)
        phi0 = self.p0 / self.modulus - f * self.t0
        amps = coefs * np.exp(2j * np.pi * harmonics * phi0)
        dc = float(np.real(coefs[0])) if len(harmonics) and harmonics[0] == 0 else 0.0
        keep = harmonics > 0
        return Spectrum(dc=dc, freqs=harmonics[keep] * f, amps=amps[keep])

    def _harmonics(self, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (self.table_version, self.amp, self.dc, self.size)
        if self._spectrum_cache and self._spectrum_cache[0] == key:
            return self._spectrum_cache[1]
        used = max(1, min(TABLE_SIZE, round(self.modulus / 2**16)))
        c = np.fft.rfft(vt[:used]) / used
        c[1:] *= 2.0
        # a table sample is held for [m, m+1) / used of a period: zero-order hold
        k = np.arange(len(c))
        c = c * np.exp(-1j * np.pi * k / used) * np.sinc(k / used)
        mag = np.abs(c)
        order = np.argsort(mag[1:])[::-1][:MAX_HARMONICS] + 1
        order = order[mag[order] > 1e-6 * max(mag.max(), 1e-12)]
        harmonics = np.concatenate([[0], np.sort(order)])
        result = (harmonics.astype(float), c[harmonics])
        self._spectrum_cache = (key, result)
        return result


class Asg:
    """Bus decoder for 0x40200000 (both channels plus the shared control word)."""

    def __init__(self, model: FpgaModel) -> None:
        self.model = model
        self.channels = [AsgChannel(model, 0), AsgChannel(model, 1)]

    def read(self, offset: int) -> int:
        a, b = self.channels
        if offset == 0x0:
            return (b.ctrl << 16) | a.ctrl
        if 0x4 <= offset <= 0x20:
            return a.read(offset)
        if 0x24 <= offset <= 0x40:
            return b.read(offset - 0x20)
        if offset in (0x114, 0x134):
            return self.channels[(offset - 0x114) // 0x20].trig_pointer
        if offset in (0x118, 0x11C, 0x138, 0x13C):
            ch = self.channels[(offset - 0x118) // 0x20]
            return (ch.at_counts >> (32 if offset & 0x4 else 0)) & 0xFFFFFFFF
        if 0x10000 <= offset < 0x30000:
            ch = self.channels[(offset >> 16) - 1]
            return int(ch.table[(offset >> 2) & (TABLE_SIZE - 1)]) & 0x3FFF
        return 0

    def write(self, offset: int, value: int) -> None:
        now = self.model.clock.now()
        a, b = self.channels
        if offset == 0x0:
            a.write_ctrl(value & 0xFFFF, now)
            b.write_ctrl(value >> 16 & 0xFFFF, now)
        elif 0x4 <= offset <= 0x20:
            a.write(offset, value, now)
        elif 0x24 <= offset <= 0x40:
            b.write(offset - 0x20, value, now)
        elif offset in (0x118, 0x11C, 0x138, 0x13C):
            ch = self.channels[(offset - 0x118) // 0x20]
            if offset & 0x4:
                ch.at_counts = (ch.at_counts & 0xFFFFFFFF) | ((value & 0xFFFFFFFF) << 32)
            else:
                ch.at_counts = (ch.at_counts & ~0xFFFFFFFF) | (value & 0xFFFFFFFF)
        elif 0x10000 <= offset < 0x30000:
            self.channels[(offset >> 16) - 1].write_table((offset >> 2) & (TABLE_SIZE - 1), np.array([value]))

    def write_block(self, offset: int, values: np.ndarray) -> bool:
        """Fast path for table uploads; returns False if not a pure table write."""
        if 0x10000 <= offset < 0x30000 and offset % 4 == 0:
            idx = (offset >> 2) & (TABLE_SIZE - 1)
            if idx + len(values) <= TABLE_SIZE:
                self.channels[(offset >> 16) - 1].write_table(idx, values)
                return True
        return False
