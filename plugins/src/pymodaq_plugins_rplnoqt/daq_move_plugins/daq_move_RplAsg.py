"""Actuator: the frequency of a Red Pitaya signal generator (PyRPL ``asg0``/``asg1``)."""

from __future__ import annotations

from typing import Any

from pymodaq.control_modules.move_utility_classes import (
    DAQ_Move_base,
    DataActuatorType,
    comon_parameters_fun,
    main,
)
from pymodaq.utils.data import DataActuator

from pymodaq_plugins_rplnoqt.common import (
    apply_values,
    board_params,
    close_board,
    commit_board_setting,
    open_board,
)
from pymodaq_plugins_rplnoqt.hardware.asg import ASG_SETTINGS, AsgDriver
from pymodaq_plugins_rplnoqt.hardware.options import ASG_MODULES, ASG_WAVEFORMS, OUTPUT_DIRECTS


class DAQ_Move_RplAsg(DAQ_Move_base):
    """Frequency (Hz) of the Red Pitaya's generator asg0 or asg1 (the axis), via rpl-noqt.

    Waveform, amplitude, offset, output and on/off are settings, read back
    from the board at initialisation and whenever the axis changes. A move
    is immediate; the value reached is the frequency the board took (the
    generator's resolution is about 0.12 Hz). Home is the "Home frequency"
    setting. The two generators can be one master and one slave sharing the
    board (one controller), or two independent plugins: they share the board's
    session either way.
    """

    is_multiaxes = True
    _axis_names = list(ASG_MODULES)
    _controller_units = "Hz"
    _epsilons = 0.5
    data_actuator_type = DataActuatorType.DataActuator

    params = board_params() + [
        {"title": "Waveform:", "name": "waveform", "type": "list", "limits": list(ASG_WAVEFORMS), "value": "sin"},
        {"title": "Amplitude (V):", "name": "amplitude", "type": "float", "value": 0.5, "min": 0.0, "max": 1.0},
        {"title": "Offset (V):", "name": "offset", "type": "float", "value": 0.0, "min": -1.0, "max": 1.0},
        {"title": "Output:", "name": "output_direct", "type": "list", "limits": list(OUTPUT_DIRECTS),
         "value": "out1"},
        {"title": "On:", "name": "enabled", "type": "bool", "value": True,
         "tip": "runs the waveform continuously; off stops it"},
        {"title": "Home frequency (Hz):", "name": "home_frequency", "type": "float", "value": 1e3, "min": 0.0,
         "max": 62.5e6},
    ] + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)

    def ini_attributes(self) -> None:
        self.controller = None
        self._asg: AsgDriver | None = None

    def ini_stage(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's) and read the generator's settings back."""
        self.controller = open_board(self, controller)
        try:
            self._bind()
        except BaseException:
            close_board(self)
            raise
        return f"{self._asg.name} on {self.controller!r}", True

    def _bind(self) -> None:
        self._asg = AsgDriver(self.controller, self.axis_name)
        apply_values(self.settings, self._asg.read_settings())

    def get_actuator_value(self) -> DataActuator:
        """The generator's frequency, read from the board."""
        assert self._asg is not None, "read before initialisation"
        value = DataActuator(data=self._asg.frequency(), units=self.axis_unit)
        return self.get_position_with_scaling(value)

    def move_abs(self, value: DataActuator) -> None:
        """Set the frequency; the target becomes the frequency the board took."""
        assert self._asg is not None, "move before initialisation"
        value = self.check_bound(value)
        self.target_value = value
        hardware = self.set_position_with_scaling(value)
        reached = self._asg.set_frequency(float(hardware.value(self.axis_unit)))
        self.target_value = self.get_position_with_scaling(DataActuator(data=reached, units=self.axis_unit))

    def move_rel(self, value: DataActuator) -> None:
        """Move by ``value`` from the current frequency."""
        self.move_abs(self.current_value + value)

    def move_home(self) -> None:
        """Go to the home frequency."""
        assert self._asg is not None, "move before initialisation"
        self._asg.set_frequency(float(self.settings["home_frequency"]))
        self.move_done()

    def stop_motion(self) -> None:
        """Moves are immediate: report where the generator is."""
        self.move_done()

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value is reported and the tree shows the board again."""
        if commit_board_setting(self, param) or self._asg is None:
            return
        if param.name() == "axis":
            self._bind()
        elif param.name() in ASG_SETTINGS:
            try:
                apply_values(self.settings, self._asg.configure(**{param.name(): param.value()}))
            except Exception:
                apply_values(self.settings, self._asg.read_settings())
                raise

    def close(self) -> None:
        """Give back this plugin's hold on the board (the generator keeps running)."""
        self._asg = None
        close_board(self)


if __name__ == "__main__":
    main(__file__)
