"""``fabry-perot``: an optical cavity behind a piezo, with a Pound-Drever-Hall sideband source.

Wiring (the default, matching the shipped PyRPL config):

* **out1** drives the piezo that sets the cavity length (through a
  first-order low-pass, ``piezo_bandwidth``); positive volts lengthen the
  cavity, which lowers its resonance frequency and raises the detuning.
* **out2** drives a phase modulator (EOM) in front of the cavity: every tone
  of out2 at or above ``eom_min_frequency`` phase-modulates the laser with
  depth ``beta = eom_gain * amplitude`` (rad).  An IQ module set up by PyRPL's
  ``FPPdh`` input (``mod_output: out2``) makes the PDH sidebands this way.
* **in1** is the transmission photodiode, **in2** the reflection photodiode.

Model (a choice, in PyRPL's own conventions, ``software_modules/lockbox/models/fabryperot.py``):
the detuning in half linewidths (PyRPL's ``bandwidth`` unit) is

    x(t) = detuning + k_pz * u(t) + drift(t) + acoustic(t) + kicks(t)

with ``k_pz = piezo_gain / (wavelength / (4 finesse))`` (HWHM per volt; the
length of one HWHM is PyRPL's ``_bandwidth_in_m``) and ``u`` out1 through the
piezo low-pass.  The cavity's field response is the Airy function
``A(x) = (1 - rho) / (1 - rho exp(-i pi x / F))`` (``F`` the finesse, ``rho``
the round-trip amplitude factor with ``F = pi sqrt(rho) / (1 - rho)``), which
is PyRPL's ``1 / (1 + i x)`` near a resonance; the reflected field is
``a_ref(x) = 1 - eta A(x)`` (PyRPL's ``a_ref``).  With carrier ``C0 = prod J0(beta_k)``
and sidebands ``S_k = J1(beta_k) prod_{j != k} J0(beta_j)`` at ``x +- s_k``
(``s_k = Omega_k / HWHM``):

    in1 = transmission * (C0^2 |A(x)|^2 + sum_k S_k^2 (|A(x+s_k)|^2 + |A(x-s_k)|^2))
    in2 = reflection * (C0^2 |a_ref(x)|^2 + sum_k S_k^2 (|a_ref(x+s_k)|^2 + |a_ref(x-s_k)|^2))
          + sum_k Re(c_k exp(i Omega_k t))
    c_k = 2 reflection C0 S_k (a_k / |a_k|) i_ref(x),
    i_ref = i (conj(a_ref(x)) a_ref(x+s_k) - a_ref(x) conj(a_ref(x-s_k)))

where ``a_k`` is the phasor of the out2 tone.  An IQ module demodulating in2
at ``Omega_k`` with phase ``phi`` therefore reports ``Re(i_ref exp(i phi))``
times a positive factor: exactly PyRPL's ``FPAnalogPdh._pdh_normalized``
(``phase=mod_phase``), so PyRPL's calibration and gain design apply
unchanged.  (The IQ's 3-cycle pipeline and AC coupling rotate it by a few
degrees at 500 kHz.)  The cavity follows the detuning adiabatically (its
pole, one HWHM = 100 kHz by default, is far above the piezo's); the
transmission carries no beat at ``Omega``.

**Lazy evaluation.**  The time-domain inputs are evaluated at any times the
model asks for.  In the phasor view (what IQ modules demodulate) the PDH beat
is a tone whose amplitude ``c_k`` is taken at the detuning of the present
state; an IQ module demodulating in2 adds, per evaluation time, the change
``c_k(x(t)) - c_k(x_now)`` through its own linear response
(:meth:`FabryPerot.demodulated`): the quasi-static demodulated PDH signal,
so a PID integrating it sees the error signal at every step of its loop.
Small tones on out1 (network analyzer: ``|k_pz H_pz a| < 0.3`` HWHM) appear
in the phasor view linearised around the present detuning; larger ones
(a sweep) only in the time domain.

**Noise.**  ``drift``: a slow wander, the sum of four sines with periods
``drift_period * (1, 0.53, 0.29, 0.17)`` and random phases, ``drift`` HWHM
rms; ``acoustic``: eight sines between 100 Hz and 1 kHz, ``acoustic`` HWHM
rms.  Both are fixed functions of model time (seeded), so every reader of an
instant sees the same cavity.  :meth:`FabryPerot.kick` adds a step.  Detector
noise is the ADC noise of the cable model (``sim.model.set_loopback(2,
noise=...)``, ``rpl-noqt sim --noise``).

Parameters (defaults): ``linewidth`` 200 kHz (FWHM), ``finesse`` 500,
``wavelength`` 1064 nm, ``piezo_gain`` 10 nm/V (about 18.8 HWHM/V),
``piezo_bandwidth`` 5 kHz, ``drift`` 2 HWHM rms, ``drift_period`` 60 s,
``acoustic`` 0.05 HWHM rms, ``detuning`` 0 HWHM (static offset),
``transmission`` 0.8 V (peak without sidebands), ``reflection`` 0.7 V (off
resonance), ``eta`` 1.0 (PyRPL's coupling ratio), ``eom_gain`` 5 rad/V,
``eom_min_frequency`` 100 kHz.  The round-trip length PyRPL needs follows:
``c / (linewidth * finesse)``, 3.0 m.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import j0 as _j0
from scipy.special import j1 as _j1

from .. import filters
from ..dsp import EvalContext
from ..iq import INPUT_FILTER, PIPELINE_CYCLES
from ..signals import CYCLE, Spectrum, phasor_sum, sat_volts, significant
from .base import Plant, check_number

#: the speed of light as PyRPL's FabryPerot.free_spectral_range takes it (2.998e8), so that the
#: round-trip length in the shipped config gives PyRPL exactly the plant's linewidth
C_LIGHT = 2.998e8
#: tones of out1 smaller than this (HWHM of detuning) appear linearised in the phasor view
SMALL_SIGNAL = 0.3
_DRIFT_PERIODS = np.array([1.0, 0.53, 0.29, 0.17])
_DRIFT_WEIGHTS = np.array([1.0, 0.6, 0.4, 0.25])
_ACOUSTIC_FREQS = np.geomspace(100.0, 1000.0, 8)
#: spacing (HWHM) of the tabulated photodiode powers that long arrays of detunings are
#: interpolated in: linear interpolation is then within h^2/8 max|P''| = 1.5e-6 of the
#: peak power (0.01 ADC codes at 0.8 V), see FabryPerot._powers
POWER_TABLE_STEP = 2.0**-9
#: arrays of at least this many detunings use the table, built or grown for them (fewer: the direct formula)
POWER_TABLE_MIN = 2048
#: arrays of at least this many detunings use a table that already covers them (a scope
#: chunk of a few hundred sub-samples: the direct formula costs a sine per sideband each)
POWER_TABLE_REUSE_MIN = 64
#: a new or growing table reaches at least this many grid points (4 HWHM) beyond what was asked
POWER_TABLE_MARGIN = 2048
#: the table never holds more points than this (about 1000 HWHM); a wider span is computed directly
POWER_TABLE_MAX = 2**19


def bessel_j(n: int, beta: np.ndarray | float) -> np.ndarray:
    """``J_n(beta)`` for n = 0, 1 (scipy's ``j0``/``j1``: a 30-term series in numpy cost
    60 array operations, at every instant where out2's tones move, e.g. a PID on it)."""
    if n not in (0, 1):
        raise ValueError(f"bessel_j: n must be 0 or 1, got {n!r}")
    return (_j0 if n == 0 else _j1)(np.asarray(beta, dtype=float))


class FabryPerot(Plant):
    name = "fabry-perot"
    inputs = (1, 2)
    time_varying = True
    defaults = {
        "linewidth": 200e3,
        "finesse": 500.0,
        "wavelength": 1064e-9,
        "piezo_gain": 10e-9,
        "piezo_bandwidth": 5e3,
        "drift": 2.0,
        "drift_period": 60.0,
        "acoustic": 0.05,
        "detuning": 0.0,
        "transmission": 0.8,
        "reflection": 0.7,
        "eta": 1.0,
        "eom_gain": 5.0,
        "eom_min_frequency": 100e3,
    }
    #: the shipped PyRPL config's modulation (Hz, V): sidebands at 5 HWHM by default
    mod_freq = 500e3
    mod_amp = 0.1

    def __init__(self, seed: int | None = 0, **params: float) -> None:
        super().__init__(**params)
        rng = np.random.default_rng(seed)
        self._drift_phases = rng.uniform(0, 2 * np.pi, len(_DRIFT_PERIODS))
        self._acoustic_phases = rng.uniform(0, 2 * np.pi, len(_ACOUSTIC_FREQS))
        self._kicks: list[tuple[float, float]] = []  # (model time, step in HWHM)
        #: nesting level -> (view key, state): see _state
        self._state_cache: dict[frozenset[int], tuple[Any, dict[str, Any]]] = {}
        #: (channel, nesting level) -> (view key, Spectrum): the phasor view of each photodiode
        self._spectrum_cache: dict[tuple[int, frozenset[int]], tuple[Any, Spectrum]] = {}
        #: channel -> (optics key, first grid index, powers on the grid): see _powers
        self._power_tables: dict[int, tuple[tuple[Any, ...], int, np.ndarray]] = {}
        #: (times, evaluation, key, detuning) of the last long evaluation: see detuning_at
        self._detuning_memo: tuple[np.ndarray, EvalContext, tuple[Any, ...], np.ndarray] | None = None

    def _validate(self, values: dict[str, float]) -> dict[str, float]:
        v = {k: check_number(k, values[k]) for k in self.defaults}
        positive = ("linewidth", "finesse", "wavelength", "piezo_bandwidth", "drift_period", "eom_min_frequency")
        for name in positive:
            v[name] = check_number(name, v[name], low=0.0, low_open=True)
        for name in ("drift", "acoustic"):
            v[name] = check_number(name, v[name], low=0.0)
        v["finesse"] = check_number("finesse", v["finesse"], low=1.0, high=1e7)
        v["eta"] = check_number("eta", v["eta"], low=0.0, high=1.0)
        v["eom_gain"] = check_number("eom_gain", v["eom_gain"], low=0.0, high=50.0)
        for name in ("transmission", "reflection"):
            v[name] = check_number(name, v[name], low=0.0, high=2.0)
        return v

    # -- derived quantities ---------------------------------------------------------------------
    @property
    def hwhm_hz(self) -> float:
        return self.linewidth / 2.0

    @property
    def hwhm_m(self) -> float:
        """Cavity length change for one HWHM of detuning (PyRPL's ``_bandwidth_in_m``)."""
        return self.wavelength / self.finesse / 4.0

    @property
    def hwhm_per_volt(self) -> float:
        """Detuning (HWHM) per volt on out1 at DC."""
        return self.piezo_gain / self.hwhm_m

    @property
    def round_trip_length(self) -> float:
        return C_LIGHT / (self.linewidth * self.finesse)

    def _rho(self) -> float:
        """Round-trip amplitude factor for the finesse (kept per finesse: every optics call needs it)."""
        cached = self.__dict__.get("_rho_cache")
        if cached is not None and cached[0] == self.finesse:
            return cached[1]
        a = self.finesse / math.pi
        u = (-1.0 + math.sqrt(1.0 + 4.0 * a * a)) / (2.0 * a)
        self.__dict__["_rho_cache"] = (self.finesse, u * u)
        return u * u

    def field(self, x: np.ndarray) -> np.ndarray:
        """Normalised intracavity (transmitted) field ``A(x)``, 1 on resonance."""
        rho = self._rho()
        return (1.0 - rho) / (1.0 - rho * np.exp(-1j * np.pi * np.asarray(x, dtype=float) / self.finesse))

    def a_ref(self, x: np.ndarray) -> np.ndarray:
        return 1.0 - self.eta * self.field(x)

    def _shape_power(self, half_sin: np.ndarray, channel: int) -> np.ndarray:
        """``|A(x)|^2`` (channel 1) or ``|a_ref(x)|^2`` (channel 2) from ``q = sin(pi x / (2 F))``.

        The same as ``abs(field(x))**2`` and ``abs(a_ref(x))**2`` in real
        arithmetic, without complex exponentials or divisions:
        ``|1 - rho e^{-i th}|^2 = (1 - rho)^2 + 4 rho q^2`` (no cancellation at a
        high finesse), ``Re A = (1 - rho) ((1 - rho) + 2 rho q^2) / D``.
        """
        rho = self._rho()
        g = 1.0 - rho
        q2 = half_sin * half_sin
        inv = 1.0 / (g * g + 4.0 * rho * q2)
        power = g * g * inv
        if channel == 1:
            return power
        eta = self.eta
        re = g * (g + 2.0 * rho * q2) * inv
        return 1.0 - 2.0 * eta * re + eta * eta * power

    def piezo_response(self, freqs: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + 1j * np.asarray(freqs, dtype=float) / self.piezo_bandwidth)

    # -- noise, kicks ---------------------------------------------------------------------------------
    def disturbance(self, t: np.ndarray) -> np.ndarray:
        """Drift + acoustic noise + kicks (HWHM) at model times ``t``.

        The twelve sines are one phasor sum (a grid of scope samples costs a few
        exponentials per tone), the kicks one sorted lookup.
        """
        t = np.asarray(t, dtype=float)
        out = np.full(t.shape, self.detuning)
        omegas, coefs = self._disturbance_tones()
        if len(omegas):
            out += phasor_sum(t, omegas, coefs, real=True)
        if self._kicks:
            kicks = sorted(self._kicks)
            times = np.array([k[0] for k in kicks])
            steps = np.cumsum([k[1] for k in kicks])
            index = np.searchsorted(times, t, side="right")
            out += np.where(index > 0, steps[np.maximum(index - 1, 0)], 0.0)
        return out

    def _disturbance_tones(self) -> tuple[np.ndarray, np.ndarray]:
        """Drift and acoustic sines as phasors: ``a sin(w t + ph) = Re(-i a e^{i ph} e^{i w t})``."""
        key = (self.drift, self.drift_period, self.acoustic)
        cached = self.__dict__.get("_disturbance_cache")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        omegas, coefs = [], []
        if self.drift:
            w = _DRIFT_WEIGHTS / math.sqrt(float(np.sum(_DRIFT_WEIGHTS**2)) / 2.0) * self.drift
            omegas.append(2 * np.pi / (_DRIFT_PERIODS * self.drift_period))
            coefs.append(-1j * w * np.exp(1j * self._drift_phases))
        if self.acoustic:
            a = self.acoustic / math.sqrt(len(_ACOUSTIC_FREQS) / 2.0)
            omegas.append(2 * np.pi * _ACOUSTIC_FREQS)
            coefs.append(-1j * a * np.exp(1j * self._acoustic_phases))
        result = (np.concatenate(omegas) if omegas else np.zeros(0),
                  np.concatenate(coefs) if coefs else np.zeros(0, dtype=complex))
        self.__dict__["_disturbance_cache"] = (key, *result)
        return result

    def kick(self, size: float | None = None) -> float:
        """Knock the cavity: a step of ``size`` HWHM in the detuning, now; returns the step.

        By default 1.6 times the sideband spacing of the shipped config (8 HWHM):
        beyond the PDH capture range, so a lock is lost, in the direction that
        keeps the resonance inside the piezo's +-1 V range.
        """
        if size is None:
            now = self.now() if self.model is not None else 0.0
            static = float(self.disturbance(np.array([now]))[0])
            size = -math.copysign(1.6 * self.mod_freq / self.hwhm_hz, static or 1.0)
        size = check_number("kick size", size, low=-1e6, high=1e6)
        with self._changing() as now:
            self._kicks.append((now, size))
        return size

    # -- the state now ---------------------------------------------------------------------------
    def _eom(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
        """Modulation tones on out2: ``(Omega, phasor a, s = Omega/HWHM, C0, S)``.

        Kept while out2's tones and the EOM's parameters are the same (they
        follow the registers; the plant's time does not change them).
        """
        freqs, amps = self.out_tones(2)
        key = (freqs.tobytes(), amps.tobytes(), self.eom_gain, self.eom_min_frequency, self.linewidth)
        cached = self.__dict__.get("_eom_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        keep = freqs >= self.eom_min_frequency
        freqs, amps = freqs[keep], amps[keep]
        betas = self.eom_gain * np.abs(amps)
        j0, j1 = bessel_j(0, betas), bessel_j(1, betas)
        c0 = float(np.prod(j0)) if len(betas) else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            side = np.where(j0 != 0, j1 * c0 / j0, 0.0)
        result = (freqs, amps, freqs / self.hwhm_hz, c0, side)
        self.__dict__["_eom_cache"] = (key, result)
        return result

    def _piezo_volts(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        u = self.out_voltage(1, t, ctx)
        freqs, amps = self.out_tones(1)
        if len(freqs):
            coef = (self.piezo_response(freqs) - 1.0) * amps
            keep = significant(coef)  # what the piezo filters away: out1's spurs (microvolts) left out
            if keep.any():
                u = u + phasor_sum(t, 2 * np.pi * freqs[keep], coef[keep], real=True)
        return u

    def detuning_at(self, t: np.ndarray, ctx: EvalContext | None = None) -> np.ndarray:
        """Detuning ``x`` (HWHM) at model times ``t`` (``ctx``: the caller's evaluation, overrides included)."""
        t = np.asarray(t, dtype=float)
        if ctx is None:
            ctx = EvalContext(None, 0.0)
        memo = self._detuning_memo
        key = None
        if t.size >= POWER_TABLE_REUSE_MIN and not ctx.overrides and not ctx.ivals:
            # The scope evaluates in1 and in2 at the same times in one evaluation: both see one
            # cavity, computed once (out1 through the PIDs, whose input noise is then drawn once)
            assert self.model is not None
            key = (frozenset(ctx.stack), self.model.version, self.model.clock.now(), len(self._kicks))
            if memo is not None and memo[0] is t and memo[1] is ctx and memo[2] == key:
                return memo[3]
        x = self.hwhm_per_volt * self._piezo_volts(t, ctx) + self.disturbance(t)
        if key is not None:
            self._detuning_memo = (t, ctx, key, x)
        return x

    def _state(self) -> dict[str, Any]:
        """Detuning, sidebands and PDH phasors of the present state (kept for one instant
        and nesting level, :meth:`view_key`)."""
        key = (*self.view_key(), len(self._kicks))
        now, nesting = key[1], key[2]
        cached = self._state_cache.get(nesting)
        if cached is not None and cached[0] == key:
            return cached[1]
        # the operating point: out1's steady-state (DC) value, tones (a sweep, the NA's) left out
        x = self.hwhm_per_volt * self.out_dc(1) + float(self.disturbance(np.array([now]))[0])
        omega, amps, s, c0, side = self._eom()
        state = {"x": x, "omega": omega, "amps": amps, "s": s, "c0": c0, "side": side}
        state["c"] = self._pdh(np.array([x]), state)[:, 0]
        self._state_cache[nesting] = (key, state)
        return state

    # -- optics ----------------------------------------------------------------------------------
    def _powers(self, x: np.ndarray, state: dict[str, Any], channel: int) -> np.ndarray:
        """The photodiode's DC power (V) at detunings ``x``: carrier plus every sideband pair.

        Long arrays (a scope trace: 2^17 averaging sub-samples) are interpolated
        linearly in a table of the same formula on a grid of
        ``POWER_TABLE_STEP`` HWHM, kept while the optics and the modulation
        stay (they change with registers and parameters only, not with time),
        within 1.5e-6 of the peak power of the direct formula: every out2 tone
        above ``eom_min_frequency`` is a sideband pair (a square wave on out2
        makes dozens), each evaluated at every detuning otherwise.
        """
        x = np.asarray(x, dtype=float)
        if x.size >= POWER_TABLE_REUSE_MIN:
            table = self._power_table(x, state, channel, grow=x.size >= POWER_TABLE_MIN)
            if table is not None:
                first, values = table
                pos = x * (1.0 / POWER_TABLE_STEP) - first
                k = np.floor(pos)
                frac = pos - k
                k = k.astype(np.intp)
                low = values[k]
                return low + frac * (values[k + 1] - low)
        return self._powers_direct(x, state, channel)

    def _power_table(self, x: np.ndarray, state: dict[str, Any], channel: int,
                     grow: bool = True) -> tuple[int, np.ndarray] | None:
        """``(first grid index, powers)`` covering ``x``, or None if its span is too wide
        (or, without ``grow``, if the kept table does not cover it).

        Kept per channel while the optics and the modulation stay; a table that
        does not reach far enough grows by whole margins (the missing ends
        computed only), so a drifting trace does not rebuild it at every access.
        """
        lo = math.floor(float(np.min(x)) / POWER_TABLE_STEP) - 1
        hi = math.ceil(float(np.max(x)) / POWER_TABLE_STEP) + 2
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo > POWER_TABLE_MAX:
            return None
        modulation = state.get("table_key")
        if modulation is None:  # the state's part of the key, once per state (every evaluation asks)
            modulation = state["table_key"] = (state["c0"], np.asarray(state["s"], dtype=float).tobytes(),
                                               np.asarray(state["side"], dtype=float).tobytes())
        key = (self.transmission if channel == 1 else self.reflection, self.eta, self.finesse, *modulation)
        cached = self._power_tables.get(channel)
        if cached is not None and cached[0] == key:
            first, values = cached[1], cached[2]
            end = first + len(values)
            if first <= lo and end >= hi:
                return first, values
            if not grow:
                return None
            margin = max(POWER_TABLE_MARGIN, len(values) // 2)
            new_first = min(first, lo - margin) if lo < first else first
            new_end = max(end, hi + margin) if hi > end else end
            if new_end - new_first <= POWER_TABLE_MAX:
                grid = POWER_TABLE_STEP
                parts = [self._powers_direct(np.arange(new_first, first) * grid, state, channel), values,
                         self._powers_direct(np.arange(end, new_end) * grid, state, channel)]
                values = np.concatenate(parts)
                self._power_tables[channel] = (key, new_first, values)
                return new_first, values
        if not grow:
            return None
        lo, hi = lo - POWER_TABLE_MARGIN, hi + POWER_TABLE_MARGIN
        values = self._powers_direct(np.arange(lo, hi) * POWER_TABLE_STEP, state, channel)
        self._power_tables[channel] = (key, lo, values)
        return lo, values

    def _powers_direct(self, x: np.ndarray, state: dict[str, Any], channel: int) -> np.ndarray:
        """:meth:`_powers` from the formula: one sine and one cosine per detuning.

        The sidebands' shifted arguments come from the angle-sum formulas
        (``sin(h +- d) = sin h cos d +- cos h sin d``), vectorised over the
        sidebands, instead of three complex Airy evaluations each.
        """
        scale = self.transmission if channel == 1 else self.reflection
        half = (0.5 * math.pi / self.finesse) * x
        sin_h = np.sin(half)
        total = state["c0"] ** 2 * self._shape_power(sin_h, channel)
        side = np.asarray(state["side"], dtype=float)
        if len(side):
            cos_h = np.cos(half)[..., None]
            sin_h = sin_h[..., None]
            delta = (0.5 * math.pi / self.finesse) * np.asarray(state["s"], dtype=float)
            cd, sd = np.cos(delta), np.sin(delta)
            up = self._shape_power(sin_h * cd + cos_h * sd, channel)
            down = self._shape_power(sin_h * cd - cos_h * sd, channel)
            total = total + (up + down) @ (side * side)
        return scale * total

    def _pdh(self, x: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        """PDH beat phasors ``c_k`` (one row per modulation tone) at detunings ``x``
        (every sideband at once: one array of shifted detunings per side)."""
        x = np.asarray(x, dtype=float).ravel()
        s = np.asarray(state["s"], dtype=float)
        if not len(s):
            return np.zeros((0, len(x)), dtype=complex)
        a0 = self.a_ref(x)[None, :]
        up = self.a_ref(x[None, :] + s[:, None])
        down = self.a_ref(x[None, :] - s[:, None])
        i_ref = 1j * (np.conj(a0) * up - a0 * np.conj(down))
        amps = np.asarray(state["amps"], dtype=complex)
        scale = 2.0 * self.reflection * state["c0"] * np.asarray(state["side"], dtype=float) * (amps / np.abs(amps))
        return scale[:, None] * i_ref

    def slope(self, channel: int, x: float | None = None) -> float:
        """d(in<channel>)/dx (V per HWHM) at detuning ``x`` (default: now)."""
        state = self._state()
        x0 = state["x"] if x is None else float(x)
        h = 1e-4
        p = self._powers(np.array([x0 - h, x0 + h]), state, channel)
        return float((p[1] - p[0]) / (2 * h))

    # -- the two views -----------------------------------------------------------------------------
    def _input(self, channel: int, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        state = self._state()
        x = self.detuning_at(t, ctx)
        v = self._powers(x, state, channel)
        if channel == 2 and len(state["omega"]):
            v = v + phasor_sum(t, 2 * np.pi * state["omega"], state["c"], real=True)
        return v

    def _input_spectrum(self, channel: int, ctx: EvalContext) -> Spectrum:
        """Kept for the instant and nesting level, as :meth:`_state` (the PIDs' tone
        averaging and their spectra, the scope's correction and the PFD each ask)."""
        key = (*self.view_key(), len(self._kicks))
        slot = (channel, key[2])
        cached = self._spectrum_cache.get(slot)
        if cached is not None and cached[0] == key:
            return cached[1].copy()
        spectrum = self._input_spectrum_now(channel)
        self._spectrum_cache[slot] = (key, spectrum.copy())
        return spectrum

    def _input_spectrum_now(self, channel: int) -> Spectrum:
        state = self._state()
        x = state["x"]
        dc = float(self._powers(np.array([x]), state, channel)[0])
        freqs, amps = self.out_tones(1)
        dx = self.hwhm_per_volt * self.piezo_response(freqs) * amps
        small = np.abs(dx) < SMALL_SIGNAL
        f_out = [freqs[small]]
        a_out = [self.slope(channel) * dx[small]]
        if channel == 2 and len(state["omega"]):
            f_out.append(state["omega"])
            a_out.append(state["c"])
        return Spectrum(dc=dc, freqs=np.concatenate(f_out), amps=np.concatenate(a_out).astype(complex))

    def demodulated(self, iq: Any, t: np.ndarray, ctx: EvalContext, second: bool) -> np.ndarray | None:
        """Quadrature output of ``iq`` demodulating in2: its own phasor-view result plus the
        PDH beat's change ``c_k(x(t)) - c_k(x_now)`` through the IQ's linear response
        (input filter, 3-cycle pipeline, local oscillator, quadrature low-pass: the
        same terms as ``Iq._zv_terms``)."""
        assert self.model is not None
        if self.model.bus.input_select[iq.number] != 11:
            return None
        if not second and iq.output_select != 0:
            return None
        state = self._state()
        if not len(state["omega"]):
            return None
        te = iq._eval_times(t, ctx)
        z = iq.zv(te, ctx)
        x = self.detuning_at(te, ctx).ravel()
        dc = self._pdh(x, state) - state["c"][:, None]
        f_lo = iq.frequency if iq.running else 0.0
        omega = state["omega"]
        hin = filters.response(iq.input_filter, INPUT_FILTER, omega) * np.exp(-2j * np.pi * omega * PIPELINE_CYCLES * CYCLE)
        h1 = filters.response(iq.quad_filter, iq.quad_params, omega - f_lo)
        h2 = filters.response(iq.quad_filter, iq.quad_params, -omega - f_lo)
        rot = 1j * np.exp(1j * (iq.phase - iq.alpha))
        tt = te.ravel()
        dz = np.zeros(tt.shape, dtype=complex)
        for k in range(len(omega)):
            a = hin[k] * dc[k]
            dz += rot * a * h1[k] * np.exp(2j * np.pi * (omega[k] - f_lo) * tt)
            dz += rot * np.conj(a) * h2[k] * np.exp(-2j * np.pi * (omega[k] + f_lo) * tt)
        z = z + dz.reshape(np.shape(z))
        z = np.clip(z.real, -2.0, 2.0) + 1j * np.clip(z.imag, -2.0, 2.0)
        q = z.imag if second else z.real
        return sat_volts(q * iq._gain(2) / 2.0)

    def transfer_function(self, freqs: np.ndarray, output: int = 1, input: int = 1) -> np.ndarray:  # noqa: A002
        """Small-signal response out1 -> in<input> (V/V) around the present detuning."""
        if output != 1 or input not in (1, 2):
            raise ValueError(f"the fabry-perot plant responds from out1 to in1/in2, not out{output} -> in{input}")
        freqs = np.asarray(freqs, dtype=float)
        return self.slope(input) * self.hwhm_per_volt * self.piezo_response(freqs)

    # -- PyRPL ------------------------------------------------------------------------------------
    def pyrpl_config(self) -> dict[str, Any]:
        """PyRPL's ``FabryPerot`` lockbox for this cavity.

        Units and cavity as in the plant (``finesse``, ``round_trip_length``,
        ``wavelength``, ``eta``), so PyRPL's ``bandwidth`` (HWHM) is the
        plant's; the piezo as ``dc_gain`` in nm/V with the sign inverted for
        PyRPL's PID (see :mod:`.lowpass`).  Sequence: (0) side of fringe on
        the reflection at -1 HWHM, the piezo starting from -1 V so that the
        integrator walks up to the resonance; (1) PDH at 0.
        """
        return {
            "lockbox": {
                "classname": "FabryPerot",
                "finesse": self.finesse,
                "round_trip_length": self.round_trip_length,
                "wavelength": self.wavelength,
                "eta": self.eta,
                "setpoint_unit": "bandwidth",
                "default_sweep_output": "piezo",
                "is_locked_threshold": 1.0,
                "lockstatus_interval": 1.0,  # PyRPL default
                "auto_lock": False,
                "inputs": {
                    "transmission": {"input_signal": "in1"},
                    "reflection": {"input_signal": "in2"},
                    "pdh": {
                        "input_signal": "in2",
                        "mod_freq": self.mod_freq,
                        "mod_amp": self.mod_amp,
                        "mod_phase": 0.0,
                        "mod_output": "out2",
                        "quadrature_factor": 1.0,
                        "bandwidth": [50e3, 50e3],
                    },
                },
                "outputs": {
                    "piezo": {
                        "output_channel": "out1",
                        "unit": "nm/V",
                        "dc_gain": -self.piezo_gain * 1e9,
                        "desired_unity_gain_frequency": 100.0,
                        "sweep_amplitude": 1.0,
                        "sweep_offset": 0.0,
                        "sweep_frequency": 50.0,
                        "sweep_waveform": "ramp",
                        "max_voltage": 1.0,
                        "min_voltage": -1.0,
                    },
                },
                "sequence": [
                    {
                        "input": "reflection",
                        "setpoint": -1.0,
                        "gain_factor": 1.0,
                        "duration": 0.5,
                        "outputs": {"piezo": {"lock_on": True, "reset_offset": True, "offset": -1.0}},
                    },
                    {
                        "input": "pdh",
                        "setpoint": 0.0,
                        "gain_factor": 1.0,
                        "duration": 0.0,
                        "outputs": {"piezo": {"lock_on": True, "reset_offset": False, "offset": 0.0}},
                    },
                ],
            },
        }
