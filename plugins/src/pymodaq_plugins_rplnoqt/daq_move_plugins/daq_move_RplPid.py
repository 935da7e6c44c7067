"""Actuator: the setpoint of a Red Pitaya PID controller (PyRPL ``pid0``-``pid2``)."""

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
from pymodaq_plugins_rplnoqt.hardware.options import DSP_SIGNALS, OUTPUT_DIRECTS, PID_MODULES
from pymodaq_plugins_rplnoqt.hardware.pid import PID_SETTINGS, PidDriver


class DAQ_Move_RplPid(DAQ_Move_base):
    """Setpoint (V) of the Red Pitaya's PID controller pid0, pid1 or pid2 (the axis), via rpl-noqt.

    Proportional and integral gains, input and output are settings, read back
    from the board at initialisation and whenever the axis changes; "Reset
    integrator" sets the integrator to 0. The setpoint is in volts at the
    connector of the PID's input (HV range: x20). PyRPL's error signal is
    input - setpoint: a loop through a non-inverting path needs a negative
    integral gain. A move is immediate (the lock then follows at the loop's
    speed); the value reached is the setpoint the board took.
    """

    is_multiaxes = True
    _axis_names = list(PID_MODULES)
    _controller_units = "V"
    _epsilons = 1e-3
    data_actuator_type = DataActuatorType.DataActuator

    params = board_params() + [
        {"title": "Input:", "name": "input", "type": "list", "limits": list(DSP_SIGNALS), "value": "in1"},
        {"title": "Output:", "name": "output_direct", "type": "list", "limits": list(OUTPUT_DIRECTS),
         "value": "off"},
        {"title": "P gain:", "name": "p", "type": "float", "value": 0.0},
        {"title": "I gain (Hz):", "name": "i", "type": "float", "value": 0.0,
         "tip": "unity-gain frequency of the integrator; negative for a non-inverting loop"},
        {"title": "Reset integrator:", "name": "reset_integrator", "type": "bool_push", "value": False,
         "label": "Reset"},
    ] + comon_parameters_fun(axis_names=_axis_names, epsilon=_epsilons)

    def ini_attributes(self) -> None:
        self.controller = None
        self._pid: PidDriver | None = None

    def ini_stage(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's) and read the PID's settings back."""
        self.controller = open_board(self, controller)
        try:
            self._bind()
        except BaseException:
            close_board(self)
            raise
        return f"{self._pid.name} on {self.controller!r}", True

    def _bind(self) -> None:
        self._pid = PidDriver(self.controller, self.axis_name)
        apply_values(self.settings, self._pid.read_settings())

    def get_actuator_value(self) -> DataActuator:
        """The setpoint, read from the board."""
        assert self._pid is not None, "read before initialisation"
        return self.get_position_with_scaling(DataActuator(data=self._pid.setpoint(), units=self.axis_unit))

    def move_abs(self, value: DataActuator) -> None:
        """Set the setpoint; the target becomes the setpoint the board took."""
        assert self._pid is not None, "move before initialisation"
        value = self.check_bound(value)
        self.target_value = value
        hardware = self.set_position_with_scaling(value)
        reached = self._pid.set_setpoint(float(hardware.value(self.axis_unit)))
        self.target_value = self.get_position_with_scaling(DataActuator(data=reached, units=self.axis_unit))

    def move_rel(self, value: DataActuator) -> None:
        """Move the setpoint by ``value``."""
        self.move_abs(self.current_value + value)

    def move_home(self) -> None:
        """Setpoint 0 V."""
        assert self._pid is not None, "move before initialisation"
        self._pid.set_setpoint(0.0)
        self.move_done()

    def stop_motion(self) -> None:
        """Moves are immediate: report the setpoint."""
        self.move_done()

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value is reported and the tree shows the board again."""
        if commit_board_setting(self, param) or self._pid is None:
            return
        if param.name() == "axis":
            self._bind()
        elif param.name() == "reset_integrator":
            self._pid.reset_integrator()
        elif param.name() in PID_SETTINGS:
            try:
                apply_values(self.settings, self._pid.configure(**{param.name(): param.value()}))
            except Exception:
                apply_values(self.settings, self._pid.read_settings())
                raise

    def close(self) -> None:
        """Give back this plugin's hold on the board (the PID keeps running)."""
        self._pid = None
        close_board(self)


if __name__ == "__main__":
    main(__file__)
