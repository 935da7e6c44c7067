"""PyMoDAQ 5 plugins for the Red Pitaya's DSP modules, through rpl-noqt.

Importing this package activates rpl-noqt *first* (``import rpl_noqt.auto``),
so that every later ``import pyrpl`` gets the Qt-free stand-ins even though
PyMoDAQ runs real Qt in the same process. PyMoDAQ imports this package while it
lists the installed plugins, long before any plugin touches a board.

Plugins: ``RplScope`` (1D viewer), ``RplIq`` and ``RplSampler`` (0D viewers),
``RplAsg`` and ``RplPid`` (actuators). All plugins on one board share one
:class:`~pymodaq_plugins_rplnoqt.hardware.board.Board` (their PyMoDAQ
``controller``) and through it one ``rpl_noqt`` session.
"""

import rpl_noqt.auto  # noqa: F401  (must precede any import of pyrpl)

from pymodaq_utils.utils import get_version

from .utils import Config

__all__ = ("Config", "__version__", "config")

config = Config()
__version__ = get_version(__package__)
