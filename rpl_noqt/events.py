"""Process-wide named events, for observers of many devices at once.

Per-object notifications stay on each object's typed :class:`~rpl_noqt.runtime.signals.Signal`;
these blinker signals broadcast the same facts across all boards, and blinker's
sender filter lets an observer pick one module or one session::

    from rpl_noqt import events

    @events.attribute_changed.connect_via(p.rp.asg0)   # only asg0
    def on_asg0(module, name, value): ...

    events.attribute_changed.connect(log_everything)    # every module of every board

Receivers run in the thread that made the change (or the event-loop thread for
timer-driven changes), *while that board's lock is held*: keep them short and
thread-safe, and do not wait in them for another board's lock (two boards'
observers waiting for each other would deadlock). Receivers are held
weakly by default (blinker), so keep a reference to a receiver you define
inline.
"""

from __future__ import annotations

from blinker import Namespace

__all__ = ("attribute_changed", "board_state_lost", "namespace", "slot_error")

namespace = Namespace()

#: A PyRPL module attribute changed. sender: the module; kwargs: ``name``, ``value``.
attribute_changed = namespace.signal(
    "attribute-changed", doc="A PyRPL module attribute changed (sender: module; name, value)."
)

#: A slot raised during an emit. sender: the signal's owner (or None);
#: kwargs: ``signal`` (name), ``slot``, ``error``.
slot_error = namespace.signal(
    "slot-error", doc="A slot raised during emit (sender: owner; signal, slot, error)."
)

#: A board came back from an outage with its FPGA reloaded (registers at reset
#: values). sender: the board's client; kwargs: ``board`` ("host:port").
#: ``Session.restore()`` writes the configuration back.
board_state_lost = namespace.signal(
    "board-state-lost", doc="A board's FPGA was reloaded while its link was down (sender: client; board)."
)
