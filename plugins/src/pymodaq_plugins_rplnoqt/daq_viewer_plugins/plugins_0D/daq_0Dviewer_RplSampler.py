"""0D viewer: instantaneous voltages of chosen Red Pitaya DSP signals (PyRPL ``sampler``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_rplnoqt.common import board_params
from pymodaq_plugins_rplnoqt.hardware.options import SAMPLER_SIGNALS
from pymodaq_plugins_rplnoqt.hardware.sampler import SamplerDriver
from pymodaq_plugins_rplnoqt.viewer import BoardViewer

_DEFAULT_SIGNALS = ("in1", "in2")


class DAQ_0DViewer_RplSampler(BoardViewer):
    """Voltages of the Red Pitaya's DSP signals (inputs, outputs, PID/IQ/ASG outputs...), via rpl-noqt.

    Each grab reads every ticked signal once (one register read each) and
    emits them as one 0D data set, one channel per signal, in volts (in1/in2
    at the connector: HV range x20).
    """

    params = comon_parameters + board_params() + [
        {"title": "Signals:", "name": "signals", "type": "group", "children": [
            {"title": f"{name}:", "name": name, "type": "bool", "value": name in _DEFAULT_SIGNALS}
            for name in SAMPLER_SIGNALS]},
    ]

    def _bind(self) -> str:
        self.driver = SamplerDriver(self.controller)
        return f"sampler on {self.controller!r}"

    def _chosen(self) -> tuple[str, ...]:
        group = self.settings.child("signals")
        return SamplerDriver.validate(name for name in SAMPLER_SIGNALS if group[name])

    def _commit(self, name: str, value: Any) -> dict[str, Any] | None:
        """A change of signals applies at the next grab; none ticked is reported at once."""
        if name in SAMPLER_SIGNALS:
            self._chosen()
        return None

    def _acquire(self) -> DataToExport:
        """Read the chosen signals once."""
        values = self.driver.read(self._chosen())
        return DataToExport("RplSampler", data=[
            DataFromPlugins(name="RplSampler", data=[np.array([v]) for v in values.values()], dim="Data0D",
                            labels=list(values), units="V")])


if __name__ == "__main__":
    main(__file__)
