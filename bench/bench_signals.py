"""Signal emit with one slot: rpl_noqt vs psygnal emit / emit_fast vs blinker send.

Run: python bench/bench_signals.py  (target: rpl_noqt emit <= psygnal emit_fast)
"""

from __future__ import annotations

import sys

from _util import per_call_ns, table

N = 200_000


def measure() -> dict[str, float]:
    import blinker
    import psygnal

    from rpl_noqt.signals import set_strict_checks
    from rpl_noqt.shims.qtcore import QObject
    from rpl_noqt.shims.qtcore import Signal as NoQtSignal

    class Receiver:
        def on(self, name, value):
            pass

    def func(name, value):
        pass

    class Ours(QObject):
        changed = NoQtSignal(str, list)

    class Theirs:
        changed = psygnal.Signal(str, list)

    arg = [1.0]
    results = {}
    for slot_kind in ("function", "method"):
        receiver = Receiver()
        slot = func if slot_kind == "function" else receiver.on
        ours, theirs = Ours(), Theirs()
        ours.changed.connect(slot)
        theirs.changed.connect(slot)
        sig = blinker.Signal()
        sig.connect(lambda sender, **kw: None, weak=False) if slot_kind == "function" else sig.connect(
            lambda sender, **kw: receiver.on(kw["name"], kw["value"]), weak=False)
        set_strict_checks(False)
        results[f"rpl_noqt emit ({slot_kind})"] = per_call_ns(lambda: ours.changed.emit("x", arg), number=N)
        set_strict_checks(True)
        results[f"rpl_noqt emit strict ({slot_kind})"] = per_call_ns(lambda: ours.changed.emit("x", arg), number=N)
        set_strict_checks(False)
        results[f"psygnal emit ({slot_kind})"] = per_call_ns(lambda: theirs.changed.emit("x", arg), number=N)
        results[f"psygnal emit_fast ({slot_kind})"] = per_call_ns(lambda: theirs.changed.emit_fast("x", arg), number=N)
        results[f"blinker send ({slot_kind})"] = per_call_ns(lambda: sig.send(None, name="x", value=arg), number=N)
    return results


def main() -> int:
    r = measure()
    rows = []
    ok = True
    for kind in ("function", "method"):
        ours = r[f"rpl_noqt emit ({kind})"]
        fast = r[f"psygnal emit_fast ({kind})"]
        ok &= ours <= fast
        for name in (f"rpl_noqt emit ({kind})", f"rpl_noqt emit strict ({kind})", f"psygnal emit ({kind})",
                     f"psygnal emit_fast ({kind})", f"blinker send ({kind})"):
            rows.append((name, f"{r[name]:.0f} ns", f"ours/this = {ours / r[name]:.2f}x"))
    table("Signal emit, one slot (ns per emit; ratio < 1 means rpl_noqt is faster)", rows)
    print(f"  target: rpl_noqt emit <= psygnal emit_fast -> {'MET' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
