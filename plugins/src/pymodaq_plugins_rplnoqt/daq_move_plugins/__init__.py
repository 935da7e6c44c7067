"""Actuator plugins: ``RplAsg`` (generator frequency) and ``RplPid`` (PID setpoint).

PyMoDAQ 5.3 looks its plugin classes up as attributes of this package and
lists the folder through ``path.parent``: both need the imports and ``path``
below. An import error here is not swallowed.
"""

from pathlib import Path

from . import daq_move_RplAsg, daq_move_RplPid  # noqa: F401

path = Path(__file__)
