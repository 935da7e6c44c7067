"""A simulated Red Pitaya running PyRPL's FPGA image, served like ``monitor_server``.

Quick start::

    from rpl_noqt.sim import Simulator

    with Simulator() as sim:              # 127.0.0.1, ephemeral port
        sim.model.set_loopback(1, gain=1.0, noise=1e-3)
        ...  # point pyrpl's MonitorClient at ("127.0.0.1", sim.port)

    with Simulator(plant="fabry-perot") as sim:   # a cavity to lock (rpl_noqt.sim.plants)
        session = rpl_noqt.connect(sim.host, sim.port, ssh=False, config=sim.pyrpl_config)

See ``docs/simulator.md`` for what is modelled and how it was checked against
the FPGA sources.
"""

from __future__ import annotations

from .analog import Loopback
from .clock import Clock, ManualClock
from .faults import Faults
from .fpga import FpgaModel
from .plants.simulator import Simulator  # the server's Simulator, plus plant= and pyrpl_config
from .server import ClientPolicy

__all__ = (
    "ClientPolicy",
    "Clock",
    "Faults",
    "FpgaModel",
    "Loopback",
    "ManualClock",
    "Simulator",
)
