"""PID controller, ``red_pitaya_pid_block.v`` (slots 0..2).

RTL facts used here: ``error = input - setpoint`` (note the sign: a loop
through a positive cable needs negative gains); P gain is ``kp / 2**PSR``
(PSR 12); the integrator adds ``error * ki`` per cycle into a register whose
top 16 bits (binary point 13, so +-4 V) are what 0x100 reads back, i.e.
``d ival / dt = error * ki / 2**ISR * 125 MHz`` (ISR 32); the sum saturates to
14 bits and then to ``[min_voltage, max_voltage]``.  A cleared sync bit pauses
the gains selected in 0x12C[2:0] (all three by default).

The integrator is the only slow state.  :meth:`Pid.step` advances it with an
implicit Euler step whose loop gain is measured by perturbing the PID output
and re-evaluating its input through the routing; implicit Euler stays stable for
any step size, so arbitrarily long idle times cost a bounded number of steps.
Tones (the phasor view the IQ modules and the network analyzer use) go
through the RTL's exact steady-state response: input filter bank, P and I
with their pipeline delays (:meth:`Pid.tone_response`). In the time domain
the D term and the input filters are not simulated (the FPGA D term is
disabled in the shipped design as well).
"""

from __future__ import annotations

import numpy as np

from . import filters
from .dsp import DspBlock, EvalContext
from .signals import CODES_PER_VOLT, FPGA_CLOCK_HZ, Spectrum, V_MAX, signed, to_unsigned

PSR, ISR, DSR, GAINBITS = 12, 32, 10, 24
FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 4, 5, 10
FILTER_PARAMS = filters.FilterParams(stages=FILTERSTAGES, shiftbits=FILTERSHIFTBITS, minbw=FILTERMINBW)
IVAL_MAX = (2**15 - 1) / CODES_PER_VOLT
HISTORY = 8192


class Pid(DspBlock):
    def __init__(self, model, number: int) -> None:
        super().__init__(model, number)
        self.setpoint_code = 0
        self.kp = 0
        self.ki = 0
        self.kd = 0
        self.filter = 0
        self.out_min = 0x2000
        self.out_max = 0x1FFF
        self.mode = 0b111  # {differential, pause_d, pause_p, pause_i}
        self.ival = 0.0
        self.last_err = 0.0
        self._hist_t = np.zeros(0)
        self._hist_v = np.zeros(0)

    # -- registers -----------------------------------------------------------
    def read(self, offset: int) -> int:
        if offset == 0x100:
            return to_unsigned(int(round(self.ival * CODES_PER_VOLT)), 16)
        regs = {
            0x104: self.setpoint_code, 0x108: self.kp, 0x10C: self.ki, 0x110: self.kd,
            0x120: self.filter, 0x124: self.out_min, 0x128: self.out_max, 0x12C: self.mode,
            0x200: PSR, 0x204: ISR, 0x208: DSR, 0x20C: GAINBITS,
            0x220: FILTERSTAGES, 0x224: FILTERSHIFTBITS, 0x228: FILTERMINBW,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        now = self.model.clock.now()
        if offset == 0x100:
            self.set_ival(signed(value, 16) / CODES_PER_VOLT, now)
        elif offset == 0x104:
            self.setpoint_code = value & 0x3FFF
        elif offset == 0x108:
            self.kp = value & (2**GAINBITS - 1)
        elif offset == 0x10C:
            self.ki = value & (2**GAINBITS - 1)
        elif offset == 0x110:
            self.kd = value & (2**GAINBITS - 1)
        elif offset == 0x120:
            self.filter = value & 0xFFFFFFFF
        elif offset == 0x124:
            self.out_min = value & 0x3FFF
        elif offset == 0x128:
            self.out_max = value & 0x3FFF
        elif offset == 0x12C:
            self.mode = value & 0xF

    # -- derived quantities ----------------------------------------------------
    @property
    def setpoint(self) -> float:
        return signed(self.setpoint_code, 14) / CODES_PER_VOLT

    @property
    def p_gain(self) -> float:
        return 0.0 if self._paused(1) else signed(self.kp, GAINBITS) / 2**PSR

    @property
    def i_rate(self) -> float:
        """Integrator rate (1/s): d ival/dt = i_rate * error."""
        return 0.0 if self._paused(0) else signed(self.ki, GAINBITS) / 2**ISR * FPGA_CLOCK_HZ

    def _paused(self, bit: int) -> bool:
        return bool(self.mode >> bit & 1) and not self.model.bus.synced(self.number)

    def clamp(self, v: np.ndarray | float) -> np.ndarray:
        lo = signed(self.out_min, 14) / CODES_PER_VOLT
        hi = signed(self.out_max, 14) / CODES_PER_VOLT
        v = np.clip(v, -1.0, V_MAX)
        return np.where(v >= hi, hi, np.where(v <= lo, lo, v))

    def set_ival(self, value: float, now: float) -> None:
        self._record(now, self.ival)
        self.ival = float(np.clip(value, -4.0, IVAL_MAX))
        self._record(now, self.ival)

    def _record(self, t: float | np.ndarray, v: float | np.ndarray) -> None:
        """Append to the integrator history used to evaluate past outputs (scope)."""
        self._hist_t = np.concatenate([self._hist_t, np.atleast_1d(t)])[-HISTORY:]
        self._hist_v = np.concatenate([self._hist_v, np.atleast_1d(v)])[-HISTORY:]

    def ival_at(self, t: np.ndarray) -> np.ndarray:
        if len(self._hist_t) == 0:
            return np.full(np.shape(t), self.ival)
        return np.interp(t, self._hist_t, self._hist_v, right=self.ival)

    def state_output(self) -> float:
        return float(self.clamp(self.ival + self.p_gain * self.last_err))

    # -- signals -------------------------------------------------------------
    def error(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        x = self.model.bus.input_of(self.number, t, ctx)
        if self.mode & 0b1000 and self.number in (0, 1):
            other = 1 - self.number
            return x - self.model.bus.input_of(other, t, ctx)
        return x - self.setpoint

    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        return self.clamp(self.ival_at(t) + self.p_gain * self.error(t, ctx))

    def fallback(self, t: np.ndarray) -> np.ndarray:
        return self.clamp(self.ival_at(t) + self.p_gain * self.last_err)

    def tone_response(self, freqs: np.ndarray) -> np.ndarray:
        """Steady-state response to tones (not to DC) at ``freqs``, from the RTL pipeline.

        input filter bank, then ``error`` (1 register), P: ``kp_reg`` (1),
        I: ``ki_mult`` (1) and the accumulator ``int_reg`` (``z^-1/(1-z^-1)``),
        then ``pid_out`` (1) and the min/max ``out_buffer`` (1): P is delayed
        by 4 cycles, I by 5 plus the accumulation.
        """
        freqs = np.asarray(freqs, dtype=float)
        z1 = np.exp(-2j * np.pi * freqs / FPGA_CLOCK_HZ)
        ki_per_cycle = self.i_rate / FPGA_CLOCK_HZ
        with np.errstate(divide="ignore", invalid="ignore"):
            integral = np.where(freqs != 0, ki_per_cycle * z1 / (1.0 - z1), 0.0)
        h = z1**4 * (self.p_gain + integral)
        if self.filter:
            h = h * filters.response(self.filter, FILTER_PARAMS, freqs)
        return h

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        s = self.model.bus.input_spectrum(self.number, ctx)
        p = self.p_gain
        out = Spectrum(freqs=s.freqs.copy(), amps=s.amps * self.tone_response(s.freqs), noise=abs(p) * s.noise)
        out.dc = float(self.clamp(self.ival + p * (s.dc - self.setpoint)))
        return out

    # -- time stepping ---------------------------------------------------------
    def active(self) -> bool:
        return self.i_rate != 0.0 or self.p_gain != 0.0

    def loop_gain(self, t: float) -> tuple[float, float]:
        """``(d error / d output, error)`` at time ``t``, noise-free.

        Measured by forcing this PID's output to two values and evaluating its
        input through the current routing (so any path out -> cable -> in counts).
        """
        tt = np.array([t])
        base = self.state_output()
        quiet = EvalContext(None, 0.0)
        quiet.overrides[self.number] = base
        e0 = float(self.error(tt, quiet)[0])
        delta = 1e-3 if base < 0.5 else -1e-3
        quiet.overrides[self.number] = base + delta
        return (float(self.error(tt, quiet)[0]) - e0) / delta, e0

    def _tone_averaging(self, times: np.ndarray, dt: float, ctx: EvalContext) -> np.ndarray:
        """Turn the tones in sampled errors into their averages over each step.

        The integrator sums every cycle; a step of ``dt`` that sampled a tone
        once would integrate ``dt`` times one random-looking sample of it (a
        random walk: an NA sweep through an integrating PID would wind it up).
        Each step gets the exact mean of the tone over ``(t - dt, t]`` instead;
        tones slow compared with ``dt`` are left as they are.
        """
        if dt <= 0 or len(times) == 0:
            return np.zeros(len(times))
        s = self.model.bus.input_spectrum(self.number, ctx)
        if len(s.freqs) == 0:
            return np.zeros(len(times))
        w = 2 * np.pi * np.asarray(s.freqs, dtype=float)
        x = w * dt
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(np.abs(x) > 1e-6, (1.0 - np.exp(-1j * x)) / (1j * x), 1.0)
        phasors = np.exp(1j * np.outer(np.asarray(times, dtype=float), w))
        return np.real(phasors @ (np.asarray(s.amps) * (mean - 1.0)))

    def advance(self, times: np.ndarray, dt: float, gain: float) -> None:
        """Advance the integrator through ``times`` (steps of ``dt`` seconds).

        The input is evaluated once, vectorised, with this PID's output held at
        its current value (``e_ext``); within the step loop the feedback through
        the routing is the linear term ``gain * (output - held output)``, with
        ``gain`` from :meth:`loop_gain`.  Each step is implicit Euler, solved in
        closed form, so it is stable for any ``dt`` when the loop is negative
        feedback; positive feedback runs away like the hardware does.
        """
        base = self.state_output()
        ctx = EvalContext(self.model.rng)
        ctx.overrides[self.number] = base
        e_ext = self.error(times, ctx) + self._tone_averaging(times, dt, ctx)
        p = self.p_gain
        k = self.i_rate
        lo = signed(self.out_min, 14) / CODES_PER_VOLT
        hi = min(signed(self.out_max, 14) / CODES_PER_VOLT, V_MAX)
        lo = max(lo, -1.0)
        denom_p = 1.0 - p * gain
        ival = self.ival
        err = self.last_err
        hist = np.empty(len(times))
        for i, e0 in enumerate(e_ext):
            out = ival + p * err
            if lo < out < hi and denom_p > 1e-3:
                # error(ival) = a + g_eff * ival on the linear (unsaturated) branch
                g_eff = gain / denom_p
                a = (e0 - gain * base) / denom_p
            else:
                g_eff = 0.0
                a = e0 + gain * (min(max(out, lo), hi) - base)
            if k * g_eff < 0:
                ival = (ival + k * dt * a) / (1.0 - k * dt * g_eff)
            else:
                ival = ival + k * dt * (a + g_eff * ival)
            ival = min(max(ival, -4.0), IVAL_MAX)
            err = a + g_eff * ival
            hist[i] = ival
        self.ival = float(ival)
        self.last_err = float(err)
        self._record(times, hist)
