"""``Simulator`` with a plant: ``Simulator(plant="fabry-perot")``.

A subclass of :class:`rpl_noqt.sim.server.Simulator` (exported as
``rpl_noqt.sim.Simulator``) that attaches a plant to its FPGA model and
writes a PyRPL configuration for it.  Without ``plant`` it is the plain
simulator (BNC cables out1 -> in1, out2 -> in2).
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import threading
import weakref
from typing import Any

import yaml

from ..fpga import FpgaModel
from ..server import Simulator as _ServerSimulator
from . import Plant, make_plant

#: with a time-varying plant, the model is stepped at least this often (s of wall time)
TICK = 0.05


class Simulator(_ServerSimulator):
    """The simulated Red Pitaya, optionally wired to a plant.

    ``plant``: a name (``"fabry-perot"``, ``"low-pass"``, ``"resonator"``) or
    a :class:`~rpl_noqt.sim.plants.Plant`; ``plant_params``: parameters for a
    named plant (``{"linewidth": 100e3}``).  ``input_range``: the input
    range jumpers, ``"LV"``/``"HV"`` for both inputs or ``{1: "HV", 2: "LV"}``
    (default LV, what PyRPL assumes); ``rolloff``: True (or a dict of
    ``adc_bandwidth``/``dac_bandwidth``) for the analog roll-off near Nyquist
    (default off: a flat front end), see ``rpl_noqt/sim/analog.py``.  Other
    arguments as :class:`rpl_noqt.sim.server.Simulator`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, plant: str | Plant | None = None,
                 plant_params: dict[str, Any] | None = None, seed: int | None = None,
                 model: FpgaModel | None = None, input_range: str | dict[int, str] | None = None,
                 rolloff: bool | dict[str, float] = False, **kwargs: Any) -> None:
        if plant is None and plant_params:
            raise ValueError("plant_params needs a plant")
        ranges = {1: input_range, 2: input_range} if isinstance(input_range, str) else dict(input_range or {})
        the_plant = None if plant is None else make_plant(plant, **(plant_params or {}))
        super().__init__(host, port, seed=seed, model=model, **kwargs)
        self._config_lock = threading.Lock()
        self._config_dir: str | None = None
        self._ticker: threading.Thread | None = None
        self._ticking = threading.Event()
        if the_plant is not None:
            self.model.attach_plant(the_plant)
        for channel, value in ranges.items():
            self.model.set_input_range(channel, value)
        if isinstance(rolloff, dict):
            self.model.set_rolloff(True, **rolloff)
        elif rolloff is not False:
            self.model.set_rolloff(rolloff)

    # -- the plant's own time ------------------------------------------------------------------
    def start(self) -> Simulator:
        super().start()
        plant = self.plant
        if plant is not None and plant.time_varying and self._ticker is None:
            self._ticking.clear()
            self._ticker = threading.Thread(target=self._tick, name=f"rpl-sim-plant-{self.port}", daemon=True)
            self._ticker.start()
        return self

    def stop(self) -> None:
        self._ticking.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.join(5)
        super().stop()

    def _tick(self) -> None:
        """Step the model every ``TICK`` s while a drifting plant is attached.

        A board runs all the time; the model only computes when asked.  The
        PID integrators are stepped implicitly over the loop's tabulated
        feedback, which is exact only while that feedback is monotonic over the
        output range; a PDH error signal is not, and steps longer than a few
        milliseconds (an idle client: at most 256 steps per access) then fall
        back to explicit Euler, which a fast lock does not survive.  Stepping
        every ``TICK`` keeps the integrator steps at 1 ms or shorter whatever
        the clients do (a limitation of ``pid._Loop``, worked around here).
        A tick that comes less than ``TICK`` after an access stepped the model
        is skipped: in a busy session it would only make an access wait for
        the lock (about 2 ms of PID steps through the plant); gaps stay under
        ``2 TICK``, steps under 1 ms.
        """
        model = self.model
        while not self._ticking.wait(TICK):
            if model.clock.now() - model.stepped_until < TICK:
                continue  # an access stepped the model lately: the lock would only hold it up
            with model.lock, model.clock.held():
                model.advance()

    @property
    def plant(self) -> Plant | None:
        """The plant behind the outputs (None: cables)."""
        return self.model.plant

    @property
    def pyrpl_config(self) -> pathlib.Path | None:
        """What to pass as ``rpl_noqt.connect(..., config=...)`` for this plant.

        A ``pathlib.Path`` to a YAML file this simulator writes (once, in a
        temporary folder of its own, removed when the simulator is garbage
        collected or the interpreter exits): PyRPL's lockbox set up for the
        plant, ready for ``calibrate_all()`` and ``lock()``.  PyRPL saves its
        calibrations there too; copy the file to keep them.  None without a
        plant (an in-memory config).
        """
        plant = self.plant
        if plant is None:
            return None
        with self._config_lock:
            if self._config_dir is None:
                self._config_dir = tempfile.mkdtemp(prefix="rpl-noqt-sim-config-")
                weakref.finalize(self, shutil.rmtree, self._config_dir, True)
            path = pathlib.Path(self._config_dir) / f"{plant.name.replace('-', '_')}.yml"
            if not path.exists():
                path.write_text(yaml.safe_dump(plant.pyrpl_config(), sort_keys=False))
            return path
