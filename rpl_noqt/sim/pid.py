"""PID controller, ``red_pitaya_pid_block.v`` (slots 0..2).

RTL facts used here: ``error = input - setpoint`` (note the sign: a loop
through a positive cable needs negative gains); P gain is ``kp / 2**PSR``
(PSR 12); the integrator adds ``error * ki`` per cycle into a register whose
top 16 bits (binary point 13, so +-4 V) are what 0x100 reads back, i.e.
``d ival / dt = error * ki / 2**ISR * 125 MHz`` (ISR 32); the sum saturates to
14 bits and then to ``[min_voltage, max_voltage]``.  A cleared sync bit pauses
the gains selected in 0x12C[2:0] (all three by default).

The integrator is the only slow state.  :meth:`Pid.advance` steps it with
implicit Euler over the feedback tabulated by forcing the PID's output over its
range and re-evaluating its input through the routing (:meth:`Pid.feedback_table`);
implicit Euler stays stable for any step size, so arbitrarily long idle times
cost a bounded number of steps.
Tones (the phasor view the IQ modules and the network analyzer use) go
through the RTL's exact steady-state response: input filter bank, P and I
with their pipeline delays (:meth:`Pid.tone_response`). In the time domain
the D term and the input filters are not simulated (the FPGA D term is
disabled in the shipped design as well).
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from . import filters
from .dsp import DspBlock, EvalContext
from .signals import CODES_PER_VOLT, FPGA_CLOCK_HZ, Spectrum, V_MAX, _clip, dot, signed, to_unsigned

PSR, ISR, DSR, GAINBITS = 12, 32, 10, 24
FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 4, 5, 10
FILTER_PARAMS = filters.FilterParams(stages=FILTERSTAGES, shiftbits=FILTERSHIFTBITS, minbw=FILTERMINBW)
IVAL_MAX = (2**15 - 1) / CODES_PER_VOLT
#: integrator register steps per volt: ``int_reg`` counts 2**-ISR of a 14-bit code.  The
#: step rounds the integrator to it, as the hardware's integer sum is exact: a loop held
#: exactly at its equilibrium stays there (a float residue of 1e-17 V would otherwise be
#: amplified out of an unstable equilibrium, which no board does)
IVAL_STEPS_PER_VOLT = float(2**ISR * CODES_PER_VOLT)
HISTORY = 8192
#: grid points of the feedback table over the output range
TABLE_POINTS = 65
#: a PID stepped alone keeps its feedback table behind a drifting plant for this long (s of model time)
TABLE_HOLD = 0.01
#: ... and while the outputs of the PIDs that reach it stay within this (V)
TABLE_HOLD_VOLTS = 1e-3


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
        self._table: tuple[tuple[int, float, float], np.ndarray, np.ndarray] | None = None
        self._table_at: tuple[float, int, dict[int, float]] = (0.0, -1, {})
        #: other PID's number -> the kept cross table (cross_table)
        self._cross: dict[int, tuple[Any, ...]] = {}
        self._tones_cache: tuple[tuple[int, float], np.ndarray, np.ndarray] | None = None
        self._fixed_tones: tuple[int, bool] | None = None

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
        v = _clip(v, -1.0, V_MAX)
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
        """The output the integrator state gives now (scalar: no numpy on this hot path)."""
        lo, hi = self.output_range()
        v = self.ival + self.p_gain * self.last_err
        return hi if v >= hi else lo if v <= lo else v

    # -- signals -------------------------------------------------------------
    def error(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        x = self.model.bus.input_of(self.number, t, ctx)
        if self.mode & 0b1000 and self.number in (0, 1):
            other = 1 - self.number
            return x - self.model.bus.input_of(other, t, ctx)
        return x - self.setpoint

    def _ival_for(self, t: np.ndarray, ctx: EvalContext | None) -> np.ndarray:
        """The integrator at times ``t``: its history, or what ``ctx`` forces it to (cross tables)."""
        forced = None if ctx is None else ctx.ivals.get(self.number)
        if forced is None:
            return self.ival_at(t)
        return np.broadcast_to(np.asarray(forced, dtype=float), np.shape(t))

    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        p = self.p_gain
        ival = self._ival_for(t, ctx)
        if p == 0.0:  # the integrator alone: its input need not be evaluated (through a plant, a second pass)
            return self.clamp(ival)
        railed = self._railed(ival, p)
        if railed is not None:  # the same: whatever its input, the output sits on one rail
            return np.full(np.shape(t), railed)
        return self.clamp(ival + p * self.error(t, ctx))

    def _railed(self, ival: np.ndarray, p: float) -> float | None:
        """The output if the integrator alone holds it on one rail over ``ival`` whatever the
        error, else None.  The error is a difference of two bus signals (14 bits, within
        [-1, 1) V), so ``p * error`` moves the output by less than ``2 |p|``; the clamp is
        monotonic while ``out_min <= out_max``.  An integrator wound past a rail (an
        unlocked loop) then costs no evaluation of its input: through a plant, that is
        a second pass through the optics for every sample."""
        if ival.size == 0 or signed(self.out_min, 14) > signed(self.out_max, 14):
            return None
        reach = 2.0 * abs(p)
        low = float(self.clamp(float(np.min(ival)) - reach))
        if low != float(self.clamp(float(np.max(ival)) + reach)):
            return None
        return low

    def fallback(self, t: np.ndarray, ctx: EvalContext | None = None) -> np.ndarray:
        return self.clamp(self._ival_for(t, ctx) + self.p_gain * self.last_err)

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
        p = self.p_gain
        railed = self._railed(np.array([self.ival]), p)
        if railed is not None:  # held on a rail: no tone or noise of the input gets through the clamp
            return Spectrum(dc=railed)
        s = self.model.bus.input_spectrum(self.number, ctx)
        out = Spectrum(freqs=s.freqs.copy(), amps=s.amps * self.tone_response(s.freqs), noise=abs(p) * s.noise)
        out.dc = float(self.clamp(self.ival + p * (s.dc - self.setpoint)))
        return out

    # -- time stepping ---------------------------------------------------------
    def active(self) -> bool:
        return self.i_rate != 0.0 or self.p_gain != 0.0

    def output_range(self) -> tuple[float, float]:
        """``(min_voltage, max_voltage)`` as the output clamp applies them (V)."""
        lo = max(signed(self.out_min, 14) / CODES_PER_VOLT, -1.0)
        hi = min(signed(self.out_max, 14) / CODES_PER_VOLT, V_MAX)
        return lo, hi

    def feedback_table(self, t: float, upstream: list[Pid] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(outputs, error change)``: how this PID's error responds to its own output.

        The output is forced to a grid over its range and the error
        re-evaluated through the routing, noise-free, with every other module
        in its present state: any path out -> ... -> in counts, including clamps
        further along it (another PID on its rail, the 14-bit saturation of a
        DAC sum), which a single derivative at the present output would miss.
        The change is relative to the present output.

        ``upstream``: the caller steps this PID alone, and these are the moving
        PIDs that reach it (None: do not reuse).  The grid is then kept while no
        register or parameter changed but an oscillator's frequency or phase
        (``model.loop_version``: the grid holds tones at one instant's values, which
        time moves as much), those PIDs'
        outputs stay within ``TABLE_HOLD_VOLTS`` and, behind a drifting
        plant, for ``TABLE_HOLD`` of model time: the grid is the loop's
        response to the output, which the drift moves only by its change of
        operating point over that time (a choice; every step still evaluates
        the error itself at its own time).
        """
        lo, hi = self.output_range()
        base = self.state_output()
        if hi <= lo:
            return np.array([base]), np.zeros(1)
        model = self.model
        cached = self._table
        key = (model.loop_version, lo, hi)
        if upstream is not None and cached is not None and cached[0] == key and self._table_holds(t, upstream):
            outs, errors = cached[1], cached[2]
        else:
            outs = np.linspace(lo, hi, TABLE_POINTS)
            quiet = EvalContext(None, 0.0)
            quiet.overrides[self.number] = outs
            errors = self.error(np.full(outs.shape, t), quiet)
            self._table = (key, outs, errors)
            self._table_at = (t, model.loop_version, {q.number: q.state_output() for q in upstream or ()})
        return outs, errors - float(np.interp(base, outs, errors))

    def _table_holds(self, t: float, upstream: list[Pid]) -> bool:
        """Whether the kept grid still holds at ``t`` (see :meth:`feedback_table`)."""
        made_at, version, ivals = self._table_at
        if any(abs(q.state_output() - ivals.get(q.number, np.inf)) > TABLE_HOLD_VOLTS for q in upstream):
            return False
        return self._holds_in_time(t, made_at, version)

    def cross_table(self, t: float, other: Pid, reuse: bool = False) -> tuple[list[float], list[float]]:
        """``(integrator values of other, error change)``: how this PID's error responds to
        another PID's integrator, with this PID's output held at its present value.

        The other PID's integrator is forced to a grid over its output range
        (widened to hold its present value) and this error re-evaluated through
        the routing, noise-free: the other's P term and clamps count.  The
        change is relative to the other's present integrator.  With
        :meth:`feedback_table` this is the separable (first-order in the
        mixed terms) model of the error of two coupled PIDs that
        :func:`advance_coupled` steps; the caller re-tabulates once the
        integrators have moved far.  ``reuse``: the grid may be kept as
        :meth:`feedback_table` keeps its own (this PID's output and the other's
        integrator within ``TABLE_HOLD_VOLTS`` of where it was made).
        """
        lo, hi = other.output_range()
        base = other.ival
        own = self.state_output()
        model = self.model
        key = (model.loop_version, lo, hi)
        cached = self._cross.get(other.number)
        if reuse and cached is not None and cached[0] == key and cached[4] <= base <= cached[5] \
                and abs(own - cached[3]) <= TABLE_HOLD_VOLTS and self._holds_in_time(t, cached[1], cached[2]):
            grid, errors = cached[6], cached[7]
        else:
            grid = np.linspace(min(lo, base), max(hi, base), TABLE_POINTS)
            quiet = EvalContext(None, 0.0)
            quiet.overrides[self.number] = own
            quiet.ivals[other.number] = grid
            errors = self.error(np.full(grid.shape, t), quiet)
            self._cross[other.number] = (key, t, model.loop_version, own, float(grid[0]), float(grid[-1]), grid, errors)
        return grid.tolist(), (errors - float(np.interp(base, grid, errors))).tolist()

    def _holds_in_time(self, t: float, made_at: float, version: int) -> bool:
        """A kept table's time condition: behind a drifting plant at most ``TABLE_HOLD`` old,
        otherwise made at the same ``model.loop_version`` (nothing changed since)."""
        plant = self.model.plant
        if plant is not None and plant.time_varying:
            return 0.0 <= t - made_at <= TABLE_HOLD
        return version == self.model.loop_version

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
        freqs, amps = self._input_tones(ctx)
        if len(freqs) == 0:
            return np.zeros(len(times))
        w = 2 * np.pi * np.asarray(freqs, dtype=float)
        x = w * dt
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(np.abs(x) > 1e-6, (1.0 - np.exp(-1j * x)) / (1j * x), 1.0)
        phasors = np.exp(1j * np.outer(np.asarray(times, dtype=float), w))
        return np.real(dot(phasors, np.asarray(amps) * (mean - 1.0)))

    def _input_tones(self, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
        """Frequencies and phasors of the tones at this PID's input, now.

        Kept for the rest of the access (same instant, same registers) when no
        integrator's state can change them (:meth:`DspBus.tones_follow_state`):
        coupled PIDs are stepped in up to 64 chunks per access, each asking.
        """
        model = self.model
        key = (model.version, model.clock.now())
        cached = self._tones_cache
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        s = model.bus.input_spectrum(self.number, ctx)
        fixed = self._fixed_tones
        if fixed is None or fixed[0] != model.version:
            fixed = self._fixed_tones = (model.version, not model.bus.tones_follow_state(self.input_slots()))
        if fixed[1]:
            self._tones_cache = (key, s.freqs, s.amps)
        return s.freqs, s.amps

    def input_slots(self) -> list[int]:
        """The bus slots this PID's error reads (its input; the other PID's too in differential mode)."""
        bus = self.model.bus
        slots = [bus.input_select[self.number]]
        if self.mode & 0b1000 and self.number in (0, 1):
            slots.append(bus.input_select[1 - self.number])
        return slots

    def advance(self, times: np.ndarray, dt: float, upstream: list[Pid] | None = None) -> None:
        """Advance the integrator through ``times`` (steps of ``dt`` seconds).

        The input is evaluated once, vectorised, with this PID's output held at
        its present value (``e_ext``); the feedback of its own output through
        the routing comes from :meth:`feedback_table`.  Each step is implicit
        Euler over that piecewise-linear feedback (:class:`_Loop`), so it is
        stable for any ``dt`` when the loop is negative feedback, also while
        the output leaves or enters a clamp; positive feedback runs away like
        the hardware does.  ``upstream``: this PID is stepped alone, after these
        moving PIDs that reach it (its table may be kept, :meth:`feedback_table`).
        """
        start = float(times[0]) - dt if len(times) else self.model.clock.now()
        outs, feedback = self.feedback_table(start, upstream)
        ctx = EvalContext(self.model.rng)
        ctx.overrides[self.number] = self.state_output()
        e_ext = self.error(times, ctx) + self._tone_averaging(times, dt, ctx)
        loop = _Loop(outs, feedback, p=self.p_gain, k_dt=self.i_rate * dt)
        ival, err, hist = loop.run(self.ival, self.last_err, e_ext.tolist())
        self.ival = float(ival)
        self.last_err = float(err)
        self._record(times, np.asarray(hist))


class _Loop:
    """One PID in its feedback loop: the implicit Euler step of its integrator.

    The error is ``e0 + F(out)`` (``e0``: the error with the output held at
    its present value, noise and tones included; ``F``: the tabulated feedback,
    piecewise linear) and the output is ``out = clamp(v + p * error)`` for an
    integrator value ``v``.  The implicit step ``v = ival + k_dt * error`` is
    solved for ``out``: on the linear part ``out - (p + k_dt) * F(out) =
    ival + (p + k_dt) * e0``, whose left side is increasing for a negative
    feedback loop, so the root is one bisection and one interpolation; below
    or above the table the output sits on its clamp.  That keeps a fast
    integrator on a rail from jumping across the linear region in one step,
    and follows a loop that only closes once another module leaves its rail.

    Where the left side is not increasing everywhere (a Pound-Drever-Hall
    error over the whole piezo range: negative feedback around each
    resonance, positive between them, once ``k_dt`` times the slope exceeds
    one), the step takes the root reached first from the present output in
    the direction the equation pushes it (:meth:`_walk`): the stable branch
    the loop sits on when it is locked, so a long step stays implicit and
    stable there (before, such tables were stepped explicitly, and steps of
    more than a few ms unlocked a 100 Hz PDH lock); across a positive-feedback
    stretch to the next stable branch or the rail, i.e. it runs away, as on
    the hardware.  A choice: within a step the runaway is complete.
    """

    __slots__ = ("outs", "feedback", "lhs", "p", "k_dt", "c", "monotonic")

    def __init__(self, outs: np.ndarray, feedback: np.ndarray, *, p: float, k_dt: float) -> None:
        self.p, self.k_dt, self.c = p, k_dt, p + k_dt
        lhs = outs - self.c * feedback
        self.monotonic = bool(np.all(np.diff(lhs) > 0))
        self.outs, self.feedback, self.lhs = outs.tolist(), feedback.tolist(), lhs.tolist()

    def _at(self, out: float) -> float:
        return float(np.interp(out, self.outs, self.feedback))

    def _walk(self, out: float, target: float) -> float:
        """``F`` at the first root of ``lhs(x) = target`` from ``out`` towards it, or at the clamp.

        ``lhs`` is piecewise linear on the table; from the segment holding
        ``out`` the walk goes right if ``lhs(out) < target``, left if above,
        until a segment crosses ``target``.  ``lhs(out) == target`` (to float
        rounding) stays: a loop exactly at its equilibrium, also an unstable
        one, as the board's integer sum does.
        """
        outs, lhs, feedback = self.outs, self.lhs, self.feedback
        last = len(outs) - 1
        j = min(max(bisect.bisect_right(outs, out) - 1, 0), last - 1)  # segment [j, j + 1] holds out
        x0 = outs[j]
        here = lhs[j] + (out - x0) / (outs[j + 1] - x0) * (lhs[j + 1] - lhs[j])
        if abs(here - target) <= 1e-12:  # float rounding of the table, far below a code (1.2e-4 V)
            return self._at(out)
        if here < target:  # rightwards: from out to the end of each segment
            start, level = out, here
            while True:
                end = lhs[j + 1]
                if end >= target:
                    x = start + (target - level) / (end - level) * (outs[j + 1] - start) if end != level else start
                    return self._at(x)
                if j + 1 == last:
                    return feedback[last]
                j += 1
                start, level = outs[j], lhs[j]
        start, level = out, here  # leftwards
        while True:
            end = lhs[j]
            if end <= target:
                x = start + (target - level) / (end - level) * (outs[j] - start) if end != level else start
                return self._at(x)
            if j == 0:
                return feedback[0]
            j -= 1
            start, level = outs[j + 1], lhs[j + 1]

    def run(self, ival: float, err: float, e_ext: list[float]) -> tuple[float, float, list[float]]:
        """Step through ``e_ext``: ``(integrator value, error, integrator history)``.

        One loop with everything in locals: it runs up to ``MAX_STEPS`` times
        per PID on every register access the simulator serves.
        """
        k_dt, c, p = self.k_dt, self.c, self.p
        outs, feedback, lhs = self.outs, self.feedback, self.lhs
        first_lhs, last_lhs = lhs[0], lhs[-1]
        first_f, last_f = feedback[0], feedback[-1]
        lo, hi = outs[0], outs[-1]
        monotonic = self.monotonic
        steps_per_volt = IVAL_STEPS_PER_VOLT
        hist = []
        for e0 in e_ext:
            if monotonic:
                target = ival + c * e0
                if target <= first_lhs:
                    f = first_f
                elif target >= last_lhs:
                    f = last_f
                else:
                    j = bisect.bisect_right(lhs, target)
                    l0 = lhs[j - 1]
                    f0 = feedback[j - 1]
                    f = f0 + (target - l0) / (lhs[j] - l0) * (feedback[j] - f0)
            else:  # not monotonic: the root on the present output's side (see the class doc)
                f = self._walk(min(max(ival + p * err, lo), hi), ival + c * e0)
            err = e0 + f
            ival = round((ival + k_dt * err) * steps_per_volt) / steps_per_volt
            if ival > IVAL_MAX:
                ival = IVAL_MAX
            elif ival < -4.0:
                ival = -4.0
            hist.append(ival)
        return ival, err, hist

    def step(self, ival: float, err: float, e0: float) -> tuple[float, float]:
        """One step of :meth:`run` (for PIDs stepped together, :func:`advance_coupled`)."""
        ival, err, _ = self.run(ival, err, (e0,))
        return ival, err


def _interp(x: float, grid: list[float], values: list[float]) -> float:
    """``np.interp`` for one value on a short increasing grid (no numpy call per step)."""
    if x <= grid[0]:
        return values[0]
    if x >= grid[-1]:
        return values[-1]
    j = bisect.bisect_right(grid, x)
    g0 = grid[j - 1]
    return values[j - 1] + (x - g0) / (grid[j] - g0) * (values[j] - values[j - 1])


#: coupled PIDs are re-tabulated once an integrator has moved by this fraction of its output range
RETABULATE_FRACTION = 1 / 16
#: at most this many tabulations per access for coupled PIDs (the last one runs to the end)
MAX_TABULATIONS = 8


def advance_coupled(pids: list[Pid], times: np.ndarray, dt: float) -> None:
    """Advance PIDs that reach each other's inputs (a loop through two or three integrators)
    through ``times`` (steps of ``dt``), together, step by step.

    Each PID's error is modelled as ``e_ext(t) + F(own output) + sum_j C_j(ival_j)``:
    ``e_ext`` evaluated once, vectorised, with every PID of the group held at
    its present state, ``F`` its own loop (:meth:`Pid.feedback_table`) and
    ``C_j`` the other integrators' effect (:meth:`Pid.cross_table`).  Every
    step solves each PID's own loop implicitly (:class:`_Loop`), fastest
    first, with the others' integrators as they are within the same step
    (Gauss-Seidel): the coupling lags by at most one step instead of by a
    chunk of steps, and an access costs one evaluation per PID instead of one
    per chunk.  The model is separable (mixed terms, e.g. both PIDs pushing
    one DAC into saturation, enter only through re-tabulation), so the tables
    are made again once any integrator has moved by ``RETABULATE_FRACTION``
    of its output range since they were made (at most ``MAX_TABULATIONS``
    times per access), and an access starts from the last access's tables
    while those hold (:meth:`Pid.feedback_table`).  A choice, checked against
    explicit Euler on a fine grid in tests/sim/test_pid_stepping.py.
    """
    n = len(times)
    start = 0
    tabulations = 0
    while start < n:
        part = times[start:]
        t0 = float(part[0]) - dt
        tabulations += 1
        loops: list[_Loop] = []
        crosses: list[list[tuple[int, list[float], list[float]]]] = []
        e_exts: list[list[float]] = []
        for a, p in enumerate(pids):
            # the first tables of an access may be those of the last (Pid.feedback_table); after a
            # large move within this access they are made again
            others = [q for q in pids if q is not p] if tabulations == 1 else None
            outs, feedback = p.feedback_table(t0, others)
            loops.append(_Loop(outs, feedback, p=p.p_gain, k_dt=p.i_rate * dt))
            crosses.append([(b, *p.cross_table(t0, q, tabulations == 1)) for b, q in enumerate(pids) if b != a])
            ctx = EvalContext(p.model.rng)
            ctx.overrides[p.number] = p.state_output()
            for q in pids:
                if q is not p:
                    ctx.ivals[q.number] = q.ival
            e_exts.append((p.error(part, ctx) + p._tone_averaging(part, dt, ctx)).tolist())
        ivals = [p.ival for p in pids]
        errs = [p.last_err for p in pids]
        limits = []
        for p in pids:
            lo, hi = p.output_range()
            limits.append(RETABULATE_FRACTION * max(hi - lo, 1e-3))
        hists: list[list[float]] = [[] for _ in pids]
        first = list(ivals)
        last = tabulations >= MAX_TABULATIONS
        steps = len(part)
        for k in range(len(part)):
            for a, loop in enumerate(loops):
                e0 = e_exts[a][k]
                for b, grid, values in crosses[a]:
                    e0 += _interp(ivals[b], grid, values)
                ivals[a], errs[a] = loop.step(ivals[a], errs[a], e0)
                hists[a].append(ivals[a])
            if not last and any(abs(ivals[a] - first[a]) > limits[a] for a in range(len(pids))):
                steps = k + 1
                break
        for a, p in enumerate(pids):
            p.ival = float(ivals[a])
            p.last_err = float(errs[a])
            p._record(part[:steps], np.asarray(hists[a]))
        start += steps
