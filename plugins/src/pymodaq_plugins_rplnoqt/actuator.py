"""What the board actuators share: one value of one PyRPL module, moved at once.

A plugin names its driver class, the settings the driver configures, how to
read and write the axis value and where home is; joining the board (or the
master's), reading settings back, immediate moves that report the value the
board took, refused settings restored from the board, and giving the board
back on close are the same for all of them.

Every move ends with PyMoDAQ's ``move_done``, also a refused one: a value out
of the register's range says why in the status bar (naming the limits) and
the target becomes the value the board holds, so whatever waits for the move
is released. A board that does not answer is reported the same way, the
axis staying at the last value read.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pymodaq.control_modules.move_utility_classes import DAQ_Move_base
from pymodaq.utils.data import DataActuator

from pymodaq_plugins_rplnoqt.common import (
    apply_values,
    close_board,
    close_message,
    commit_board_setting,
    committed_value,
    init_failed,
    open_board,
    plain_text,
    report,
)
from pymodaq_plugins_rplnoqt.hardware.options import SettingError
from pymodaq_plugins_rplnoqt.lifecycle import Lifecycle
from rpl_noqt.errors import BoardLockedError


class BoardActuator(DAQ_Move_base):
    """Base of the board actuators (not a plugin itself: no ``daq_move_`` module)."""

    #: the hardware driver class: ``driver_class(board, module_name)``
    driver_class: ClassVar[type]
    #: settings the driver's ``configure(**kw)`` accepts
    driver_settings: ClassVar[tuple[str, ...] | frozenset[str]]

    def ini_attributes(self) -> None:
        self.controller = None
        self.driver: Any = None
        self._life = Lifecycle(self)
        #: the axis value last read from or written to the board (driver units)
        self._last = 0.0

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

    def _unit(self) -> str:
        return str(self.axis_unit)

    # -- PyMoDAQ's actuator methods ---------------------------------------------------------
    def ini_stage(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's) and read the settings back; False with the reason if that fails."""
        try:
            self.controller = open_board(self, controller)
        except Exception as exc:
            return init_failed(self, exc)
        try:
            self._bind()
        except Exception as exc:
            self._release()
            return init_failed(self, exc)
        self._life.opened()
        return f"{self.driver.name} on {self.controller!r}", True

    def _bind(self) -> None:
        self.driver = self.driver_class(self.controller, self.axis_name)
        apply_values(self.settings, self.driver.read_settings())
        self._last = self._read_value()

    def get_actuator_value(self) -> DataActuator:
        """The axis value read from the board (the last one known if the board does not answer, or after close)."""
        with self._life.working("read") as ok:
            if ok:
                try:
                    self._last = self._read_value()
                except ConnectionError as exc:  # rpl_noqt.BoardConnectionError: said once per failed read
                    report(self, f"{self.driver.name}: {plain_text(str(exc))}; showing the last value read",
                           logging.WARNING)
        return self.get_position_with_scaling(DataActuator(data=self._last, units=self.axis_unit))

    def _write_or_stay(self, value: float) -> float:
        """Write ``value``; if the board refuses it (or does not answer) say why and return where the axis is."""
        try:
            self._last = self._write_value(value)
        except SettingError as exc:
            self._last = self._read_value()
            report(self, f"{plain_text(str(exc))}; {self.driver.name} stays at {self._last:g} {self._unit()}",
                   logging.WARNING)
        except (ConnectionError, BoardLockedError) as exc:  # locked: another client of a leco:// board holds it
            report(self, f"{self.driver.name}: move to {value:g} {self._unit()} failed: {plain_text(str(exc))}",
                   logging.WARNING)
        return self._last

    def move_abs(self, value: DataActuator) -> None:
        """Write the value; the target becomes the value the board took (or holds, if it refused it)."""
        with self._life.working("move") as ok:
            if ok:
                value = self.check_bound(value)
                hardware = self.set_position_with_scaling(value)
                self._write_or_stay(float(hardware.value(self.axis_unit)))
            # PyMoDAQ polls until the axis is at the target, then emits move_done: aim at the board's value
            self.target_value = self.get_position_with_scaling(DataActuator(data=self._last, units=self.axis_unit))

    def move_rel(self, value: DataActuator) -> None:
        """Move by ``value`` from the current value."""
        self.move_abs(self.current_value + value)

    def move_home(self) -> None:
        """Go to the home value (PyMoDAQ does not poll after a home: move_done is emitted here)."""
        with self._life.working("move home") as ok:
            if ok:
                self._write_or_stay(self._home_value())
        self.move_done(self.get_position_with_scaling(DataActuator(data=self._last, units=self.axis_unit)))

    def stop_motion(self) -> None:
        """Moves are immediate: report where the axis is."""
        self.move_done()

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value says why, and the tree shows the board's."""
        if commit_board_setting(self, param):
            return
        with self._life.working("setting") as ok:
            if not ok:
                return
            name = param.name()
            try:
                if name == "axis":
                    self._bind()
                elif self._commit_extra(param):
                    return
                elif name in self.driver_settings:
                    apply_values(self.settings, self.driver.configure(**{name: committed_value(self, param)}),
                                 resend=(name,))
            except Exception as exc:
                report(self, plain_text(str(exc)))
                apply_values(self.settings, self.driver.read_settings(), resend=(name,))

    def close(self) -> str:
        """Give back this plugin's hold on the board, now or when its running move ends."""
        self._life.close(self._release)
        return close_message(self)

    def _release(self) -> None:
        self.driver = None
        close_board(self)
