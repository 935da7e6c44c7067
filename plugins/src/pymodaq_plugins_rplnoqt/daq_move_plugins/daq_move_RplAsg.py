"""Actuator: the frequency of a Red Pitaya signal generator (PyRPL ``asg0``/``asg1``)."""

from __future__ import annotations

from pymodaq.control_modules.move_utility_classes import DataActuatorType, comon_parameters_fun, main

from pymodaq_plugins_rplnoqt.actuator import BoardActuator
from pymodaq_plugins_rplnoqt.common import board_params
from pymodaq_plugins_rplnoqt.hardware.asg import ASG_SETTINGS, AsgDriver
from pymodaq_plugins_rplnoqt.hardware.options import ASG_MODULES, ASG_WAVEFORMS, OUTPUT_DIRECTS


class DAQ_Move_RplAsg(BoardActuator):
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

    driver_class = AsgDriver
    driver_settings = ASG_SETTINGS

    read_method = "frequency"
    write_method = "set_frequency"

    def _home_value(self) -> float:
        return float(self.settings["home_frequency"])


if __name__ == "__main__":
    main(__file__)
