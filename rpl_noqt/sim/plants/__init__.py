"""Plants: the physical systems a simulated Red Pitaya can be wired to.

``Simulator(plant="fabry-perot")`` (or ``rpl-noqt sim --plant fabry-perot``)
puts one behind the outputs; ``sim.plant`` is the object (parameters as
attributes, ``kick()``), ``sim.pyrpl_config`` a PyRPL configuration for it.

=============== =================================================== ====================
name            what                                                wiring
=============== =================================================== ====================
``fabry-perot`` optical cavity, piezo, PDH sidebands, drift, noise   out1 piezo, out2 EOM,
                                                                    in1 transmission,
                                                                    in2 reflection
``low-pass``    first-order low-pass                                out1 -> in1
``resonator``   one mechanical mode                                 out1 -> in1
=============== =================================================== ====================

See ``docs/simulator.md`` (Plants) for the equations and what is not modelled.
"""

from __future__ import annotations

from typing import Any

from .base import LinearPlant, Plant
from .fabryperot import FabryPerot
from .lowpass import LowPass
from .resonator import Resonator

#: plant name -> class
PLANTS: dict[str, type[Plant]] = {cls.name: cls for cls in (FabryPerot, LowPass, Resonator)}


def make_plant(plant: str | Plant, **params: Any) -> Plant:
    """A plant from its name (``"fabry-perot"``, ``"low-pass"``, ``"resonator"``) and parameters, or as given."""
    if isinstance(plant, Plant):
        if params:
            plant.set(**params)
        return plant
    if not isinstance(plant, str) or plant not in PLANTS:
        raise ValueError(f"unknown plant {plant!r}; allowed: {', '.join(sorted(PLANTS))} (or a Plant instance)")
    return PLANTS[plant](**params)


__all__ = ("PLANTS", "FabryPerot", "LinearPlant", "LowPass", "Plant", "Resonator", "make_plant")
