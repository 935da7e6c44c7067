"""1D viewer: the Red Pitaya oscilloscope through rpl-noqt."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport

from pymodaq_plugins_rplnoqt.common import apply_values, board_params
from pymodaq_plugins_rplnoqt.hardware.options import (
    DSP_SIGNALS,
    SCOPE_CHANNELS,
    SCOPE_DECIMATIONS,
    SCOPE_DURATIONS,
    SCOPE_TRIGGER_SOURCES,
    nearest,
)
from pymodaq_plugins_rplnoqt.hardware.scope import SCOPE_SETTINGS, AcquisitionTimeout, ScopeDriver
from pymodaq_plugins_rplnoqt.viewer import BoardViewer, GrabStopped

_SETTINGS_TO_BOARD = set(SCOPE_SETTINGS)


class DAQ_1DViewer_RplScope(BoardViewer):
    """The Red Pitaya's 2-channel, 14-bit, 125 MS/s oscilloscope (PyRPL ``scope``), via rpl-noqt.

    Every grab is a fresh triggered acquisition of 16384 points per channel
    (``scope.single()`` re-arms the trigger), sent as numpy arrays in volts
    with the real time axis (seconds from the trigger, or from the start for
    trigger source "immediately"). Channels reading in1/in2 are scaled to the
    connector by the board's input range (HV: x20). The scope settings are read
    back from the board at initialisation.

    Works with any Red Pitaya running PyRPL's FPGA image (PyRPL 0.9.9.1), and
    with the built-in simulator (host "simulator", the default).
    """

    params = comon_parameters + board_params() + [
        {"title": "Channels:", "name": "channels", "type": "list", "limits": list(SCOPE_CHANNELS), "value": "both"},
        {"title": "Input 1:", "name": "input1", "type": "list", "limits": list(DSP_SIGNALS), "value": "in1"},
        {"title": "Input 2:", "name": "input2", "type": "list", "limits": list(DSP_SIGNALS), "value": "in2"},
        {"title": "Decimation:", "name": "decimation", "type": "list", "limits": list(SCOPE_DECIMATIONS),
         "value": 64, "tip": "samples are 8 ns x decimation apart; sets the duration"},
        {"title": "Duration (s):", "name": "duration", "type": "list", "limits": list(SCOPE_DURATIONS),
         "value": SCOPE_DURATIONS[6], "tip": "length of a curve; sets the decimation"},
        {"title": "Decimation averaging:", "name": "average", "type": "bool", "value": True,
         "tip": "average the samples a decimation drops (lower noise) instead of picking one"},
        {"title": "Curves averaged:", "name": "trace_average", "type": "int", "value": 1, "min": 1, "max": 10000},
        {"title": "Trigger source:", "name": "trigger_source", "type": "list",
         "limits": list(SCOPE_TRIGGER_SOURCES), "value": "immediately"},
        {"title": "Trigger level (V):", "name": "threshold", "type": "float", "value": 0.0,
         "tip": "at the connector of the trigger channel's input"},
        {"title": "Hysteresis (V):", "name": "hysteresis", "type": "float", "value": 0.0025, "min": 0.0},
        {"title": "Trigger delay (s):", "name": "trigger_delay", "type": "float", "value": 0.0,
         "tip": "time of the curve's centre after the trigger (edge triggers)"},
        {"title": "Trigger timeout (s):", "name": "trigger_timeout", "type": "float", "value": 2.0, "min": 0.0,
         "tip": "how long a grab waits for the trigger beyond the curve's own duration"},
    ]

    def _bind(self) -> str:
        self.driver = ScopeDriver(self.controller)
        self._show(self.driver.read_settings())
        return f"scope on {self.controller!r}"

    @staticmethod
    def _normalised(values: dict[str, Any]) -> dict[str, Any]:
        """The board's settings as the tree lists them (the duration as one of its list's floats)."""
        values = dict(values)
        values["duration"] = nearest("duration", values["duration"], SCOPE_DURATIONS)
        return values

    def _show(self, values: dict[str, Any]) -> None:
        apply_values(self.settings, self._normalised(values))

    def _commit(self, name: str, value: Any) -> dict[str, Any] | None:
        if name not in _SETTINGS_TO_BOARD:
            return None
        return self._normalised(self.driver.configure(**{name: value}))

    def _read_back(self) -> dict[str, Any]:
        return self._normalised(self.driver.read_settings())

    def _acquire(self) -> DataToExport:
        """One fresh curve; a trigger timeout stops the grab with its message."""
        try:
            trace = self.driver.acquire(float(self.settings["trigger_timeout"]))
        except AcquisitionTimeout as exc:
            raise GrabStopped(str(exc)) from exc
        channels = self.settings["channels"]
        arrays, labels = [], []
        if channels in ("ch1", "both"):
            arrays.append(trace.ch1)
            labels.append(f"ch1 ({trace.input1})")
        if channels in ("ch2", "both"):
            arrays.append(trace.ch2)
            labels.append(f"ch2 ({trace.input2})")
        time_axis = Axis("time", units="s", data=np.asarray(trace.times), index=0)
        return DataToExport("RplScope", data=[
            DataFromPlugins(name="RplScope", data=arrays, dim="Data1D", labels=labels, units="V",
                            axes=[time_axis])])


if __name__ == "__main__":
    main(__file__)
