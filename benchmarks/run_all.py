"""Run every benchmarks/bench_*.py and print its rows: what was timed, against which baseline, the ratio.

Each module defines ``run() -> list[dict]`` with keys name, seconds, baseline, baseline_seconds (same run).
Speed is reported as ratios against a baseline measured in the same process, never asserted in tests.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    rows = []
    for path in sorted(here.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        print(f"# {path.name}", flush=True)
        for row in mod.run():
            ratio = row["baseline_seconds"] / row["seconds"] if row["seconds"] > 0 else float("inf")
            rows.append(row)
            print(
                f"{row['name']:<58} {row['seconds'] * 1e3:10.2f} ms   vs {row['baseline']:<40} "
                f"{row['baseline_seconds'] * 1e3:10.2f} ms   speed-up x{ratio:.1f}",
                flush=True,
            )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
