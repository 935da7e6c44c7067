"""0D viewer: an IQ module of the Red Pitaya as a lock-in amplifier (PyRPL ``iq0``-``iq2``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base, comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_rplnoqt.common import (
    apply_values,
    board_params,
    close_board,
    commit_board_setting,
    open_board,
    sync_ranges,
)
from pymodaq_plugins_rplnoqt.hardware.iq import IQ_SETTINGS, IqDriver, polar
from pymodaq_plugins_rplnoqt.hardware.options import DSP_SIGNALS, IQ_MODULES, OUTPUT_DIRECTS, check_number

_OUTPUTS = ("X/Y", "R/phase")


class DAQ_0DViewer_RplIq(DAQ_Viewer_base):
    """Lock-in amplifier: the input's component at the IQ frequency, as X/Y or amplitude/phase, via rpl-noqt.

    The IQ module demodulates its input at ``frequency`` through two
    quadrature low-pass stages of ``bandwidth``; each grab integrates the
    quadratures for ``integration time`` (FPGA accumulator) and emits X and Y
    (V), or R (V) and phase (degrees). in1/in2 are scaled to the connector by
    the board's input range. The module can also send an excitation of
    ``amplitude`` at the same frequency to an output. Settings of the module
    are read back from the board at initialisation and when the module changes.
    """

    params = comon_parameters + board_params() + [
        {"title": "IQ module:", "name": "module", "type": "list", "limits": list(IQ_MODULES), "value": "iq0"},
        {"title": "Output:", "name": "quantities", "type": "list", "limits": list(_OUTPUTS), "value": "X/Y"},
        {"title": "Input:", "name": "input", "type": "list", "limits": list(DSP_SIGNALS), "value": "in1"},
        {"title": "Frequency (Hz):", "name": "frequency", "type": "float", "value": 10e3, "min": 0.0,
         "max": 62.5e6},
        {"title": "Bandwidth (Hz):", "name": "bandwidth", "type": "float", "value": 1e3, "min": 0.0,
         "tip": "corner of the two quadrature low-pass stages (the FPGA rounds it; read back)"},
        {"title": "Integration time (s):", "name": "integration_time", "type": "float", "value": 0.01,
         "min": 1e-6, "max": 10.0},
        {"title": "Excitation (V):", "name": "amplitude", "type": "float", "value": 0.0,
         "tip": "amplitude of a sine at the IQ frequency sent to the excitation output"},
        {"title": "Excitation output:", "name": "output_direct", "type": "list", "limits": list(OUTPUT_DIRECTS),
         "value": "off"},
    ]

    def ini_attributes(self) -> None:
        self.controller = None
        self._iq: IqDriver | None = None

    def ini_detector(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's), read the IQ module's settings back."""
        self.controller = open_board(self, controller)
        try:
            self._bind(self.settings["module"])
        except BaseException:
            close_board(self)
            raise
        return f"{self._iq.name} lock-in on {self.controller!r}", True

    def _bind(self, module: str) -> None:
        self._iq = IqDriver(self.controller, module)
        low, high = self._iq.bandwidth_limits()
        self.settings.child("bandwidth").setLimits((low, high))
        apply_values(self.settings, self._iq.read_settings())

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value is reported and the tree shows the board again."""
        if commit_board_setting(self, param) or self._iq is None:
            return
        name = param.name()
        if name == "module":
            self._bind(param.value())
        elif name == "integration_time":
            check_number("integration_time", param.value(), 1e-6, 10.0, "s")
        elif name in IQ_SETTINGS:
            try:
                apply_values(self.settings, self._iq.configure(**{name: param.value()}))
            except Exception:
                apply_values(self.settings, self._iq.read_settings())
                raise

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        """Integrate once and emit X/Y or R/phase."""
        assert self._iq is not None, "grab before initialisation"
        z = self._iq.measure(float(self.settings["integration_time"]))
        if self.settings["quantities"] == "X/Y":
            data = [DataFromPlugins(name="RplIq", data=[np.array([z.real]), np.array([z.imag])], dim="Data0D",
                                    labels=["X", "Y"], units="V")]
        else:
            r, phase = polar(z)
            data = [DataFromPlugins(name="RplIq_R", data=[np.array([r])], dim="Data0D", labels=["R"], units="V"),
                    DataFromPlugins(name="RplIq_phase", data=[np.array([phase])], dim="Data0D", labels=["phase"],
                                    units="deg")]
        sync_ranges(self)  # before the data, so the tree is current when they arrive
        self.dte_signal.emit(DataToExport("RplIq", data=data))

    def stop(self) -> str:
        """A grab ends after its integration time: nothing to interrupt."""
        return ""

    def close(self) -> None:
        """Give back this plugin's hold on the board; other plugins on it keep working."""
        self._iq = None
        close_board(self)


if __name__ == "__main__":
    main(__file__)
