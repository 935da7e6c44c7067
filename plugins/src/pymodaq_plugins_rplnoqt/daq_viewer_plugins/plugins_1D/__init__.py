"""1D viewer: ``RplScope``.

PyMoDAQ 5.3 looks its plugin classes up as attributes of this package and
lists the folder through ``path.parent``: both need the import and ``path``
below. An import error here is not swallowed.
"""

from pathlib import Path

from . import daq_1Dviewer_RplScope  # noqa: F401

path = Path(__file__)
