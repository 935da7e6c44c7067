"""The typed Signal: Qt surface, checks, weak references, threads, errors."""

from __future__ import annotations

import gc
import logging
import threading

import pytest

from rpl_noqt.runtime import loop, signals
from rpl_noqt import events
from rpl_noqt.errors import SlotError
from rpl_noqt.shims.qtcore import QObject, Qt, Signal, SignalInstance


class Emitter(QObject):
    changed = Signal(str, list)
    ping = Signal()
    number = Signal(float)


class Receiver:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_changed(self, name, value):
        self.calls.append((name, value))

    def on_name_only(self, name):
        self.calls.append((name,))


def test_connect_emit_in_connection_order():
    e = Emitter()
    seen = []
    e.changed.connect(lambda n, v: seen.append(("a", n, v)))
    e.changed.connect(lambda n, v: seen.append(("b", n, v)))
    e.changed.emit("x", [1])
    assert seen == [("a", "x", [1]), ("b", "x", [1])]


def test_bound_signals_are_per_instance():
    a, b = Emitter(), Emitter()
    seen = []
    a.ping.connect(lambda: seen.append("a"))
    b.ping.emit()
    assert seen == []
    a.ping.emit()
    assert seen == ["a"]
    assert isinstance(a.ping, SignalInstance) and a.ping is a.ping
    assert isinstance(Emitter.ping, Signal)


def test_emit_arity_is_checked():
    e = Emitter()
    with pytest.raises(TypeError, match=r"changed\(str, list\)\.emit\(\) takes 2 argument\(s\), got 1"):
        e.changed.emit("only-one")


def test_connect_rejects_slot_needing_more_arguments():
    e = Emitter()
    with pytest.raises(TypeError, match="requires 3 positional"):
        e.changed.connect(lambda a, b, c: None)


def test_slot_with_fewer_parameters_gets_leading_arguments():
    e, r = Emitter(), Receiver()
    e.changed.connect(r.on_name_only)
    e.changed.emit("freq", [3.0])
    assert r.calls == [("freq",)]


def test_connect_checks_annotations_against_declared_types():
    e = Emitter()

    def wrong(name: int, value: list) -> None: ...

    def fine(name: str, value: object) -> None: ...

    with pytest.raises(TypeError, match="annotated int cannot take the signal's str"):
        e.changed.connect(wrong)
    e.changed.connect(fine)


def test_strict_mode_checks_emitted_types_with_numeric_widening():
    e = Emitter()
    assert signals.strict_checks()  # the suite runs strict (conftest)
    with pytest.raises(TypeError, match="argument 1 is tuple"):
        e.changed.emit("x", (1, 2))
    e.number.emit(3)  # int is acceptable for float, as Qt converts it
    with pytest.raises(TypeError, match="argument 0 is bool"):
        e.number.emit(True)
    signals.set_strict_checks(False)
    try:
        e.changed.emit("x", (1, 2))  # unchecked when not strict
    finally:
        signals.set_strict_checks(True)


def test_bound_method_slots_are_weak():
    e, r = Emitter(), Receiver()
    e.changed.connect(r.on_changed)
    assert e.changed.receivers() == 1
    del r
    gc.collect()
    assert e.changed.receivers() == 0
    e.changed.emit("x", [1])  # no dead slot called


def test_functions_are_held_strongly():
    e = Emitter()
    seen = []

    def make():
        return lambda n, v: seen.append(n)

    e.changed.connect(make())
    gc.collect()
    e.changed.emit("kept", [])
    assert seen == ["kept"]


def test_disconnect_one_all_and_errors():
    e, r = Emitter(), Receiver()
    with pytest.raises(TypeError, match="no connections"):
        e.ping.disconnect()
    e.changed.connect(r.on_changed)
    other = []
    e.changed.connect(lambda n, v: other.append(n))
    e.changed.disconnect(r.on_changed)
    e.changed.emit("a", [])
    assert r.calls == [] and other == ["a"]
    with pytest.raises(TypeError, match="is not connected"):
        e.changed.disconnect(r.on_changed)
    e.changed.disconnect()
    e.changed.emit("b", [])
    assert other == ["a"]


def test_unique_connection_refuses_duplicates():
    e, r = Emitter(), Receiver()
    e.changed.connect(r.on_changed, Qt.UniqueConnection)
    with pytest.raises(TypeError, match="already connected"):
        e.changed.connect(r.on_changed, Qt.UniqueConnection)


def test_signal_to_signal_forwarding():
    e = Emitter()
    seen = []
    e.ping.connect(lambda: seen.append("pinged"))
    relay = Emitter()
    relay.ping.connect(e.ping)
    relay.ping.emit()
    assert seen == ["pinged"]
    with pytest.raises(TypeError, match="needs 2 argument"):
        relay.ping.connect(e.changed)


def test_block_signals_on_object_and_on_instance():
    e = Emitter()
    seen = []
    e.ping.connect(lambda: seen.append(1))
    assert e.blockSignals(True) is False
    e.ping.emit()
    e.number.connect(lambda v: seen.append(v))  # created while blocked: blocked too
    e.number.emit(2.0)
    assert seen == [] and e.signalsBlocked()
    assert e.blockSignals(False) is True
    e.ping.emit()
    e.number.emit(2.0)
    assert seen == [1, 2.0]
    e.ping.blockSignals(True)
    e.ping.emit()
    assert seen == [1, 2.0]


def test_slot_exception_is_logged_broadcast_and_others_still_run(caplog):
    e = Emitter()
    after = []
    reports = []

    def boom(name, value):
        raise ValueError("slot failure " + name)

    def on_error(sender, **kw):
        reports.append((sender, kw["signal"], type(kw["error"])))

    e.changed.connect(boom)
    e.changed.connect(lambda n, v: after.append(n))
    events.slot_error.connect(on_error)
    try:
        with caplog.at_level(logging.ERROR, logger="rpl_noqt.runtime.signals"):
            e.changed.emit("x", [])
    finally:
        events.slot_error.disconnect(on_error)
    assert after == ["x"]
    assert reports == [(e, "changed", ValueError)]
    record = next(r for r in caplog.records if "raised" in r.getMessage())
    assert record.exc_info and record.exc_info[0] is ValueError


def test_raise_mode_raises_after_all_slots_ran():
    e = Emitter()
    after = []
    e.ping.connect(lambda: (_ for _ in ()).throw(KeyError("k")))
    e.ping.connect(lambda: after.append(1))
    signals.set_slot_error_mode("raise")
    try:
        with pytest.raises(SlotError) as info:
            e.ping.emit()
    finally:
        signals.set_slot_error_mode("log")
    assert after == [1] and isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match="'log' or 'raise'"):
        signals.set_slot_error_mode("ignore")  # type: ignore[arg-type]


def test_queued_connection_runs_on_the_loop_thread():
    e = Emitter()
    done = threading.Event()
    where = []

    def slot(value):
        where.append((threading.current_thread().name, value))
        done.set()

    e.number.connect(slot, Qt.QueuedConnection)
    e.number.emit(1.5)
    assert done.wait(5)
    assert where == [(loop.THREAD_NAME, 1.5)]


def test_blocking_queued_connection_is_refused():
    with pytest.raises(ValueError, match="BlockingQueuedConnection"):
        Emitter().ping.connect(lambda: None, Qt.BlockingQueuedConnection)


def test_connect_and_disconnect_while_other_threads_emit():
    """Bounded: 4 emitters x 2000 emits against 2 threads churning connections."""
    e = Emitter()
    stable_hits = []
    e.number.connect(lambda v: stable_hits.append(v))
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn():
        try:
            for _ in range(2000):
                r = Receiver()
                fn = lambda v: None  # noqa: E731
                e.number.connect(fn)
                e.number.connect(r.on_name_only)
                e.number.disconnect(fn)
                e.number.disconnect(r.on_name_only)
                if stop.is_set():
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def emit():
        try:
            for i in range(2000):
                e.number.emit(float(i))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(2)] + [threading.Thread(target=emit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(stable_hits) == 8000  # the stable slot saw every emit exactly once
    assert e.number.receivers() == 1


def test_connect_requires_callable():
    with pytest.raises(TypeError, match="needs a callable slot"):
        Emitter().ping.connect(42)  # type: ignore[arg-type]


def test_parameterised_annotations_are_not_checked_as_classes():
    e = Emitter()

    def slot(name: str, value: list[int]) -> None: ...

    e.changed.connect(slot)  # list[int] is no class (a "type" on Python 3.10): skipped
    e.changed.emit("x", [1])
