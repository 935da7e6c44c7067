"""Signal emit with one slot: rpl_noqt vs psygnal emit / emit_fast vs blinker send.

Variants are interleaved in rounds; each ratio is the median of the per-round ratios
(with its spread). Times are CPU time of this process (less disturbed by other load).

Run: python bench/bench_signals.py [--rounds N]  (goal: rpl_noqt emit <= psygnal emit_fast)
"""

from __future__ import annotations

import argparse
import sys

from _util import Ratio, cpu_ns, goal, interleave, median, per_call_ns, table

N = 20_000


def measure(rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per slot kind: {variant: [ns per emit, one sample per interleaved round]}."""
    import blinker
    import psygnal

    from rpl_noqt.runtime.signals import set_strict_checks, strict_checks
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
    strict_before = strict_checks()
    results = {}
    try:
        for slot_kind in ("function", "method"):
            receiver = Receiver()
            slot = func if slot_kind == "function" else receiver.on
            ours, theirs = Ours(), Theirs()
            ours.changed.connect(slot)
            theirs.changed.connect(slot)
            sig = blinker.Signal()
            if slot_kind == "function":
                sig.connect(lambda sender, **kw: None, weak=False)
            else:
                sig.connect(lambda sender, **kw: receiver.on(kw["name"], kw["value"]), weak=False)

            def ours_emit(strict: bool):
                def run() -> float:
                    set_strict_checks(strict)
                    return per_call_ns(lambda: ours.changed.emit("x", arg), number=N, clock=cpu_ns)

                return run

            def timed(f):
                return lambda: per_call_ns(f, number=N, clock=cpu_ns)

            variants = {
                "rpl_noqt emit": ours_emit(False),
                "rpl_noqt emit strict": ours_emit(True),
                "psygnal emit": timed(lambda: theirs.changed.emit("x", arg)),
                "psygnal emit_fast": timed(lambda: theirs.changed.emit_fast("x", arg)),
                "blinker send": timed(lambda: sig.send(None, name="x", value=arg)),
            }
            results[slot_kind] = interleave(variants, rounds)
            set_strict_checks(False)
    finally:
        set_strict_checks(strict_before)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    results = measure(args.rounds)
    rows = []
    against_fast = {}
    for kind, samples in results.items():
        ours = samples["rpl_noqt emit"]
        for name, values in samples.items():
            note = "" if name == "rpl_noqt emit" else f"rpl_noqt emit / this = {Ratio.of(ours, values)}"
            rows.append((f"{name} ({kind})", f"{median(values):.0f} ns", note))
        against_fast[kind] = Ratio.of(ours, samples["psygnal emit_fast"])
    table("Signal emit, one slot (CPU ns per emit, medians; ratio < 1 means rpl_noqt is faster)", rows)
    for kind, ratio in against_fast.items():
        goal(f"rpl_noqt emit / psygnal emit_fast ({kind} slot)", ratio, 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
