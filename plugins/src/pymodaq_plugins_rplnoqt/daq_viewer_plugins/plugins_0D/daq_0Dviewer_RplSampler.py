"""0D viewer: instantaneous voltages of chosen Red Pitaya DSP signals (PyRPL ``sampler``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base, comon_parameters, main
from pymodaq.utils.data import DataFromPlugins, DataToExport

from pymodaq_plugins_rplnoqt.common import board_params, close_board, commit_board_setting, open_board, sync_ranges
from pymodaq_plugins_rplnoqt.hardware.options import SAMPLER_SIGNALS
from pymodaq_plugins_rplnoqt.hardware.sampler import SamplerDriver

_DEFAULT_SIGNALS = ("in1", "in2")


class DAQ_0DViewer_RplSampler(DAQ_Viewer_base):
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

    def ini_attributes(self) -> None:
        self.controller = None
        self._sampler: SamplerDriver | None = None

    def ini_detector(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's)."""
        self.controller = open_board(self, controller)
        self._sampler = SamplerDriver(self.controller)
        return f"sampler on {self.controller!r}", True

    def _chosen(self) -> tuple[str, ...]:
        group = self.settings.child("signals")
        return SamplerDriver.validate(name for name in SAMPLER_SIGNALS if group[name])

    def commit_settings(self, param: Any) -> None:
        """Board settings go to the shared board; a change of signals applies at the next grab."""
        if commit_board_setting(self, param):
            return
        if param.parent() is not None and param.parent().name() == "signals":
            self._chosen()  # at least one signal: reported at once rather than at the next grab

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        """Read the chosen signals once and emit them."""
        assert self._sampler is not None, "grab before initialisation"
        values = self._sampler.read(self._chosen())
        sync_ranges(self)  # before the data, so the tree is current when they arrive
        self.dte_signal.emit(DataToExport("RplSampler", data=[
            DataFromPlugins(name="RplSampler", data=[np.array([v]) for v in values.values()], dim="Data0D",
                            labels=list(values), units="V")]))

    def stop(self) -> str:
        """A grab is a few register reads: nothing to interrupt."""
        return ""

    def close(self) -> None:
        """Give back this plugin's hold on the board; other plugins on it keep working."""
        self._sampler = None
        close_board(self)


if __name__ == "__main__":
    main(__file__)
