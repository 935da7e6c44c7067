"""What the board actuators share: one value of one PyRPL module, moved at once.

A plugin names its driver class, the settings the driver configures, how to
read and write the axis value and where home is; joining the board (or the
master's), reading settings back, immediate moves that report the value the
board took, refused settings restored from the board, and giving the board
back on close are the same for all of them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pymodaq.control_modules.move_utility_classes import DAQ_Move_base
from pymodaq.utils.data import DataActuator

from pymodaq_plugins_rplnoqt.common import apply_values, close_board, commit_board_setting, open_board


class BoardActuator(DAQ_Move_base):
    """Base of the board actuators (not a plugin itself: no ``daq_move_`` module)."""

    #: the hardware driver class: ``driver_class(board, module_name)``
    driver_class: ClassVar[type]
    #: settings the driver's ``configure(**kw)`` accepts
    driver_settings: ClassVar[tuple[str, ...] | frozenset[str]]

    def ini_attributes(self) -> None:
        self.controller = None
        self.driver: Any = None

    #: names of the driver's methods that read the axis value and write it
    #: (the writer returns the value the board took)
    read_method: ClassVar[str]
    write_method: ClassVar[str]

    # -- what a plugin may refine -------------------------------------------------------
    def _read_value(self) -> float:
        return getattr(self.driver, self.read_method)()

    def _write_value(self, value: float) -> float:
        return getattr(self.driver, self.write_method)(value)

    def _home_value(self) -> float:
        """Where home is (0 unless a plugin says otherwise)."""
        return 0.0

    def _commit_extra(self, param: Any) -> bool:
        """Handle a plugin-specific setting (e.g. a push button); True if handled."""
        return False

    # -- PyMoDAQ's actuator methods ---------------------------------------------------------
    def ini_stage(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's) and read the module's settings back."""
        self.controller = open_board(self, controller)
        try:
            self._bind()
        except BaseException:
            close_board(self)
            raise
        return f"{self.driver.name} on {self.controller!r}", True

    def _bind(self) -> None:
        self.driver = self.driver_class(self.controller, self.axis_name)
        apply_values(self.settings, self.driver.read_settings())

    def get_actuator_value(self) -> DataActuator:
        """The axis value, read from the board."""
        assert self.driver is not None, "read before initialisation"
        return self.get_position_with_scaling(DataActuator(data=self._read_value(), units=self.axis_unit))

    def move_abs(self, value: DataActuator) -> None:
        """Write the value; the target becomes the value the board took."""
        assert self.driver is not None, "move before initialisation"
        value = self.check_bound(value)
        self.target_value = value
        hardware = self.set_position_with_scaling(value)
        reached = self._write_value(float(hardware.value(self.axis_unit)))
        self.target_value = self.get_position_with_scaling(DataActuator(data=reached, units=self.axis_unit))

    def move_rel(self, value: DataActuator) -> None:
        """Move by ``value`` from the current value."""
        self.move_abs(self.current_value + value)

    def move_home(self) -> None:
        """Go to the home value."""
        assert self.driver is not None, "move before initialisation"
        self._write_value(self._home_value())
        self.move_done()

    def stop_motion(self) -> None:
        """Moves are immediate: report where the axis is."""
        self.move_done()

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value is reported and the tree shows the board again."""
        if commit_board_setting(self, param) or self.driver is None:
            return
        if param.name() == "axis":
            self._bind()
        elif self._commit_extra(param):
            return
        elif param.name() in self.driver_settings:
            try:
                apply_values(self.settings, self.driver.configure(**{param.name(): param.value()}))
            except Exception:
                apply_values(self.settings, self.driver.read_settings())
                raise

    def close(self) -> None:
        """Give back this plugin's hold on the board (the module keeps running)."""
        self.driver = None
        close_board(self)
