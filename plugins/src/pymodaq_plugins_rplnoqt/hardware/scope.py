"""The Red Pitaya oscilloscope, as the Scope viewer uses it.

Every :meth:`ScopeDriver.acquire` is a fresh acquisition: PyRPL's
``scope.single()`` re-arms the trigger and waits for a new curve (never a
stale buffer). Voltages are at the connector: a channel reading in1/in2 is
scaled by that input's range (HV jumper: x20), and so is the trigger level
when the trigger channel reads such an input.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .board import Board
from .options import (
    DSP_SIGNALS,
    SCOPE_DECIMATIONS,
    SCOPE_DURATIONS,
    SCOPE_TRIGGER_SOURCES,
    SettingError,
    check_choice,
    check_number,
    nearest,
)

__all__ = ("SCOPE_SETTINGS", "AcquisitionTimeout", "ScopeDriver", "Trace")

logger = logging.getLogger(__name__)

#: Settings :meth:`ScopeDriver.configure` accepts, in the order they are applied.
SCOPE_SETTINGS = ("input1", "input2", "decimation", "duration", "average", "trace_average",
                  "trigger_source", "threshold", "hysteresis", "trigger_delay")


class AcquisitionTimeout(TimeoutError):
    """No curve arrived in time (typically: the trigger condition never happened)."""


class AcquisitionRestarted(RuntimeError):
    """The acquisition was restarted under the grab again and again (settings changed from elsewhere)."""


@dataclass(frozen=True)
class Trace:
    """One acquisition: time axis (s, relative to the trigger) and both channels (V)."""

    times: np.ndarray
    ch1: np.ndarray
    ch2: np.ndarray
    input1: str
    input2: str


class ScopeDriver:
    """Configure and read the board's scope; validation happens before any write."""

    def __init__(self, board: Board) -> None:
        self.board = board

    @property
    def _scope(self) -> Any:
        return self.board.rp.scope

    def _trigger_scale(self, trigger_source: str, input1: str, input2: str) -> float:
        if trigger_source.startswith("ch1"):
            return self.board.scale(input1)
        if trigger_source.startswith("ch2"):
            return self.board.scale(input2)
        return 1.0

    def read_settings(self) -> dict[str, Any]:
        """The scope's current settings, read from the board (threshold/hysteresis at the connector)."""
        s = self._scope
        with self.board.lock:
            values = {
                "input1": s.input1,
                "input2": s.input2,
                "decimation": int(s.decimation),
                "duration": float(s.duration),
                "average": bool(s.average),
                "trace_average": int(s.trace_average),
                "trigger_source": s.trigger_source,
                "threshold": float(s.threshold),
                "hysteresis": float(s.hysteresis),
                "trigger_delay": float(s.trigger_delay),
            }
        k = self._trigger_scale(values["trigger_source"], values["input1"], values["input2"])
        values["threshold"] *= k
        values["hysteresis"] *= k
        return values

    def validate(self, **changes: Any) -> dict[str, Any]:
        """Check ``changes`` against the allowed values; returns them normalised (nothing is written)."""
        unknown = set(changes) - set(SCOPE_SETTINGS)
        if unknown:
            raise SettingError(f"unknown scope setting(s) {sorted(unknown)}; allowed: {', '.join(SCOPE_SETTINGS)}")
        out: dict[str, Any] = {}
        for name in ("input1", "input2"):
            if name in changes:
                out[name] = check_choice(name, changes[name], DSP_SIGNALS)
        if "decimation" in changes and "duration" in changes:
            raise SettingError("give either decimation or duration, not both: one sets the other")
        if "decimation" in changes:
            value = changes["decimation"]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            out["decimation"] = check_choice("decimation", value, SCOPE_DECIMATIONS)
        if "duration" in changes:
            out["duration"] = nearest("duration", changes["duration"], SCOPE_DURATIONS)
        for name in ("average",):
            if name in changes:
                if not isinstance(changes[name], (bool, np.bool_)):
                    raise SettingError(f"{name} = {changes[name]!r} is not allowed; allowed values: True, False")
                out[name] = bool(changes[name])
        if "trace_average" in changes:
            value = changes["trace_average"]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 10_000:
                raise SettingError(f"trace_average = {value!r} is not allowed; allowed: an integer from 1 to 10000")
            out["trace_average"] = int(value)
        if "trigger_source" in changes:
            out["trigger_source"] = check_choice("trigger_source", changes["trigger_source"], SCOPE_TRIGGER_SOURCES)
        for name, high in (("threshold", 20.0), ("hysteresis", 20.0)):
            if name in changes:
                out[name] = check_number(name, changes[name], -high if name == "threshold" else 0.0, high, "V")
        if "trigger_delay" in changes:
            out["trigger_delay"] = check_number("trigger_delay", changes["trigger_delay"], -10.0, 10.0, "s")
        return out

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Validate then apply ``changes`` (a subset of :data:`SCOPE_SETTINGS`); returns the read-back settings.

        ``threshold``/``hysteresis`` are volts at the connector of the trigger
        channel's input; they must fit the ADC range (+-1 V there, x20 behind
        an HV jumper).
        """
        values = self.validate(**changes)
        s = self._scope
        with self.board.lock:
            current = {"input1": s.input1, "input2": s.input2, "trigger_source": s.trigger_source}
            current.update({k: v for k, v in values.items() if k in current})
            k = self._trigger_scale(current["trigger_source"], current["input1"], current["input2"])
            for name in ("threshold", "hysteresis"):
                if name in values:
                    adc = values[name] / k
                    if not -1.0 <= adc < 1.0:
                        raise SettingError(f"{name} = {values[name]!r} V is out of range for the trigger input; "
                                           f"allowed: {-k:g} to {k:g} V")
                    values[name] = adc
            if s.rolling_mode:
                s.rolling_mode = False  # a plugin grab is one triggered curve
            for name in SCOPE_SETTINGS:
                if name in values:
                    setattr(s, name, values[name])
        return self.read_settings()

    @staticmethod
    def _single(s: Any, timeout: float, attempts: int = 3) -> Any:
        """``s.single()``, taken again when the run is restarted under it.

        PyRPL restarts a running acquisition when one of its settings changes
        (another plugin, a notebook or a remote client set the scope) and the
        waiting ``single()`` then raises asyncio's CancelledError, a
        BaseException that would escape the grab's error handling. The next
        run has the new settings, so a grab just takes that one.
        """
        for attempt in range(attempts):
            try:
                return s.single(timeout=timeout)
            except asyncio.CancelledError:
                logger.info("scope acquisition restarted by a settings change (attempt %d)", attempt + 1)
        raise AcquisitionRestarted(f"the scope acquisition was restarted {attempts} times in a row by settings "
                                   "changes from elsewhere (another plugin or program is changing the scope)")

    def acquire(self, timeout: float) -> Trace:
        """A fresh curve: re-arm, wait for the trigger (at most ``timeout`` s past the curve's own length)."""
        check_number("timeout", timeout, 0.0, 3600.0, "s")
        s = self._scope
        with self.board.lock:
            if s.rolling_mode:
                s.rolling_mode = False
            input1, input2 = s.input1, s.input2
            expected = float(s.duration) * int(s.trace_average)
        try:
            curves = self._single(s, expected + timeout)
        except TimeoutError as exc:
            with self.board.lock:
                trigger = s.trigger_source
            raise AcquisitionTimeout(
                f"the scope did not trigger within {expected + timeout:.3g} s (trigger source {trigger!r}); "
                "check the trigger level and source, or raise the timeout") from exc
        times = np.asarray(s.times, dtype=float)
        data = np.asarray(curves, dtype=float)
        return Trace(times, data[0] * self.board.scale(input1), data[1] * self.board.scale(input2), input1, input2)
