"""The DSP bus of ``red_pitaya_dsp.v`` at 0x40300000 + n * 0x10000.

Every slot ``n`` has ``input_select`` (0x0), ``output_select`` (0x4, bit 0 adds
the module's direct output to out1, bit 1 to out2), the saturation flags (0x8),
the *global* sync register (0xC, one bit per module: a cleared bit pauses or
resets the module) and the sampler word ``output_signal`` (0x10).  Slot numbers
follow ``DSP_INPUTS`` in pyrpl: pid0..2 = 0..2, trig 3, iir 4, iq0..2 = 5..7,
asg0/1 = 8/9 (whose input_select feeds scope ch1/ch2), in1/in2 = 10/11,
out1/out2 = 12/13, the second quadrature of iq2 = 14, nothing = 15.

Signals are evaluated on demand at arbitrary times: :meth:`DspBus.signal`
returns the output of a slot in volts for an array of model times, following
the routing registers.  Feedback loops (out1 -> in1 -> pid0 -> out1) are cut
with a re-entry guard: a module reached a second time in the same evaluation
answers from its internal state (e.g. the PID integrator), which is what the
pipeline registers of the real design do on a much shorter time scale.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from .signals import Spectrum, sat_volts, signed, volts_to_code

if TYPE_CHECKING:
    from .fpga import FpgaModel

log = logging.getLogger(__name__)

DSP_BASE = 0x40300000
NONE = 15
SLOT_NAMES = {
    0: "pid0", 1: "pid1", 2: "pid2", 3: "trig", 4: "iir", 5: "iq0", 6: "iq1", 7: "iq2",
    8: "asg0", 9: "asg1", 10: "in1", 11: "in2", 12: "out1", 13: "out2", 14: "iq2_2", 15: "off",
}
MODULES = 8  # slots with a real module behind them (pid, trig, iir, iq)


class EvalContext:
    """State of one signal evaluation: the re-entry guard and test overrides."""

    def __init__(self, rng: np.random.Generator | None, noise_scale: float = 1.0) -> None:
        self.stack: set[tuple[str, int]] = set()
        self.rng = rng if noise_scale > 0 else None
        self.noise_scale = noise_scale
        self.overrides: dict[int, float | np.ndarray] = {}  # slot -> forced output (scalar or per time)
        #: PID slot -> forced integrator value (scalar or per time): the cross tables of coupled PIDs (pid.py)
        self.ivals: dict[int, float | np.ndarray] = {}


class DspBlock:
    """Base class of the modules behind slots 0..7 (one bus window each)."""

    number: int = 0

    def __init__(self, model: FpgaModel, number: int) -> None:
        self.model = model
        self.number = number

    # -- bus -------------------------------------------------------------
    def read(self, offset: int) -> int:
        return 0

    def write(self, offset: int, value: int) -> None:
        """Unmapped offsets are ignored, as in the RTL ``default`` branches."""

    # -- signals ----------------------------------------------------------
    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        return np.zeros(np.shape(t))

    def output_direct(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        return self.output_signal(t, ctx)

    def fallback(self, t: np.ndarray, ctx: EvalContext | None = None) -> np.ndarray:
        """Output used when a feedback loop re-enters this module."""
        return np.zeros(np.shape(t))

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        return Spectrum()

    def direct_spectrum(self, ctx: EvalContext) -> Spectrum:
        return self.signal_spectrum(ctx)

    def on_sync(self, old: bool, new: bool, now: float) -> None:
        """Called when this module's bit of the global sync register changes."""


class DspBus:
    """Routing registers plus signal evaluation across all slots."""

    def __init__(self, model: FpgaModel) -> None:
        self.model = model
        # reset values of red_pitaya_dsp.v
        self.input_select = [10] * 16
        self.input_select[9] = 11  # scope ch2 <- in2
        self.input_select[10] = NONE  # pwm0
        self.input_select[11] = NONE  # pwm1
        self.output_select = [0] * 16
        self.vco_select = [NONE] * 16
        self.sync = (1 << MODULES) - 1
        self.blocks: dict[int, DspBlock] = {}

    # -- bus access -------------------------------------------------------
    def read(self, address: int) -> int:
        slot = (address >> 16) & 0xF
        offset = address & 0xFFFF
        if offset == 0x00:
            return self.input_select[slot] & 0xF
        if offset == 0x04:
            return self.output_select[slot] & 0x3
        if offset == 0x08:
            return self._saturation_flags()
        if offset == 0x0C:
            return self.sync
        if offset == 0x10:
            now = self.model.clock.now()
            ctx = EvalContext(self.model.rng)
            return int(volts_to_code(self.signal(slot, np.array([now]), ctx))[0])
        if offset == 0x14:
            return self.vco_select[slot] & 0xF
        block = self.blocks.get(slot)
        return block.read(offset) if block is not None else 0

    def write(self, address: int, value: int) -> None:
        slot = (address >> 16) & 0xF
        offset = address & 0xFFFF
        if offset == 0x00:
            self.input_select[slot] = value & 0xF
        elif offset == 0x04:
            self.output_select[slot] = value & 0x3
        elif offset == 0x0C:
            self._write_sync(value & ((1 << MODULES) - 1))
        elif offset == 0x14:
            if slot < MODULES:
                self.vco_select[slot] = value & 0xF
        elif offset not in (0x08, 0x10):
            block = self.blocks.get(slot)
            if block is not None:
                block.write(offset, value)

    def _write_sync(self, value: int) -> None:
        old = self.sync
        self.sync = value
        now = self.model.clock.now()
        for n, block in self.blocks.items():
            o, v = bool(old >> n & 1), bool(value >> n & 1)
            if o != v:
                block.on_sync(o, v, now)

    def synced(self, number: int) -> bool:
        return bool(self.sync >> number & 1)

    def _saturation_flags(self) -> int:
        now = np.array([self.model.clock.now()])
        flags = 0
        for ch in (1, 2):
            raw = self.out_sum(ch, now, EvalContext(None, 0.0), saturate=False)[0]
            if raw > 1.0 or raw < -1.0:
                flags |= 1 << (ch - 1)
        return flags

    # -- signal evaluation -------------------------------------------------
    def signal(self, slot: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """``output_signal[slot]`` in volts at times ``t``."""
        t = np.asarray(t, dtype=float)
        if slot in ctx.overrides:
            return np.full(t.shape, ctx.overrides[slot])
        if slot >= MODULES and slot != 14:  # no state: a loop always passes through a module
            return self._route(slot, t, ctx)
        block = self.blocks[7 if slot == 14 else slot]
        key = ("sig", block.number)
        if key in ctx.stack:
            return block.fallback(t, ctx)
        ctx.stack.add(key)
        try:
            return self._route(slot, t, ctx)
        finally:
            ctx.stack.discard(key)

    def _route(self, slot: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        if slot < MODULES:
            plant = self.model.plant
            if plant is not None and slot >= 5:  # an IQ module may demodulate a plant's slowly varying tone
                out = plant.demodulated(self.blocks[slot], t, ctx, False)
                if out is not None:
                    return out
            return self.blocks[slot].output_signal(t, ctx)
        if slot in (8, 9):
            return self.model.asg[slot - 8].output(t)
        if slot in (10, 11):
            return self.analog_in(slot - 9, t, ctx)
        if slot in (12, 13):
            return self.out_sum(slot - 11, t, ctx)
        if slot == 14:
            plant = self.model.plant
            if plant is not None:
                out = plant.demodulated(self.blocks[7], t, ctx, True)
                if out is not None:
                    return out
            return self.blocks[7].second_quadrature(t, ctx)  # type: ignore[attr-defined]
        return np.zeros(t.shape)

    def input_of(self, slot: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        sel = self.input_select[slot]
        if sel == NONE:
            return np.zeros(np.shape(t))
        return self.signal(sel, t, ctx)

    def direct(self, slot: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        if slot in ctx.overrides:
            return np.full(np.shape(t), ctx.overrides[slot])
        if slot < MODULES:
            key = ("sig", slot)
            if key in ctx.stack:
                return self.blocks[slot].fallback(t, ctx)
            ctx.stack.add(key)
            try:
                return self.blocks[slot].output_direct(t, ctx)
            finally:
                ctx.stack.discard(key)
        return self.model.asg[slot - 8].output(t)

    def out_sum(self, channel: int, t: np.ndarray, ctx: EvalContext, saturate: bool = True) -> np.ndarray:
        """DAC ``channel`` (1/2): sum of the selected direct outputs, saturated."""
        total = None  # starting from the first term rather than zeros: the same sum, a pass less per term
        bit = 1 << (channel - 1)
        for slot in range(MODULES + 2):
            if self.output_select[slot] & bit:
                term = self.direct(slot, t, ctx)
                total = term if total is None else total + term
        if total is None:
            return np.zeros(np.shape(t))
        return sat_volts(total) if saturate else np.asarray(total, dtype=float)

    def analog_in(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """ADC ``channel``: the loopback cable (or the plant driving it) plus injected tones and noise."""
        fe = self.model.analog
        lb = fe.loopback[channel]
        # terms that are exactly 0 are left out (the same sum, fewer passes over the samples)
        v = np.full(np.shape(t), lb.offset, dtype=float) if lb.offset else None
        plant = self.model.plant
        if plant is not None and plant.drives(channel):
            term = plant.input(channel, t, ctx)
            v = term if v is None else v + term
        elif lb.gain:
            term = self.out_sum(channel, t - lb.delay if lb.delay else t, ctx)
            if lb.gain != 1.0:
                term = lb.gain * term
            v = term if v is None else v + term
        tones = fe.tone_spectrum(channel)
        if len(tones.freqs) or tones.dc or (tones.noise and ctx.rng is not None):
            term = tones.evaluate(t, ctx.rng, ctx.noise_scale)
            v = term if v is None else v + term
        if fe.rolloff is not None:  # each steady-state tone gets (H - 1) of itself added (analog.py)
            term = self._rolloff_term(channel, np.asarray(t, dtype=float), ctx)
            v = term if v is None else v + term
        if v is None:
            return np.zeros(np.shape(t))
        divider = fe.divider(channel)
        return sat_volts(v if divider == 1.0 else v / divider)

    def _rolloff_term(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """``sum Re((H(f_k) - 1) a_k exp(i w_k t))`` over the steady-state tones reaching ADC
        ``channel``: what the front end's roll-off (``analog.py``) adds to the unfiltered signal.

        A generator's output is held for each of its cycles (its grid starts at
        its trigger), so its tones are taken at the start of the cycle that
        holds ``t``, where its time-domain value and its spectrum agree.
        """
        fe = self.model.analog
        ro = fe.rolloff
        lb = fe.loopback[channel]
        total = np.zeros(np.shape(t))
        plant = self.model.plant
        if plant is not None and plant.drives(channel):
            s = plant.input_spectrum(channel, ctx)
            total += Spectrum(freqs=s.freqs, amps=s.amps * (ro.adc(s.freqs) - 1.0)).evaluate(t)
        elif lb.gain:
            td = t - lb.delay if lb.delay else t
            bit = 1 << (channel - 1)
            for slot in range(MODULES + 2):
                if not self.output_select[slot] & bit:
                    continue
                if slot < MODULES:
                    key = ("spec", slot)
                    if key in ctx.stack:
                        continue
                    ctx.stack.add(key)
                    try:
                        s = self.blocks[slot].direct_spectrum(ctx)
                    finally:
                        ctx.stack.discard(key)
                    te = td
                else:
                    asg = self.model.asg[slot - 8]
                    s = asg.spectrum()
                    te = asg.cycle_start(td)
                if len(s.freqs):
                    h = ro.dac(s.freqs) * ro.adc(s.freqs) - 1.0
                    total += lb.gain * Spectrum(freqs=s.freqs, amps=s.amps * h).evaluate(te)
        tones = fe.tone_spectrum(channel)
        if len(tones.freqs):
            total += Spectrum(freqs=tones.freqs, amps=tones.amps * (ro.adc(tones.freqs) - 1.0)).evaluate(t)
        return total

    def upstream_modules(self, slot: int) -> set[int]:
        """Modules (slots 0..7) whose outputs may reach ``output_signal[slot]``, the module itself included.

        Follows the routing registers: a module's input (and, for pid0/pid1 in
        differential mode, the other one's, which it subtracts), the outputs summed
        into a DAC, and a DAC back to an ADC: through the cable (out<n> to
        in<n>, unless its gain is 0) or, with a plant, from both DACs to both
        ADCs.  Conservative: a path the signals might not take still counts.
        """
        plant = getattr(self.model, "plant", None) is not None
        cables = self.model.analog.loopback
        found: set[int] = set()
        seen: set[int] = set()
        todo = [slot]
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            if s < MODULES or s == 14:
                n = 7 if s == 14 else s
                found.add(n)
                todo.append(self.input_select[n])
                if self._differential(n):
                    todo.append(self.input_select[1 - n])
            elif s in (10, 11):
                if plant:
                    todo.extend((12, 13))
                elif cables[s - 9].gain:
                    todo.append(s + 2)
            elif s in (12, 13):
                bit = 1 << (s - 12)
                todo.extend(m for m in range(MODULES) if self.output_select[m] & bit)
        return found

    def _differential(self, n: int) -> bool:
        """pid0/pid1 in differential mode: the error also reads the other one's input."""
        return n in (0, 1) and bool(getattr(self.blocks.get(n), "mode", 0) & 0b1000)

    def tones_follow_state(self, slots: list[int]) -> bool:
        """Whether the tones in the spectra of ``slots`` may change with a module's state.

        In the phasor view the tones of a signal follow the registers and
        the time only, except where a DC level (a PID's integrator) becomes a
        tone: an IQ quadrature demodulates its input's DC into a tone at the
        local oscillator's frequency.  Conservative: an IQ quadrature, the IIR
        or a plant on the way counts as such a place.
        """
        if getattr(self.model, "plant", None) is not None:
            return True
        seen: set[tuple[int, bool]] = set()
        todo = [(slot, True) for slot in slots]  # (slot, reached as a signal rather than a DAC's direct output)
        while todo:
            s, as_signal = todo.pop()
            if (s, as_signal) in seen:
                continue
            seen.add((s, as_signal))
            if s == 14 or s == 4:
                return True
            if s < MODULES:
                if 5 <= s <= 7:
                    select = self.blocks[s].output_select  # type: ignore[attr-defined]
                    if as_signal and select == 0:
                        return True
                    if as_signal and select not in (0, 1):
                        continue  # no output
                todo.append((self.input_select[s], True))
                if self._differential(s):
                    todo.append((self.input_select[1 - s], True))
            elif s in (10, 11):
                todo.extend(((12, True), (13, True)))
            elif s in (12, 13):
                bit = 1 << (s - 12)
                todo.extend((m, False) for m in range(MODULES) if self.output_select[m] & bit)
        return False

    # -- phasor view ----------------------------------------------------------
    def spectrum(self, slot: int, ctx: EvalContext) -> Spectrum:
        """Steady-state spectrum of ``output_signal[slot]``."""
        if slot >= MODULES and slot != 14:
            return self._route_spectrum(slot, ctx)
        key = ("spec", 7 if slot == 14 else slot)
        if key in ctx.stack:
            return Spectrum()
        ctx.stack.add(key)
        try:
            return self._route_spectrum(slot, ctx)
        finally:
            ctx.stack.discard(key)

    def _route_spectrum(self, slot: int, ctx: EvalContext) -> Spectrum:
        if slot < MODULES:
            return self.blocks[slot].signal_spectrum(ctx)
        if slot in (8, 9):
            return self.model.asg[slot - 8].spectrum()
        if slot in (10, 11):
            return self.in_spectrum(slot - 9, ctx)
        if slot in (12, 13):
            return self.out_spectrum(slot - 11, ctx)
        if slot == 14:
            return self.blocks[7].second_quadrature_spectrum(ctx)  # type: ignore[attr-defined]
        return Spectrum()

    def input_spectrum(self, slot: int, ctx: EvalContext) -> Spectrum:
        sel = self.input_select[slot]
        return Spectrum() if sel == NONE else self.spectrum(sel, ctx)

    def out_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        total = Spectrum()
        bit = 1 << (channel - 1)
        for slot in range(MODULES + 2):
            if self.output_select[slot] & bit:
                if slot < MODULES:
                    key = ("spec", slot)
                    if key in ctx.stack:
                        continue
                    ctx.stack.add(key)
                    try:
                        total = total + self.blocks[slot].direct_spectrum(ctx)
                    finally:
                        ctx.stack.discard(key)
                else:
                    total = total + self.model.asg[slot - 8].spectrum()
        return total

    def in_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        fe = self.model.analog
        lb = fe.loopback[channel]
        plant = self.model.plant
        ro = fe.rolloff
        if plant is not None and plant.drives(channel):
            out = plant.input_spectrum(channel, ctx)
            if ro is not None:
                out = Spectrum(out.dc, out.freqs, out.amps * ro.adc(out.freqs), out.noise)
        else:
            out = self.out_spectrum(channel, ctx).scaled(lb.gain).delayed(lb.delay)
            if ro is not None:
                out = Spectrum(out.dc, out.freqs, out.amps * ro.dac(out.freqs) * ro.adc(out.freqs), out.noise)
        out.dc += lb.offset
        tones = fe.tone_spectrum(channel)
        if ro is not None:
            tones = Spectrum(tones.dc, tones.freqs, tones.amps * ro.adc(tones.freqs), tones.noise)
        out = out + tones
        divider = fe.divider(channel)
        return out if divider == 1.0 else out.scaled(1.0 / divider)


def slot_of(address: int) -> int:
    """DSP slot number addressed by an absolute bus address."""
    return (address - DSP_BASE) >> 16 & 0xF


def signed14(value: int) -> int:
    return signed(value, 14)
