"""The external trigger pin DIO0_P and the ASG's external trigger sources.

RTL (lneuhaus/pyrpl, ``pyrpl/fpga/rtl``):

* ``red_pitaya_top.v`` lines 421, 480-481: both generator channels take
  ``exp_p_in[0]`` (DIO0_P, the expansion connector's external trigger pin) as
  their trigger input; ``exp_p_in`` is the pin as the IOBUF sees it, so a pin
  that housekeeping drives as an output (``hk.expansion_P0_output = True``,
  ``hk.expansion_P0 = ...``) triggers the generators too.
* ``red_pitaya_asg.v`` lines 126-166: the pin passes an "advanced trigger"
  per channel, transparent while its ``at_reset`` bit is set (``trig_o =
  reset_i ? trig_i : ...``, ``red_pitaya_adv_trigger.v`` line 87), which is
  the reset value (asg.v ``at_reset_a <= 1'b1``) and what PyRPL leaves.
* ``red_pitaya_asg_ch.v`` lines 184-192: trigger source (control word bits
  [2:0] / [18:16], PyRPL ``trigger_source``): 2 ``ext_positive_edge``, 3
  ``ext_negative_edge``, 4 ``ext_raw`` (the level itself, every cycle), and
  lines 232-276: a two-flip-flop synchroniser, then per edge direction a
  debouncer: an edge reloads a 62500-cycle (0.5 ms) counter only when that
  counter is at 0, and the debounced level follows the pin only while it is
  0; ``ext_trig_p`` is the debounced level's 0 -> 1 step, ``ext_trig_n`` its
  1 -> 0 step.  So a rising edge triggers ``ext_positive_edge`` if no rising
  edge was accepted in the 0.5 ms before it (likewise falling edges and
  ``ext_negative_edge``); the two directions debounce independently.
* Latency: pin -> ``ext_trig_in[1]`` (2 cycles) -> ``ext_trig_dp`` (1) ->
  ``trig_in`` (1), against 2 cycles from the control-word write to
  ``trig_in`` for the software trigger (asg.v line 276, asg_ch.v line 186);
  the model starts a software-triggered generator at the write, so an
  external edge starts it ``LATENCY_CYCLES = 2`` cycles after the pin moved.

There is no cross trigger between the channels in this RTL (PyRPL 0.9.9.1's
``Asg._trigger_sources`` are off, immediately, ext_positive_edge,
ext_negative_edge, ext_raw, high); the scope's ``asg0``/``asg1`` sources are
the generators' ``trig_done`` (``scope.py``).

Model: the pin's level is what housekeeping drives when DIO0_P is an output
(``dir_p`` bit 0), else what the simulator's external input is set to
(:meth:`FpgaModel.set_external_trigger`, :meth:`FpgaModel.pulse_external_trigger`).
Each change is an event at pin time + ``LATENCY_CYCLES``; events are applied
in time order at the access that reaches them (everything before an event is
computed with the state before it).  ``ext_raw`` is modelled like ``high``
while the pin is high; when it goes low a generator running in bursts
finishes the burst it is in (with ``cycles_per_burst`` 0 it runs on, as in
the RTL).  Not modelled: the advanced trigger when its reset bit is cleared,
the gated repetitions (control bit 8).

The scope's external sources 6 (rising) and 7 (falling) see the same pin
(``red_pitaya_top.v`` line 440, ``red_pitaya_scope.v`` lines 631-632) through
the same synchroniser and debouncer (lines 726-746, 775-776), whose length is
the scope's register 0x90 (``set_deb_len``, 62500 after a reload, line 801;
PyRPL's ``scope.trigger_debounce``): :meth:`Dio0.first_edge` replays the
pin's history (the last ``HISTORY`` changes) through it.  The model gives the
scope the generators' timing (2 cycles after the pin).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from .signals import CYCLE

if TYPE_CHECKING:
    from .fpga import FpgaModel

#: the ASG's debouncer (``red_pitaya_asg_ch.v`` lines 255, 260: 20'd62500)
DEBOUNCE_CYCLES = 62500
#: an external edge starts the generator this many cycles after a software trigger would
LATENCY_CYCLES = 2
#: pin changes kept for the scope's debouncer
HISTORY = 4096


class Dio0:
    """DIO0_P as the generators see it: level, pending events, debouncers."""

    def __init__(self, model: FpgaModel) -> None:
        self.model = model
        self.external = False  # what is connected to the pin from outside
        self.level = False  # the pin (hk output or external), as of the last change applied
        self._events: list[tuple[float, int, bool]] = []  # (effective time, order, level)
        self._order = 0
        self._deb_p_end = -1.0  # when the rising-edge debouncer is back at 0
        self._deb_n_end = -1.0
        self.history: list[tuple[float, bool]] = []  # applied changes (effective time, level)

    def pin(self) -> bool:
        """The pin now: housekeeping's output bit when it drives DIO0_P, else the external input."""
        hk = self.model.hk
        if hk.dir_p & 1:
            return bool(hk.out_p & 1)
        return self.external

    def _scheduled_level(self) -> bool:
        return self._events[-1][2] if self._events else self.level

    def changed(self, now: float) -> None:
        """The pin may have changed at ``now``: schedule the change."""
        self.schedule(now, self.pin())

    def schedule(self, t_pin: float, level: bool) -> None:
        if level == self._scheduled_level() and (not self._events or t_pin >= self._events[-1][0]):
            return
        self._order += 1
        bisect.insort(self._events, (t_pin + LATENCY_CYCLES * CYCLE, self._order, level))

    def due(self, now: float) -> float | None:
        return self._events[0][0] if self._events and self._events[0][0] <= now else None

    def apply_next(self) -> None:
        """Apply the earliest pending event (the caller has brought the model to its time)."""
        t, _, level = self._events.pop(0)
        if level == self.level:
            return
        self.level = level
        self.history.append((t, level))
        if len(self.history) > HISTORY:
            del self.history[: len(self.history) - HISTORY]
        hk = self.model.hk
        hk.ext_p = (hk.ext_p & ~1) | int(level)  # exp_p_in[0] (read back at 0x20 while DIO0_P is an input)
        for ch in self.model.asg:
            src = ch.source
            if level and src == 2 and t >= self._deb_p_end:
                ch.external_trigger(t)
            elif not level and src == 3 and t >= self._deb_n_end:
                ch.external_trigger(t)
            elif src == 4:
                ch.raw_level(t, level)
        if level and t >= self._deb_p_end:
            self._deb_p_end = t + DEBOUNCE_CYCLES * CYCLE
        if not level and t >= self._deb_n_end:
            self._deb_n_end = t + DEBOUNCE_CYCLES * CYCLE

    def first_edge(self, t_from: float, positive: bool, deb_len: int) -> float | None:
        """The first edge at or after ``t_from`` that the scope's debouncer (``deb_len`` cycles)
        accepts: rising for ``positive``, else falling (``red_pitaya_scope.v`` lines 726-746)."""
        deb_end = -1.0
        for t, level in self.history:
            if level != positive:
                continue
            if t >= deb_end:
                if t >= t_from:
                    return t
                deb_end = t + deb_len * CYCLE
        return None
