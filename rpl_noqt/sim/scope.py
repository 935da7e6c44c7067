"""Oscilloscope, ``red_pitaya_scope.v`` at 0x40100000.

Write-state machine as in the RTL: writing bit 0 of 0x0 arms (``adc_we`` = 1,
sample counter and decimation restart), bit 1 resets (write pointer,
trigger pointer, trigger source cleared, ``timestamp_trigger`` = now), bit 3 is
``adc_we_keep``.  While armed one sample per ``decimation`` cycles is written
at the write pointer (averaged over the decimation window if 0x28 = 1).  A
trigger is accepted only once ``pretrig_ok`` (more than ``2**14 - delay``
samples written, or ``delay >= 2**14``); it latches ``wp_trig`` (0x1C) and the
trigger timestamp, sets ``dly_do`` (bit 2 of 0x0) and ``delay`` (0x10) more
samples are written; then ``adc_we`` clears (unless ``we_keep``) together with
the trigger source (0x4).  PyRPL rolls the buffer by ``wp_trig + delay + 1``.

Sources (0x4): 1 software ("immediately": the write itself triggers), 2/3 ch1
rising/falling and 4/5 ch2 rising/falling edges (one threshold 0x8 and
hysteresis 0x20 for both channels, as in the shipped RTL), 6/7 rising/falling
edges of the external trigger pin DIO0_P, debounced by 0x90 cycles
(``dio.py``), 8/9 the wrap of asg0/asg1, 10 the trig module.

The buffer is filled lazily: samples are computed with numpy only when a
register or buffer read needs them, from the signal values at the sample times;
an edge trigger is found by scanning the decimated samples since the last scan.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .dsp import EvalContext
from .edges import schmitt
from .signals import CODES_PER_VOLT, CYCLE, phasor_sum, signed, significant, volts_to_code

if TYPE_CHECKING:
    from .fpga import FpgaModel

log = logging.getLogger(__name__)

SCOPE_BASE = 0x40100000
N = 2**14
CHUNK = 2**16
MAX_SCAN = 2**20  # samples scanned for an edge per update (start and end of long idle gaps)
AVG_SUBSAMPLES = 8


class Scope:
    def __init__(self, model: FpgaModel) -> None:
        self.model = model
        # settings (reset values of the RTL)
        self.we_keep = False
        self.trig_src = 0
        self.threshold = 0
        self.hysteresis = 20
        self.set_dly = 2 ** (14 - 1)
        self.set_dec = 0x2000
        self.avg = False
        self.deb_len = 62500
        # buffer and pointers
        self.buf = np.zeros((2, N), dtype=np.uint32)
        self.wp = 0  # next address to write
        self.wp_cur = 0
        self.wp_trig = 0
        self.ts_trig = 0
        self.we_cnt = 0
        # acquisition epoch (since the last arm)
        self.armed = False
        self.t_arm = 0.0
        self.wp0 = 0
        self.k_mat = 0  # samples of this epoch already in the buffer
        self.k_stop: int | None = None  # last sample index written in this epoch
        self.k_trig: int | None = None
        self.t_trig: float | None = None
        self.k_search = 0
        self.schmitt_state = -1
        self.done = False

    # -- timing helpers -------------------------------------------------------------
    @property
    def dec(self) -> int:
        return max(1, self.set_dec)

    @property
    def period(self) -> float:
        return self.dec * CYCLE

    def sample_time(self, k: np.ndarray | int) -> np.ndarray | float:
        return self.t_arm + (np.asarray(k) + 1) * self.period

    def samples_before(self, t: float) -> int:
        """Number of samples of this epoch written at or before time ``t``."""
        return max(0, int(np.floor((t - self.t_arm) / self.period + 1e-9)))

    def _k_ok(self) -> int:
        """First sample index at which a trigger is accepted (pretrig_ok)."""
        if self.set_dly >= N:
            return 0
        return N - self.set_dly

    def _written(self, now: float) -> int:
        """Samples written in this epoch by ``now``."""
        if not self.armed and self.k_stop is None:
            return self.k_mat
        k = self.samples_before(now)
        if self.k_stop is not None:
            k = min(k, self.k_stop + 1)
        return k

    # -- signals ----------------------------------------------------------------------
    def _samples(self, k0: int, k1: int) -> np.ndarray:
        """Volts of both channels for sample indices [k0, k1) of this epoch."""
        count = k1 - k0
        t = self.t_arm + np.arange(k0 + 1, k1 + 1) * self.period  # sample_time(k0 .. k1 - 1), one pass less
        bus = self.model.bus
        out = np.empty((2, count))
        if self.avg and self.dec > 1:
            m = min(self.dec, AVG_SUBSAMPLES)
            offsets = -(np.arange(m) + 0.5) * self.period / m
            tt = (t[:, None] + offsets[None, :]).ravel()
            ctx = EvalContext(self.model.rng, noise_scale=float(np.sqrt(m / self.dec)))
            for ch in (0, 1):
                out[ch] = bus.input_of(8 + ch, tt, ctx).reshape(count, m).mean(axis=1)
                out[ch] += self._tone_average_correction(ch, t, offsets)
        else:
            ctx = EvalContext(self.model.rng)
            for ch in (0, 1):
                out[ch] = bus.input_of(8 + ch, t, ctx)
        return out

    def _tone_average_correction(self, ch: int, t: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Exact boxcar average minus the sub-sampled one, for the steady-state tones.

        The RTL sums all ``dec`` samples of the window before a written sample;
        the time-domain signal is averaged over ``len(offsets)`` sub-samples
        only, which overstates a tone near the Nyquist frequency by up to 0.6 %
        in amplitude.  For the tones of the channel's steady-state spectrum the
        difference between the two averages is added in closed form, so tones
        come out as ``sum(x[n-j], j < dec) / dec``; everything else (noise,
        transients) keeps the sub-sampled average.
        """
        s = self.model.bus.input_spectrum(8 + ch, EvalContext(None, 0.0))
        if not len(s.freqs):
            return np.zeros(len(t))
        w = 2 * np.pi * s.freqs
        dec = self.dec
        x = w * CYCLE / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            g_dec = np.where(np.abs(np.sin(x)) > 1e-15, np.sin(x * dec) / (dec * np.sin(x)), 1.0)
        g_dec = g_dec * np.exp(-1j * x * dec)
        g_sub = np.exp(1j * np.outer(w, offsets)).mean(axis=1)
        coef = s.amps * (g_dec - g_sub)
        keep = significant(coef)
        if not keep.any():
            return np.zeros(len(t))
        return phasor_sum(t, w[keep], coef[keep], real=True)

    def _materialize(self, k_upto: int) -> None:
        """Write samples [k_mat, k_upto) of this epoch into the buffer."""
        if k_upto <= self.k_mat:
            return
        k0 = max(self.k_mat, k_upto - N)
        for start in range(k0, k_upto, CHUNK):
            end = min(k_upto, start + CHUNK)
            codes = volts_to_code(self._samples(start, end))
            first = (self.wp0 + start) % N  # at most N samples: one piece, or two around the end
            head = min(end - start, N - first)
            self.buf[:, first:first + head] = codes[:, :head]
            if head < end - start:
                self.buf[:, : end - start - head] = codes[:, head:]
        self.k_mat = k_upto

    # -- trigger search ------------------------------------------------------------------
    def _scan_edges(self, k_from: int, k_to: int) -> int | None:
        """First sample index in [k_from, k_to) with an accepted edge trigger."""
        src = self.trig_src
        ch = 0 if src in (2, 3) else 1
        positive = src in (2, 4)
        th = signed(self.threshold, 14) / CODES_PER_VOLT
        hy = (self.hysteresis & 0x3FFF) / CODES_PER_VOLT
        ctx_bus = self.model.bus
        k = k_from
        while k < k_to:
            end = min(k_to, k + CHUNK)
            t = self.sample_time(np.arange(k, end))
            x = ctx_bus.input_of(8 + ch, t, EvalContext(self.model.rng))
            x = volts_to_code(x).astype(np.int64)
            x = np.where(x >= 2**13, x - 2**14, x) / CODES_PER_VOLT
            hit, self.schmitt_state = schmitt(x, th, hy, positive, self.schmitt_state)
            if hit >= 0:
                return k + hit
            k = end
        return None

    def _find_trigger(self, now: float) -> None:
        if not self.armed or self.k_trig is not None or self.trig_src in (0, 1) or self.trig_src > 10:
            return
        k_now = self._written(now)
        k_ok = self._k_ok()
        src = self.trig_src
        if src in (6, 7, 8, 9, 10):
            t_ok = float(self.sample_time(k_ok - 1)) if k_ok > 0 else self.t_arm
            t_from = max(t_ok, self.t_arm)
            if src in (6, 7):
                t_hit = self.model.dio.first_edge(t_from, src == 6, self.deb_len)
            elif src == 10:
                t_hit = self.model.bus.blocks[3].first_event(t_from, now)  # type: ignore[attr-defined]
            else:
                t_hit = self.model.asg[src - 8].next_wrap(t_from)
            if t_hit is not None and t_hit <= now:
                self._trigger_at(self.samples_before(t_hit) - 1, t_hit)
            return
        # channel edges, on the decimated samples
        start = max(self.k_search, k_ok)
        if start >= k_now:
            return
        if self.k_search < start or self.schmitt_state < 0:
            self.schmitt_state = -1
            look = max(0, start - 256)
            if look < start:
                self._scan_edges_state_only(look, start)
        windows = [(start, k_now)]
        if k_now - start > MAX_SCAN:
            windows = [(start, start + CHUNK), (k_now - MAX_SCAN, k_now)]
        for i, (a, b) in enumerate(windows):
            if i:
                self.schmitt_state = -1
            hit = self._scan_edges(a, b)
            if hit is not None:
                self._trigger_at(hit, float(self.sample_time(hit)))
                return
        self.k_search = k_now

    def _scan_edges_state_only(self, k_from: int, k_to: int) -> None:
        saved = self.trig_src
        self._scan_edges(k_from, k_to)  # updates self.schmitt_state; an edge here is ignored
        self.trig_src = saved

    def _trigger_at(self, k: int, t: float) -> None:
        self.k_trig = k
        self.t_trig = t
        self.ts_trig = self.model.cycles(t)
        self.wp_trig = (self.wp0 + k) % N
        self.k_stop = None if self.we_keep else k + self.set_dly
        for asg in self.model.asg:
            asg.trig_pointer = asg.table_index(t)

    def advance(self, now: float) -> None:
        """Bring the state machine up to ``now`` (triggers and end of acquisition)."""
        if not self.armed:
            return
        self._find_trigger(now)
        if self.k_trig is not None and not self.done:
            k_end = self.k_trig + self.set_dly
            if self.samples_before(now) > k_end:
                self.done = True
                self.trig_src = 0
                if not self.we_keep:
                    self._materialize(k_end + 1)
                    self.k_stop = k_end
                    self.armed = False
        k = self._written(now)
        if k > 0:
            self.wp_cur = (self.wp0 + k - 1) % N
            self.wp = (self.wp0 + k) % N
        counted = k if self.k_trig is None else min(k, self.k_trig + 1)
        self.we_cnt = min(counted, 2**32 - 1)

    # -- register interface ------------------------------------------------------------------
    def _flush_epoch(self, now: float) -> None:
        """Materialize what the running epoch wrote before it is replaced."""
        if self.armed or self.k_stop is not None:
            self._materialize(self._written(now))
        self.k_stop = None

    def _arm(self, now: float) -> None:
        self.armed = True
        self.t_arm = now
        self.wp0 = self.wp
        self.k_mat = 0
        self.k_stop = None
        self.k_trig = None
        self.t_trig = None
        self.k_search = 0
        self.schmitt_state = -1
        self.done = False
        self.we_cnt = 0

    def write(self, offset: int, value: int) -> None:
        now = self.model.clock.now()
        self.advance(now)
        if offset == 0x0:
            self.we_keep = bool(value >> 3 & 1)
            arm, rst = bool(value & 1), bool(value >> 1 & 1)
            if arm or rst:
                self._flush_epoch(now)
            if rst:
                self.armed = False
                self.wp = self.wp_cur = self.wp_trig = 0
                self.ts_trig = self.model.cycles(now)
                self.trig_src = 0
                self.we_cnt = 0
                self.k_trig = None
                self.done = False
            if arm:
                self._arm(now)
        elif offset == 0x4:
            self.trig_src = value & 0xF
            if self.trig_src == 1 and self.armed and self.k_trig is None:
                k = self._written(now)
                ok = self.set_dly >= N or k > N - self.set_dly
                if ok:
                    self._trigger_at(k - 1, now)
        elif offset == 0x8:
            self.threshold = value & 0x3FFF
        elif offset == 0x10:
            self.set_dly = value & 0xFFFFFFFF
        elif offset == 0x14:
            if self.armed:  # the sample grid restarts now at the new rate
                k = self._written(now)
                self._materialize(k)
                self.t_arm = now
                self.wp0 = (self.wp0 + k) % N
                self.k_mat = 0
                self.k_search = 0
                self.schmitt_state = -1
                if self.k_trig is not None:
                    self.k_trig -= k
                if self.k_stop is not None:
                    self.k_stop -= k
            self.set_dec = value & (2**17 - 1)
        elif offset == 0x20:
            self.hysteresis = value & 0x3FFF
        elif offset == 0x28:
            if self.armed and bool(value & 1) != self.avg:  # the samples taken so far keep their averaging
                self._materialize(self._written(now))
            self.avg = bool(value & 1)
        elif offset == 0x90:
            self.deb_len = value & (2**20 - 1)

    def read(self, offset: int) -> int:
        now = self.model.clock.now()
        self.advance(now)
        if offset == 0x0:
            dly_do = self.k_trig is not None and not self.done and self.armed
            return (int(self.we_keep) << 3) | (int(dly_do) << 2) | int(self.armed)
        if offset == 0x4:
            return self.trig_src
        if offset == 0x16C:
            return int(self.set_dly >= N or self.we_cnt > N - self.set_dly)
        if offset in (0x154, 0x158):
            ctx = EvalContext(self.model.rng)
            v = self.model.bus.input_of(8 + (offset - 0x154) // 4, np.array([now]), ctx)
            return int(volts_to_code(v)[0])
        if offset in (0x15C, 0x160):
            c = self.model.cycles(now)
            return c & 0xFFFFFFFF if offset == 0x15C else c >> 32
        regs = {
            0x8: self.threshold, 0x10: self.set_dly, 0x14: self.set_dec, 0x18: self.wp_cur,
            0x1C: self.wp_trig, 0x20: self.hysteresis, 0x28: int(self.avg), 0x2C: self.we_cnt,
            0x90: self.deb_len, 0x164: self.ts_trig & 0xFFFFFFFF, 0x168: self.ts_trig >> 32,
        }
        if 0x10000 <= offset < 0x30000:
            return int(self.read_buffer((offset >> 16) - 1, (offset >> 2) & (N - 1), 1)[0])
        return regs.get(offset, 0)

    def sync(self, now: float) -> None:
        """Record everything up to ``now`` before a register write changes the signals.

        Samples are computed lazily from the *current* register state, so the
        model calls this before every bus write: samples already taken keep the
        values they had when they were taken.
        """
        self.advance(now)
        if self.armed:
            self._materialize(self._written(now))

    def read_buffer(self, channel: int, index: int, count: int) -> np.ndarray:
        """``count`` words of channel ``channel`` (0/1) starting at ``index`` (wraps)."""
        now = self.model.clock.now()
        self.advance(now)
        if self.armed or self.k_stop is not None:
            self._materialize(self._written(now))
        if index + count <= N:
            return self.buf[channel, index:index + count].copy()
        idx = (index + np.arange(count)) % N
        return self.buf[channel, idx]
