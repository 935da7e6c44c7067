"""Run every benchmark; each prints its numbers beside a reference measured in the same run.

Compared variants are interleaved in rounds and every ratio is the median of
the per-round ratios with its spread (IQR, range); goals print MET or MISSED.
Loopback only. Run: python bench/run.py   (about 3 minutes on an idle machine)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ["bench_signals.py", "bench_memory.py", "bench_import.py", "bench_session.py", "bench_sim.py",
           "bench_curves.py", "bench_remote.py"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n##### {name}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / name)], cwd=HERE)
        if proc.returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
