"""1D viewer: the Red Pitaya oscilloscope through rpl-noqt."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.thread_commands import ThreadStatus
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base, comon_parameters, main
from pymodaq.utils.data import Axis, DataFromPlugins, DataToExport
from pymodaq_utils.utils import ThreadCommand

from pymodaq_plugins_rplnoqt.common import (
    board_params,
    close_board,
    commit_board_setting,
    open_board,
    report,
    sync_ranges,
)
from pymodaq_plugins_rplnoqt.hardware.options import (
    DSP_SIGNALS,
    SCOPE_CHANNELS,
    SCOPE_DECIMATIONS,
    SCOPE_DURATIONS,
    SCOPE_TRIGGER_SOURCES,
    nearest,
)
from pymodaq_plugins_rplnoqt.hardware.scope import SCOPE_SETTINGS, AcquisitionTimeout, ScopeDriver

_SETTINGS_TO_BOARD = set(SCOPE_SETTINGS)


class DAQ_1DViewer_RplScope(DAQ_Viewer_base):
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

    def ini_attributes(self) -> None:
        self.controller = None
        self._scope: ScopeDriver | None = None

    def ini_detector(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's), read the scope settings back from it."""
        self.controller = open_board(self, controller)
        try:
            self._scope = ScopeDriver(self.controller)
            self._show(self._scope.read_settings())
        except BaseException:
            close_board(self)
            raise
        return f"scope on {self.controller!r}", True

    def _show(self, values: dict[str, Any]) -> None:
        values = dict(values)
        values["duration"] = nearest("duration", values["duration"], SCOPE_DURATIONS)
        for name, value in values.items():
            param = self.settings.child(name)
            if param.value() != value:
                param.setValue(value)

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value is reported and the tree shows the board again."""
        if commit_board_setting(self, param) or self._scope is None:
            return
        if param.name() in _SETTINGS_TO_BOARD:
            try:
                self._show(self._scope.configure(**{param.name(): param.value()}))
            except Exception:
                self._show(self._scope.read_settings())
                raise

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        """Acquire one fresh curve and emit it (PyMoDAQ calls this again and again when grabbing)."""
        assert self._scope is not None, "grab before initialisation"
        try:
            trace = self._scope.acquire(float(self.settings["trigger_timeout"]))
        except AcquisitionTimeout as exc:
            report(self, str(exc))
            self.emit_status(ThreadCommand(ThreadStatus.STOP))  # ends a snap or a continuous grab
            return
        channels = self.settings["channels"]
        arrays, labels = [], []
        if channels in ("ch1", "both"):
            arrays.append(trace.ch1)
            labels.append(f"ch1 ({trace.input1})")
        if channels in ("ch2", "both"):
            arrays.append(trace.ch2)
            labels.append(f"ch2 ({trace.input2})")
        time_axis = Axis("time", units="s", data=np.asarray(trace.times), index=0)
        sync_ranges(self)  # before the data, so the tree is current when they arrive
        self.dte_signal.emit(DataToExport("RplScope", data=[
            DataFromPlugins(name="RplScope", data=arrays, dim="Data1D", labels=labels, units="V",
                            axes=[time_axis])]))

    def stop(self) -> str:
        """Nothing runs between grabs: each grab ends with its curve (or its trigger timeout)."""
        return ""

    def close(self) -> None:
        """Give back this plugin's hold on the board; other plugins on it keep working."""
        self._scope = None
        close_board(self)


if __name__ == "__main__":
    main(__file__)
