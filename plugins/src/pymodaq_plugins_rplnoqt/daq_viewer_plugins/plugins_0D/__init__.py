"""0D viewers: ``RplIq`` (lock-in) and ``RplSampler`` (DSP signal voltages).

PyMoDAQ 5.3 looks its plugin classes up as attributes of this package and
lists the folder through ``path.parent``: both need the imports and ``path``
below. An import error here is not swallowed.
"""

from pathlib import Path

from . import daq_0Dviewer_RplIq, daq_0Dviewer_RplSampler  # noqa: F401

path = Path(__file__)
