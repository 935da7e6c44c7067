"""IQ modulator/demodulator and network-analyzer accumulator,
``red_pitaya_iq_block.v`` (slots 5..7).

Model (all in the phasor view of :class:`~rpl_noqt.sim.signals.Spectrum`):

* local oscillator ``theta(t) = 2 pi f t + alpha``; f = 0x108 * 125 MHz / 2**32.
  A cleared sync bit (``iq.on = False``/``synchronize_iqs``) resets the
  phase accumulator; it restarts from 0 when the bit is set again.
* demodulation: ``q1 + i q2 = LPF(x * (sin theta' + i cos theta'))`` with
  ``theta' = theta - phase`` (0x104 holds ``-phase``), the input first passing
  the input filter (0x120, one stage, AC coupling) and a 3-cycle pipeline.  In
  LPF units (LPFBITS 24) a tone ``A sin(theta + psi)`` gives
  ``q1 + i q2 = A exp(i psi) * 2**22``, which is why PyRPL rescales NA data by
  ``4 / 2**24``.  The quadrature low-pass (0x124, 2 stages; 4 on iq2) is applied
  exactly to every tone offset.
* outputs: ``output_signal`` = quadrature 1 times ``g3 / 2**10`` (0x10C = 0),
  the modulation (0x10C = 1), the PFD's counter (0x10C = 2, ``counts / 2**13`` V,
  :mod:`~rpl_noqt.sim.pfd`) or off; ``output_direct`` =
  ``(q1 g1 / 2**20 + g2 / 2**17) sin theta + q2 g4 / 2**20 cos theta``.
* phase-frequency detector (0x100 bit 1 ``pfd_on``, on after a reload; the
  counter at 0x150): :mod:`~rpl_noqt.sim.pfd`.
* network analyzer: a write to 0x108 clears the sums, waits ``na_sleepcycles``
  (0x134) cycles and then sums ``na_averages`` (0x130) samples of q1 and q2,
  readable at 0x140..0x14C as 62-bit numbers with bit 31 of every word set while
  the sum is still running.  The sum is computed in closed form (geometric
  series per tone) plus the noise of the mean.
"""

from __future__ import annotations

import math

import numpy as np

from . import filters
from .dsp import DspBlock, EvalContext
from .pfd import Pfd
from .signals import CYCLE, FPGA_CLOCK_HZ, Spectrum, grid_phasor_sum, phasor_sum, sat_volts, signed

LUTSZ, LUTBITS, PHASEBITS, GAINBITS, SIGNALBITS, LPFBITS, SHIFTBITS = 11, 17, 32, 18, 14, 24, 8
INPUT_FILTER = filters.FilterParams(stages=1, shiftbits=5, minbw=50)
PIPELINE_CYCLES = 3  # input -> quadrature, matches NetworkAnalyzer._delay
LPF_SCALE = 2.0**22  # LPF units per volt of tone amplitude
#: longest window (FPGA cycles) whose non-tone input is filtered in the time domain
RESIDUAL_MAX_CYCLES = 2**20
#: settling time granted to the quadrature filters before a short window
RESIDUAL_MIN_SETTLE = 2**14


class Iq(DspBlock):
    def __init__(self, model, number: int) -> None:
        super().__init__(model, number)
        self.quad_params = filters.FilterParams(stages=4 if number == 7 else 2, shiftbits=5, minbw=10)
        self.flags = 0x2  # bits 1..5 of 0x100; pfd_on (bit 1) is 1 after a reload (red_pitaya_iq_block.v line 121)
        self.phase_reg = 0
        self.freq_reg = 0
        self.output_select = 0
        self.g = [0, 0, 0, 0]
        self.input_filter = 0
        self.quad_filter = 0
        self.na_averages = 0
        self.na_sleepcycles = 0
        self.trigger_external = 0
        self.trigger_pin = 0
        # phase accumulator: theta(t) = theta0 + 2 pi f (t - t0)
        self.theta0 = 0.0
        self.t0 = 0.0
        # network analyzer state
        self.na_start: float | None = None
        self.na_result: tuple[int, int] | None = None
        self.na_n = 0
        self.na_sleep = 0
        self.pfd = Pfd(self)

    # -- registers -------------------------------------------------------------
    def read(self, offset: int) -> int:
        if offset == 0x100:
            return (self.flags & 0x3E) | int(self.model.bus.synced(self.number))
        if 0x140 <= offset <= 0x14C:
            return self._na_word((offset - 0x140) // 4)
        if offset == 0x150:
            return self.pfd.read(self.model.clock.now())
        regs = {
            0x104: self.phase_reg, 0x108: self.freq_reg, 0x10C: self.output_select,
            0x110: self.g[0], 0x114: self.g[1], 0x118: self.g[2], 0x11C: self.g[3],
            0x120: self.input_filter, 0x124: self.quad_filter,
            0x130: self.na_averages, 0x134: self.na_sleepcycles,
            0x154: self.trigger_external, 0x158: self.trigger_pin,
            0x200: LUTSZ, 0x204: LUTBITS, 0x208: PHASEBITS, 0x20C: GAINBITS, 0x210: SIGNALBITS,
            0x214: LPFBITS, 0x218: SHIFTBITS,
            0x220: INPUT_FILTER.stages, 0x224: INPUT_FILTER.shiftbits, 0x228: INPUT_FILTER.minbw,
            0x230: self.quad_params.stages, 0x234: self.quad_params.shiftbits, 0x238: self.quad_params.minbw,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        now = self.model.clock.now()
        if offset == 0x100:
            was = self.pfd.on
            self.pfd.update(now)
            self.flags = value & 0x3E
            if self.pfd.on != was:
                self.pfd.set_on(self.pfd.on, now)
        elif offset == 0x104:
            self.phase_reg = value & 0xFFFFFFFF
        elif offset == 0x108:
            self.theta0 = self.theta(now)
            self.t0 = now
            self.freq_reg = value & 0xFFFFFFFF
            self.na_start = now
            self.na_result = None
            self.na_n = self.na_averages
            self.na_sleep = self.na_sleepcycles
        elif offset == 0x10C:
            self.output_select = value & 0xF
        elif 0x110 <= offset <= 0x11C:
            self.g[(offset - 0x110) // 4] = value & (2**GAINBITS - 1)
        elif offset == 0x120:
            self.input_filter = value & 0xFFFFFFFF
        elif offset == 0x124:
            self.quad_filter = value & 0xFFFFFFFF
        elif offset == 0x130:
            self.na_averages = value & 0xFFFFFFFF
        elif offset == 0x134:
            self.na_sleepcycles = value & 0xFFFFFFFF
        elif offset == 0x154:
            self.trigger_external = value & 1
        elif offset == 0x158:
            self.trigger_pin = value & 0xF

    def on_sync(self, old: bool, new: bool, now: float) -> None:
        # off: accumulator held at 0; on: restarts from 0 now
        self.theta0 = 0.0
        self.t0 = now

    # -- oscillator ------------------------------------------------------------
    @property
    def frequency(self) -> float:
        return self.freq_reg / 2.0**PHASEBITS * FPGA_CLOCK_HZ

    @property
    def running(self) -> bool:
        return self.model.bus.synced(self.number)

    def theta(self, t: np.ndarray | float) -> np.ndarray | float:
        if not self.running:
            return np.zeros(np.shape(t)) if np.ndim(t) else 0.0
        return self.theta0 + 2 * np.pi * self.frequency * (np.asarray(t) - self.t0)

    @property
    def alpha(self) -> float:
        """theta(t) = 2 pi f t + alpha."""
        if not self.running:
            return 0.0
        return self.theta0 - 2 * np.pi * self.frequency * self.t0

    @property
    def phase(self) -> float:
        """Demodulation phase (rad): PyRPL writes ``-phase`` into 0x104."""
        return -signed(self.phase_reg, 32) / 2.0**32 * 2 * np.pi

    def _gain(self, index: int) -> float:
        return signed(self.g[index], GAINBITS)

    # -- demodulation in the phasor view -------------------------------------------
    def _zv_terms(self, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray, float]:
        """``Zv(t) = sum a_j exp(i nu_j t)`` (volts of tone amplitude) and input noise rms."""
        s = self.model.bus.input_spectrum(self.number, ctx)
        f_lo = self.frequency if self.running else 0.0
        freqs = np.concatenate([[0.0], s.freqs])
        amps = np.concatenate([[complex(s.dc)], s.amps])
        amps = amps * filters.response(self.input_filter, INPUT_FILTER, freqs)
        amps = amps * np.exp(-2j * np.pi * freqs * PIPELINE_CYCLES * CYCLE)
        rot = 1j * np.exp(1j * (self.phase - self.alpha))
        h1 = filters.response(self.quad_filter, self.quad_params, freqs - f_lo)
        h2 = filters.response(self.quad_filter, self.quad_params, -freqs - f_lo)
        # x = Re(c exp(i w t)) = (c e^{iwt} + c* e^{-iwt}) / 2; this also holds for the DC entry
        a1 = rot * amps * h1
        a2 = rot * np.conj(amps) * h2
        nus = np.concatenate([2 * np.pi * (freqs - f_lo), -2 * np.pi * (freqs + f_lo)])
        coefs = np.concatenate([a1, a2])
        keep = np.abs(coefs) > 1e-12
        return nus[keep], coefs[keep], s.noise

    def zv(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        nus, coefs, noise = self._zv_terms(ctx)
        t = np.asarray(t, dtype=float)
        z = phasor_sum(t, nus, coefs)  # times on a grid (scope samples): one matrix product
        if noise and ctx.rng is not None and t.size:
            z += self._residual_zv(t, ctx)
        # quadratures are 24-bit signed: +-2 V of tone amplitude
        return np.clip(z.real, -2.0, 2.0) + 1j * np.clip(z.imag, -2.0, 2.0)

    def _has_residual(self, ctx: EvalContext) -> bool:
        return ctx.rng is not None and self.model.bus.input_spectrum(self.number, ctx).noise > 0

    def _eval_times(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """Times at which the outputs are evaluated.  With a residual (noise) in
        the input, the block is evaluated once per FPGA cycle (at the middle of
        the cycle holding ``t``), so that the local oscillator remodulates the
        filtered residual at the cycle it was demodulated in."""
        t = np.asarray(t, dtype=float)
        if not self._has_residual(ctx):
            return t
        return (np.floor(t / CYCLE) + 0.5) * CYCLE

    def _residual_zv(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """Quadratures of what the phasor view leaves out (noise, transients).

        The input is evaluated once per FPGA cycle over the requested window,
        its steady-state tones (handled exactly by :meth:`_zv_terms`) are
        subtracted, and the rest goes through the RTL chain in the time domain:
        input filter, 3-cycle pipeline, multiplication by the local oscillator,
        quadrature low-pass filters.  The filters start from rest
        ``settle`` cycles before the window (12 time constants of the slowest
        quadrature stage, but no longer than the window or
        ``RESIDUAL_MIN_SETTLE``, whichever is longer: a single sampler read
        stays cheap, a slow filter then starts a little below its stationary
        noise level).  Windows longer than that (a scope trace of
        more than ``RESIDUAL_MAX_CYCLES`` cycles) get no residual: noise then
        only reaches the quadratures through the network analyzer's statistics.
        """
        n = np.floor(t / CYCLE).astype(np.int64)
        lo, hi = int(n.min()), int(n.max())
        span = hi - lo + 1
        if span > RESIDUAL_MAX_CYCLES:
            return np.zeros(t.shape, dtype=complex)
        lowpass = [a for a, hp in filters.stage_settings(self.quad_filter, self.quad_params) if not hp]
        settle = int(12 / min(lowpass)) if lowpass else 0
        settle = min(settle, max(span, RESIDUAL_MIN_SETTLE))
        start = lo - settle - PIPELINE_CYCLES
        tc = (np.arange(start, hi + 1) + 0.5) * CYCLE
        grid = ((start + 0.5) * CYCLE, CYCLE)  # tc = a + k b: no need to check it
        inner = EvalContext(self.model.rng)  # per-cycle noise: no averaging scale
        inner.stack = ctx.stack
        inner.overrides = ctx.overrides
        s = self.model.bus.input_spectrum(self.number, inner)
        tones = Spectrum(dc=s.dc, freqs=s.freqs, amps=s.amps)
        x = self.model.bus.input_of(self.number, tc, inner) - tones.evaluate(tc, grid=grid)
        x = filters.apply(self.input_filter, INPUT_FILTER, x)
        if x is None:
            return np.zeros(t.shape, dtype=complex)
        x = np.concatenate([np.zeros(PIPELINE_CYCLES), x[:-PIPELINE_CYCLES]])
        u = 2j * x * self._lo_conj(tc, grid)
        z = filters.apply(self.quad_filter, self.quad_params, u)
        return z[n - start]

    def _lo_conj(self, tc: np.ndarray, grid: tuple[float, float]) -> np.ndarray:
        """``exp(-i (theta(tc) - phase))`` for the per-cycle times of the residual path.

        ``theta`` is linear in time, so on the cycle grid the phasor factorises
        (:func:`~rpl_noqt.sim.signals.grid_phasor_sum`, one tone) instead of a
        complex exponential per cycle.
        """
        if self.running:
            fast = grid_phasor_sum(tc - self.t0, np.array([-2 * np.pi * self.frequency]),
                                   np.array([np.exp(-1j * (self.theta0 - self.phase))]),
                                   grid=(grid[0] - self.t0, grid[1]))
            if fast is not None:
                return fast
        return np.exp(-1j * (self.theta(tc) - self.phase))

    def _quadrature(self, t: np.ndarray, ctx: EvalContext, second: bool) -> np.ndarray:
        t = self._eval_times(t, ctx)
        z = self.zv(t, ctx)
        q = z.imag if second else z.real
        return sat_volts(q * self._gain(2) / 2.0)

    def second_quadrature(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        return self._quadrature(t, ctx, True)

    def _modulation(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        amp = self._gain(1) / 2.0**17
        if self._gain(0) == 0 and self._gain(3) == 0:
            return sat_volts(amp * np.sin(self.theta(t)))
        t = self._eval_times(t, ctx)
        theta = self.theta(t)
        z = self.zv(t, ctx)
        fp1 = sat_volts(z.real * self._gain(0) / 2.0**11)
        fp2 = sat_volts(z.imag * self._gain(3) / 2.0**11)
        return sat_volts((fp1 + amp) * np.sin(theta) + fp2 * np.cos(theta))

    def output_direct(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        return self._modulation(t, ctx)

    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        if self.output_select == 0:
            return self._quadrature(t, ctx, False)
        if self.output_select == 1:
            return self._modulation(t, ctx)
        if self.output_select == 2:
            return self.pfd.output(t)
        return np.zeros(np.shape(t))

    def fallback(self, t: np.ndarray, ctx: EvalContext | None = None) -> np.ndarray:
        if self.output_select == 1:
            return sat_volts(self._gain(1) / 2.0**17 * np.sin(self.theta(t)))
        if self.output_select == 2:
            return np.full(np.shape(t), self.pfd.value / 2.0**13)
        return np.zeros(np.shape(t))

    # -- spectra -------------------------------------------------------------------
    def _quadrature_spectrum(self, ctx: EvalContext, second: bool) -> Spectrum:
        nus, coefs, noise = self._zv_terms(ctx)
        scale = self._gain(2) / 2.0
        if second:
            coefs = -1j * coefs  # Im(z) = Re(-i z)
        out = Spectrum(noise=noise * abs(scale))
        f = nus / (2 * np.pi)
        dc = np.abs(f) < 1e-9
        for a in coefs[dc]:  # in order, as the sum over the terms always ran
            out.dc += float(np.real(a)) * scale
        tone = ~dc
        f, a = f[tone], coefs[tone]
        out.freqs = np.abs(f)
        out.amps = np.where(f > 0, a, np.conj(a)) * scale
        return out

    def second_quadrature_spectrum(self, ctx: EvalContext) -> Spectrum:
        return self._quadrature_spectrum(ctx, True)

    def direct_spectrum(self, ctx: EvalContext) -> Spectrum:
        amp = self._gain(1) / 2.0**17
        freqs, amps = [], []
        if amp and self.running:
            freqs.append(self.frequency)
            amps.append(-1j * amp * np.exp(1j * self.alpha))
        out = Spectrum(freqs=np.array(freqs), amps=np.array(amps, dtype=complex))
        g = (self._gain(0) + self._gain(3)) / 2.0 / 2.0**11
        if g:
            s = self.model.bus.input_spectrum(self.number, ctx)
            f_lo = self.frequency if self.running else 0.0
            freqs_in = np.concatenate([[0.0], s.freqs])
            amps_in = np.concatenate([[complex(s.dc)], s.amps])
            h = (
                filters.response(self.input_filter, INPUT_FILTER, freqs_in)
                * filters.response(self.quad_filter, self.quad_params, freqs_in - f_lo)
                * np.exp(-2j * np.pi * freqs_in * PIPELINE_CYCLES * CYCLE)
            )
            passed = g * np.exp(1j * self.phase) * h * amps_in
            out = out + Spectrum(dc=float(passed[0].real), freqs=freqs_in[1:], amps=passed[1:], noise=abs(g) * s.noise)
        return out

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        if self.output_select == 0:
            return self._quadrature_spectrum(ctx, False)
        if self.output_select == 1:
            return self.direct_spectrum(ctx)
        if self.output_select == 2:  # the counter as it is now (it ramps at the frequency difference)
            return Spectrum(dc=self.pfd.value / 2.0**13)
        return Spectrum()

    # -- network analyzer -------------------------------------------------------------
    def _na_busy(self, now: float) -> bool:
        if self.na_start is None:
            return False
        return now < self.na_start + (self.na_sleep + self.na_n) * CYCLE

    def _na_sums(self, n: int) -> tuple[int, int]:
        """Sums of q1 and q2 over the first ``n`` averaging samples (LPF units)."""
        if self.na_start is None or n <= 0:
            return 0, 0
        ctx = EvalContext(None, 0.0)
        nus, coefs, noise = self._zv_terms(ctx)
        ts = self.na_start + self.na_sleep * CYCLE
        x = nus * CYCLE
        flat = np.abs(x) < 1e-12
        with np.errstate(invalid="ignore", divide="ignore"):
            geo = np.where(flat, float(n), np.expm1(1j * x * n) / np.where(flat, 1.0, np.expm1(1j * x)))
        total = complex(np.sum(coefs * np.exp(1j * nus * ts) * geo))
        if noise:
            sigma = noise * math.sqrt(2.0 / n) * n
            total += complex(self.model.rng.normal(0, sigma), self.model.rng.normal(0, sigma))
        limit = 2**61 - 1
        i_sum = int(np.clip(round(total.real * LPF_SCALE), -limit, limit))
        q_sum = int(np.clip(round(total.imag * LPF_SCALE), -limit, limit))
        return i_sum, q_sum

    def _na_word(self, index: int) -> int:
        now = self.model.clock.now()
        busy = self._na_busy(now)
        if busy:
            done = int((now - self.na_start - self.na_sleep * CYCLE) / CYCLE) if self.na_start is not None else 0
            i_sum, q_sum = self._na_sums(min(max(done, 0), self.na_n))
        else:
            if self.na_result is None:
                self.na_result = self._na_sums(self.na_n)
            i_sum, q_sum = self.na_result
        value = (i_sum, i_sum, q_sum, q_sum)[index] & (2**62 - 1)
        word = value & (2**31 - 1) if index % 2 == 0 else (value >> 31) & (2**31 - 1)
        return word | (int(busy) << 31)
