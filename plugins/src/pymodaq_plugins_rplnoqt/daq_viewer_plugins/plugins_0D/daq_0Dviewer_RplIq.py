"""0D viewer: an IQ module of the Red Pitaya as a lock-in amplifier (PyRPL ``iq0``-``iq2``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_rplnoqt.common import apply_values, board_params
from pymodaq_plugins_rplnoqt.hardware.iq import IQ_SETTINGS, IqDriver, polar
from pymodaq_plugins_rplnoqt.hardware.options import DSP_SIGNALS, IQ_MODULES, OUTPUT_DIRECTS, check_number
from pymodaq_plugins_rplnoqt.viewer import BoardViewer

_OUTPUTS = ("X/Y", "R/phase")


class DAQ_0DViewer_RplIq(BoardViewer):
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
        super().ini_attributes()
        #: the last integration time accepted (shown again when a value is refused)
        self._integration_time = 0.01

    def _bind(self) -> str:
        self._bind_module(self.settings["module"])
        self._integration_time = check_number("integration_time", self.settings["integration_time"], 1e-6, 10.0,
                                              "s")
        return f"{self.driver.name} lock-in on {self.controller!r}"

    def _bind_module(self, module: str) -> None:
        self.driver = IqDriver(self.controller, module)
        low, high = self.driver.bandwidth_limits()
        self.settings.child("bandwidth").setLimits((low, high))
        apply_values(self.settings, self.driver.read_settings())

    def _commit(self, name: str, value: Any) -> dict[str, Any] | None:
        if name == "module":
            self._bind_module(value)
            return {"module": self.driver.name}
        if name == "integration_time":
            self._integration_time = check_number("integration_time", value, 1e-6, 10.0, "s")
            return {"integration_time": self._integration_time}
        if name in IQ_SETTINGS:
            return self.driver.configure(**{name: value})
        return None

    def _read_back(self) -> dict[str, Any]:
        return {**self.driver.read_settings(), "module": self.driver.name, "integration_time": self._integration_time}

    def _acquire(self) -> DataToExport:
        """Integrate once: X/Y or R/phase."""
        z = self.driver.measure(self._integration_time)
        if self.settings["quantities"] == "X/Y":
            data = [DataFromPlugins(name="RplIq", data=[np.array([z.real]), np.array([z.imag])], dim="Data0D",
                                    labels=["X", "Y"], units="V")]
        else:
            r, phase = polar(z)
            data = [DataFromPlugins(name="RplIq_R", data=[np.array([r])], dim="Data0D", labels=["R"], units="V"),
                    DataFromPlugins(name="RplIq_phase", data=[np.array([phase])], dim="Data0D", labels=["phase"],
                                    units="deg")]
        return DataToExport("RplIq", data=data)


if __name__ == "__main__":
    main(__file__)
