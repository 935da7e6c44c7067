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
The D term and the input filters are not simulated (the FPGA D term is
disabled in the shipped design as well).
"""

from __future__ import annotations

import numpy as np

from .dsp import DspBlock, EvalContext
from .signals import CODES_PER_VOLT, FPGA_CLOCK_HZ, Spectrum, V_MAX, signed, to_unsigned

PSR, ISR, DSR, GAINBITS = 12, 32, 10, 24
FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 4, 5, 10
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

    def _record(self, t: float, v: float) -> None:
        if len(self._hist_t) >= HISTORY:
            self._hist_t = self._hist_t[HISTORY // 2 :]
            self._hist_v = self._hist_v[HISTORY // 2 :]
        self._hist_t = np.append(self._hist_t, t)
        self._hist_v = np.append(self._hist_v, v)

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

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        s = self.model.bus.input_spectrum(self.number, ctx)
        p = self.p_gain
        out = Spectrum(freqs=s.freqs.copy(), amps=s.amps * p, noise=abs(p) * s.noise)
        out.dc = float(self.clamp(self.ival + p * (s.dc - self.setpoint)))
        return out

    # -- time stepping ---------------------------------------------------------
    def active(self) -> bool:
        return self.i_rate != 0.0 or self.p_gain != 0.0

    def step(self, t: float, dt: float) -> None:
        """Advance the integrator to time ``t`` over a step of ``dt`` seconds."""
        tt = np.array([t])
        base = self.state_output()
        ctx = EvalContext(self.model.rng)
        ctx.overrides[self.number] = base
        e_noisy = float(self.error(tt, ctx)[0])
        quiet = EvalContext(None, 0.0)
        quiet.overrides[self.number] = base
        e0 = float(self.error(tt, quiet)[0])
        delta = 1e-3 if base < 0.5 else -1e-3
        quiet.overrides[self.number] = base + delta
        gain = (float(self.error(tt, quiet)[0]) - e0) / delta  # d error / d output
        p = self.p_gain
        unclamped = self.ival + p * self.last_err
        at_limit = bool(self.clamp(unclamped) != np.clip(unclamped, -1.0, V_MAX)) or abs(unclamped) >= 1.0
        denom_p = 1.0 - p * gain
        dout_dival = 0.0 if at_limit else (1.0 / denom_p if abs(denom_p) > 1e-3 else 1.0)
        g_eff = gain * dout_dival
        k = self.i_rate
        denom = 1.0 - k * dt * g_eff
        if denom < 1.0:  # positive feedback: explicit step, let it run away like the hardware
            denom = 1.0
        d_ival = k * dt * e_noisy / denom
        self.ival = float(np.clip(self.ival + d_ival, -4.0, IVAL_MAX))
        if at_limit or denom_p <= 1e-3:
            self.last_err = e0
        else:  # solve the (instantaneous) P loop for the new integrator value
            self.last_err = (e0 + gain * (self.ival - base)) / denom_p
        self._record(t, self.ival)
