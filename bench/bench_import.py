"""Cold ``import pyrpl`` + ``Pyrpl(...)`` construction: rpl_noqt vs upstream with PyQt5.

Each sample is a fresh interpreter (subprocess); the two variants alternate so
machine load hits both alike; medians are compared.
Run: python bench/bench_import.py [--runs N]   (target: rpl_noqt <= 0.5x upstream)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _util import median, table

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


def measure(runs: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as user_dir:
        for name, (activate, env) in VARIANTS.items():  # warm the file cache once
            sample(activate, env, user_dir)
        for _ in range(runs):
            for name, (activate, env) in VARIANTS.items():
                samples[name].append(sample(activate, env, user_dir))
    return {
        name: {key: median([s[key] for s in values]) for key in ("import", "construct")}
        | {"total": median([s["import"] + s["construct"] for s in values])}
        for name, values in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    result = measure(args.runs)
    upstream = result["upstream + PyQt5 (offscreen)"]["total"]
    rows = []
    for name, r in result.items():
        rows.append((name, f"{r['total'] * 1e3:.0f} ms",
                     f"import {r['import'] * 1e3:.0f} ms + construct {r['construct'] * 1e3:.1f} ms; "
                     f"{r['total'] / upstream:.2f}x upstream"))
    table(f"cold import pyrpl + Pyrpl(...) (median of {args.runs} fresh interpreters)", rows)
    ratio = result["rpl_noqt (no Qt)"]["total"] / upstream
    print(f"  target: rpl_noqt <= 0.5x upstream -> {'MET' if ratio <= 0.5 else 'MISSED'} ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
