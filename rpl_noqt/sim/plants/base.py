"""What every plant shares: wiring into the model, the drive it sees, its PyRPL config.

A plant sits between the DACs and the ADCs in place of the BNC cables of
:mod:`rpl_noqt.sim.analog`: it reads ``out1``/``out2`` and drives some of
``in1``/``in2`` (:attr:`Plant.inputs`); the other inputs keep their cable.
Like the rest of the model it is evaluated lazily, in model time, from two
views (see :mod:`rpl_noqt.sim.signals`):

* the **time domain**, :meth:`Plant.input`: volts at an array of model times,
  what the scope, the sampler and the PID integrators read;
* the **phasor view**, :meth:`Plant.input_spectrum`: a DC value and a list of
  steady-state tones, what the IQ modules and the network analyzer demodulate.

A plant's own state (drift, kicks, parameters) changes only through
:meth:`Plant._changing`, which does what every register write does: the PID
integrators are stepped and the scope records its samples up to that instant
with the old state, then the change lands at one instant of model time.

The hooks in the model (``FpgaModel.plant``, read by
``DspBus.analog_in``/``in_spectrum`` and the IQ route) are the only coupling;
a model without a plant behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dsp import EvalContext
from ..signals import Spectrum, dot

if TYPE_CHECKING:
    from ..fpga import FpgaModel


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number within bounds, or ``ValueError`` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"plant parameter {name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bound = ">" if low_open else ">="
        raise ValueError(f"plant parameter {name} must be {bound} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"plant parameter {name} must be <= {high:g}, got {value!r}")
    return value


class Plant:
    """Base class: a named physical system behind the outputs.

    Subclasses set :attr:`name`, :attr:`inputs` (the ADC channels they
    drive) and :attr:`defaults` (parameter -> default value), and implement
    :meth:`_input` and :meth:`_input_spectrum`.  Parameters are read and
    changed as attributes (``sim.plant.linewidth``) or with :meth:`set`.
    """

    name = "plant"
    #: ADC channels this plant drives (the others keep their cable)
    inputs: tuple[int, ...] = ()
    #: parameter name -> default value (documented in each subclass)
    defaults: dict[str, float] = {}
    #: True if the plant changes by itself (drift): the model then treats every
    #: access as a change of state (caches keyed on the register state are renewed)
    time_varying = False

    def __init__(self, **params: float) -> None:
        self.model: FpgaModel | None = None
        self._params: dict[str, float] = {}
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown {self.name} parameter(s) {sorted(unknown)}; allowed: {sorted(self.defaults)}")
        values = dict(self.defaults)
        values.update(params)
        self._store(self._validate(values))
        self._tones_cache: dict[int, tuple[Any, np.ndarray, np.ndarray, float]] = {}

    # -- parameters ----------------------------------------------------------------------
    def _validate(self, values: dict[str, float]) -> dict[str, float]:
        """Check every parameter; subclasses add ranges.  Returns the values as floats."""
        return {k: check_number(k, v) for k, v in values.items()}

    def _store(self, values: dict[str, float]) -> None:
        """Keep validated parameters, also as plain instance attributes: the model reads
        them hundreds of times per access, and a plain lookup does not go through
        :meth:`__getattr__`."""
        self.__dict__["_params"] = values
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> float:
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).defaults:
            self.set(**{name: value})
        else:
            super().__setattr__(name, value)

    @property
    def params(self) -> dict[str, float]:
        """The current parameters (a copy)."""
        return dict(self._params)

    def set(self, **params: float) -> None:
        """Change parameters at one instant of model time (validated first, all or none)."""
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown {self.name} parameter(s) {sorted(unknown)}; allowed: {sorted(self.defaults)}")
        values = dict(self._params)
        values.update(params)
        values = self._validate(values)
        with self._changing():
            self._store(values)

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, model: FpgaModel) -> None:
        """Called by ``FpgaModel.attach_plant``: from now on ``model`` asks this plant."""
        if self.model is not None and self.model is not model:
            raise ValueError(f"this {self.name} plant already belongs to another simulated board")
        self.model = model

    def drives(self, channel: int) -> bool:
        return channel in self.inputs

    @contextlib.contextmanager
    def _changing(self) -> Iterator[float]:
        """Apply a change of the plant at one instant, as a register write would be applied."""
        model = self.model
        if model is None:
            yield 0.0
            return
        with model.lock, model.clock.held() as now:
            model.advance()
            model._freeze_past()
            model._bump()
            yield now
            self._tones_cache.clear()

    def now(self) -> float:
        assert self.model is not None
        return self.model.clock.now()

    # -- what the outputs send ---------------------------------------------------------------
    def out_dc(self, channel: int) -> float:
        """The steady-state (DC) value of DAC ``channel`` now, from the same evaluation as :meth:`out_tones`."""
        self.out_tones(channel)
        return self._tones_cache[channel][3]

    def out_tones(self, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """``(freqs, amps)``: the steady-state tones of DAC ``channel`` now (phasor view).

        Computed from a fresh evaluation (no re-entry guards of the caller) and
        kept until the next register write or the next instant: a plant reads
        them at every evaluation.  While they are being computed, a nested
        request (a module whose input is this plant's output) gets no tones,
        and :meth:`out_dc` the last DC computed (the operating point a nested
        view linearises around; 0 V before, which put a locked cavity's nested
        view many linewidths off its resonance).
        """
        assert self.model is not None
        key = (self.model.version, self.model.clock.now())
        cached = self._tones_cache.get(channel)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        if cached is not None and cached[0] is None:  # being computed: a nested request
            return np.zeros(0), np.zeros(0, dtype=complex)
        last_dc = cached[3] if cached is not None else 0.0
        self._tones_cache[channel] = (None, np.zeros(0), np.zeros(0, dtype=complex), last_dc)
        try:
            s = self.model.bus.out_spectrum(channel, EvalContext(None, 0.0))
            dc = float(np.clip(s.dc, -1.0, 1.0))
            freqs = np.asarray(s.freqs, dtype=float)
            amps = np.asarray(s.amps, dtype=complex)
            keep = (freqs > 0) & (np.abs(amps) > 1e-12)
            freqs, amps = freqs[keep], amps[keep]
        except BaseException:
            self._tones_cache.pop(channel, None)
            raise
        self._tones_cache[channel] = (key, freqs, amps, dc)
        return freqs, amps

    def view_key(self) -> tuple[Any, ...]:
        """What the phasor view of this plant depends on: the model's version and instant,
        and which DACs' tones are being computed (a nested view lacks them, :meth:`out_tones`).
        Views kept under it are computed once per instant and nesting level."""
        assert self.model is not None
        nesting = frozenset(ch for ch, entry in self._tones_cache.items() if entry[0] is None)
        return self.model.version, self.model.clock.now(), nesting

    def out_voltage(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """DAC ``channel`` in volts at times ``t`` (the caller's loop guards apply)."""
        assert self.model is not None
        return self.model.bus.out_sum(channel, t, ctx)

    # -- the two views (subclasses) -------------------------------------------------------------
    def input(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        """ADC ``channel`` (one of :attr:`inputs`) in volts at times ``t``, before the ADC's offset and noise."""
        return self._input(channel, np.asarray(t, dtype=float), ctx)

    def input_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        """Steady-state view of ADC ``channel`` now."""
        return self._input_spectrum(channel, ctx)

    def _input(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        raise NotImplementedError

    def _input_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        raise NotImplementedError

    def demodulated(self, iq: Any, t: np.ndarray, ctx: EvalContext, second: bool) -> np.ndarray | None:
        """The output of an IQ module whose input this plant drives, or None for the IQ's own.

        Only plants whose inputs carry tones with a slowly varying envelope
        (the Fabry-Perot's Pound-Drever-Hall beat) need this.
        """
        return None

    # -- the model's answer, for tests and users ----------------------------------------------------
    def transfer_function(self, freqs: np.ndarray, output: int = 1, input: int = 1) -> np.ndarray:  # noqa: A002
        """Small-signal response (V/V) from DAC ``output`` to ADC ``input`` at ``freqs`` (Hz), now."""
        raise NotImplementedError

    def pyrpl_config(self) -> dict[str, Any]:
        """A PyRPL configuration (the YAML tree as a dict) for this plant, lockbox included."""
        raise NotImplementedError

    def describe(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self._params.items())
        return f"{self.name}({params})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class LinearPlant(Plant):
    """A linear, time-invariant plant from ``out<output>`` to ``in<input>``: ``H(f)``.

    Phasor view: exact, every tone of the output times ``H(f)``, the DC value
    times ``H(0)``.  Time domain (a modelling choice, as for the IIR module):
    the output's steady-state tones go through ``H(f)`` exactly and what is
    left (DC, a PID moving, ramps, steps) through the DC gain ``H(0)``, i.e.
    the plant follows slow changes at once; ring-downs and the transient of a
    step are not modelled.
    """

    output = 1
    inputs = (1,)

    def response(self, freqs: np.ndarray) -> np.ndarray:
        """``H(f)`` (complex, V/V)."""
        raise NotImplementedError

    def transfer_function(self, freqs: np.ndarray, output: int = 1, input: int = 1) -> np.ndarray:  # noqa: A002
        freqs = np.asarray(freqs, dtype=float)
        if output != self.output or input not in self.inputs:
            raise ValueError(f"the {self.name} plant goes from out{self.output} to in{self.inputs[0]}, "
                             f"not out{output} -> in{input}")
        return self.response(freqs)

    def _dc_gain(self) -> float:
        return float(np.real(self.response(np.zeros(1))[0]))

    def linear_lockbox_config(self, *, setpoint: float, unity_gain_frequency: float) -> dict[str, Any]:
        """PyRPL's ``Linear`` lockbox holding in1 at ``setpoint`` with out1 through this plant.

        ``dc_gain`` is the plant's with the opposite sign: PyRPL's PID error is
        input - setpoint (see :mod:`.lowpass`).
        """
        return {
            "lockbox": {
                "classname": "Linear",
                "default_sweep_output": "output1",
                "inputs": {"input1": {"input_signal": "in1"}},
                "outputs": {
                    "output1": {
                        "output_channel": "out1",
                        "unit": "V/V",
                        "dc_gain": -self._dc_gain(),
                        "desired_unity_gain_frequency": unity_gain_frequency,
                        "sweep_amplitude": 0.5,
                        "sweep_frequency": 50.0,
                    },
                },
                "sequence": [
                    {
                        "input": "input1",
                        "setpoint": setpoint,
                        "duration": 0.0,
                        "outputs": {"output1": {"lock_on": True, "reset_offset": True, "offset": 0.0}},
                    },
                ],
            },
        }

    def _input(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        h0 = self._dc_gain()
        v = h0 * self.out_voltage(self.output, t, ctx)
        freqs, amps = self.out_tones(self.output)
        if len(freqs):
            coef = (self.response(freqs) - h0) * amps
            keep = np.abs(coef) > 1e-12
            if keep.any():
                v = v + np.real(dot(np.exp(2j * np.pi * np.outer(t.ravel(), freqs[keep])), coef[keep])).reshape(t.shape)
        return v

    def _input_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        assert self.model is not None
        s = self.model.bus.out_spectrum(self.output, ctx)
        h0 = self._dc_gain()
        amps = s.amps * self.response(s.freqs) if len(s.freqs) else s.amps
        return Spectrum(dc=h0 * s.dc, freqs=np.asarray(s.freqs, dtype=float).copy(), amps=amps,
                        noise=abs(h0) * s.noise)
