"""Cold ``import pyrpl`` + ``Pyrpl(...)`` construction: rpl_noqt vs upstream with PyQt5.

Each sample is a fresh interpreter (subprocess); the two variants alternate
(rounds, order rotating) so machine load hits both alike; the ratio is the
median of the per-round ratios, with its spread.
Run: python bench/bench_import.py [--runs N]   (goal: rpl_noqt <= 0.5x upstream)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _util import Ratio, goal, interleave, median, table

BODY = """
import time, json
t0 = time.perf_counter()
{activate}
import pyrpl
t1 = time.perf_counter()
p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
t2 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "construct": t2 - t1}}))
"""

VARIANTS = {
    "upstream + PyQt5 (offscreen)": ("", {"QT_QPA_PLATFORM": "offscreen", "RPL_NOQT_DISABLE": "1"}),
    "rpl_noqt (no Qt)": ("import rpl_noqt; rpl_noqt.activate()", {}),
}


def sample(activate: str, extra_env: dict[str, str], user_dir: str) -> dict[str, float]:
    env = dict(os.environ, PYRPL_USER_DIR=user_dir, **extra_env)
    env.pop("DISPLAY", None)
    out = subprocess.run([sys.executable, "-c", BODY.format(activate=activate)], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(runs: int) -> dict[str, list[dict[str, float]]]:
    """{variant: [sample per round]}; the variants alternate, one fresh interpreter each per round."""
    with tempfile.TemporaryDirectory() as user_dir:
        for name, (activate, env) in VARIANTS.items():  # warm the file cache once
            sample(activate, env, user_dir)
        return interleave({name: (lambda a=activate, e=env: sample(a, e, user_dir))
                           for name, (activate, env) in VARIANTS.items()}, runs, warmup=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    result = measure(args.runs)
    totals = {name: [s["import"] + s["construct"] for s in samples] for name, samples in result.items()}
    upstream = "upstream + PyQt5 (offscreen)"
    rows = []
    for name, samples in result.items():
        imp, con = median([s["import"] for s in samples]), median([s["construct"] for s in samples])
        note = f"import {imp * 1e3:.0f} ms + construct {con * 1e3:.1f} ms"
        if name != upstream:
            note += f"; /upstream {Ratio.of(totals[name], totals[upstream])}"
        rows.append((name, f"{median(totals[name]) * 1e3:.0f} ms", note))
    table(f"cold import pyrpl + Pyrpl(...) (medians of {args.runs} fresh interpreters per variant, alternating)",
          rows)
    goal("rpl_noqt / upstream (import + construct)", Ratio.of(totals["rpl_noqt (no Qt)"], totals[upstream]), 0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
