"""Actuator: the setpoint of a Red Pitaya PID controller (PyRPL ``pid0``-``pid2``)."""

from __future__ import annotations

from typing import Any

from pymodaq.control_modules.move_utility_classes import DataActuatorType, comon_parameters_fun, main

from pymodaq_plugins_rplnoqt.actuator import BoardActuator
from pymodaq_plugins_rplnoqt.common import board_params
from pymodaq_plugins_rplnoqt.hardware.options import DSP_SIGNALS, OUTPUT_DIRECTS, PID_MODULES
from pymodaq_plugins_rplnoqt.hardware.pid import PID_SETTINGS, PidDriver


class DAQ_Move_RplPid(BoardActuator):
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

    driver_class = PidDriver
    driver_settings = PID_SETTINGS

    read_method = "setpoint"
    write_method = "set_setpoint"

    def _commit_extra(self, param: Any) -> bool:
        if param.name() == "reset_integrator":
            self.driver.reset_integrator()
            return True
        return False


if __name__ == "__main__":
    main(__file__)
