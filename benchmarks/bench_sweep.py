"""Sweep speed: 200 small criticality points through the local process pool vs a serial loop, and the results
store's cost per point (one SQLite transaction per row) vs keeping rows in a list and vs the smallest point.

The pool's speed-up over the loop is at most the number of free cores; on a machine shared with other work it is
less, so the occupancy row says how much of the pool's wall time its workers spent inside study runs (1 = no
overhead: the pool start-up, pickling, and the sweep writing rows are all that is not run time)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sphericalcow.store import ResultsStore
from sphericalcow.sweep import plan_sweep, sweep
from sphericalcow.sweep.executors import cpu_count
from sphericalcow.sweep.runner import run_point

# 200 points: 4 widths x 5 depths x 10 seeds of a small ReLU network (0.1-0.3 s each on one core)
SPEC = {
    "study": "criticality",
    "name": "bench",
    "seeds": 10,
    "base": {
        "n_seeds": 4,
        "d_in": 8,
        "phase_grid": 5,
        "cases": [{"label": "relu", "activation": "relu", "cw": 1.8, "cb": 0.1}],
    },
    "grid": {"width": [8, 16, 32, 64], "depth": [2, 3, 4, 5, 6]},
}


def run() -> list[dict]:
    plan = plan_sweep(SPEC)
    tasks = [p.task(plan.imports) for p in plan.points]
    t0 = time.perf_counter()
    rows = [run_point(t) for t in tasks]  # serial: the bare runs, no store
    serial = time.perf_counter() - t0
    smallest = min(r["seconds"] for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = sweep(SPEC, store=Path(tmp) / "pool.sqlite", executor="process", progress=False)
        pool = time.perf_counter() - t0
        assert out.n_written == len(tasks) and out.status_counts["ok"] == len(tasks)
        with ResultsStore(Path(tmp) / "pool.sqlite") as st:
            busy = sum(r["seconds"] for r in st.rows()) / out.jobs  # time each worker spent inside study runs

        full = [
            {**r, "study": p.study, "seed": p.seed, "config": p.config, "coords": p.coords, "sweep": "bench"}
            for p, r in zip(plan.points, rows, strict=True)
        ]
        with ResultsStore(Path(tmp) / "overhead.sqlite") as st:
            t0 = time.perf_counter()
            for row in full:
                st.put(row)
            store_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept = []
        for row in full:
            kept.append(dict(row))
        memory_s = time.perf_counter() - t0
    n = len(tasks)
    return [
        {
            "name": f"sweep of {n} points, process pool x{out.jobs} ({cpu_count()} CPUs)",
            "seconds": pool,
            "baseline": f"serial loop of the same {n} runs",
            "baseline_seconds": serial,
        },
        {
            "name": "pool occupancy: the pool sweep's wall time",
            "seconds": pool,
            "baseline": "time per worker in study runs (ratio = occupancy)",
            "baseline_seconds": busy,
        },
        {
            "name": f"store: write {n} rows, one transaction each",
            "seconds": store_s,
            "baseline": "append the rows to an in-memory list",
            "baseline_seconds": memory_s,
        },
        {
            "name": "store: one row write (per point)",
            "seconds": store_s / n,
            "baseline": "the smallest study point of the sweep",
            "baseline_seconds": smallest,
        },
    ]
