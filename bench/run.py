"""Run every benchmark; each prints its numbers beside a reference measured in the same run.

Run: python bench/run.py   (about 2 minutes)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
BENCHES = ["bench_signals.py", "bench_import.py", "bench_session.py", "bench_sim.py"]


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
