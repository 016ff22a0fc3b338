"""``sweep()``: validate a spec, skip what the store already has, run the rest on an executor, write each row."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from ..store import ResultsStore
from .executors import make_executor
from .spec import Point, SweepSpec, plan_sweep

__all__ = ["SweepOutcome", "default_store_path", "sweep"]


@dataclass
class SweepOutcome:
    """What one call of :func:`sweep` did.

    ``n_points``: points in the spec; ``n_done_before``: already in the store when the sweep started (skipped);
    ``n_pending``: the rest; ``n_run``: computed by this call; ``n_written``: rows this call wrote; ``n_duplicate``:
    computed here but another sweep wrote the row first (kept theirs); ``n_skipped_late``: found in the store right
    before being submitted (another sweep finished them meanwhile). ``status_counts`` counts the rows written.
    """

    name: str
    study: str
    store: Path
    executor: str
    jobs: int
    n_points: int
    n_done_before: int
    n_pending: int
    n_run: int = 0
    n_written: int = 0
    n_duplicate: int = 0
    n_skipped_late: int = 0
    status_counts: dict[str, int] = field(default_factory=lambda: {"ok": 0, "diverged": 0, "failed": 0})
    failures: list[dict[str, Any]] = field(default_factory=list)  # {id, point, status, message} of written rows
    seconds: float = 0.0
    dry_run: bool = False
    points: list[Point] = field(default_factory=list, repr=False)
    done_status: dict[str, str] = field(default_factory=dict, repr=False)  # id -> status before the sweep
    report: Path | None = None


def default_store_path(spec: SweepSpec, runs_dir: str | Path = "runs") -> Path:
    """``spec.store`` if given, else ``<runs_dir>/<name>.sqlite`` (both relative to the current folder)."""
    return Path(spec.store) if spec.store else Path(runs_dir) / f"{spec.display_name()}.sqlite"


def sweep(
    spec: str | Path | Mapping[str, Any] | SweepSpec,
    *,
    store: str | Path | None = None,
    executor: str = "auto",
    jobs: int | None = None,
    scheduler: str | None = None,
    dask_processes: bool = True,
    progress: bool = True,
    dry_run: bool = False,
    retry_failed: bool = False,
    report: bool | str | Path = False,
    runs_dir: str | Path = "runs",
) -> SweepOutcome:
    """Run a sweep: every point of ``spec`` (a TOML/JSON file, a dict or a :class:`SweepSpec`) not yet in the store.

    The whole spec is validated first (every point through the study's config); nothing runs if any point is bad.
    Points already in ``store`` (default ``spec.store`` or ``runs/<name>.sqlite``) are skipped, whatever their
    status; with ``retry_failed`` the ``failed`` ones run again and replace their rows. Each finished point is
    written at once in its own transaction, so a sweep stopped at any moment resumes where it stopped.

    ``executor``: ``"inprocess"``, ``"process"`` (a local pool of ``jobs`` processes, default one per CPU),
    ``"dask"`` (``scheduler`` address, else a LocalCluster of ``jobs`` workers; ``dask_processes=False`` makes
    its workers threads) or ``"auto"`` (in-process for tiny sweeps, else the pool). ``dry_run``: only plan; the
    outcome lists the points and which are done, nothing is written or created. ``report``: also write a sweep
    report (True: a new folder under ``runs_dir``; a path: that folder), see :func:`sweep_report`.
    """
    plan = plan_sweep(spec)
    store_path = Path(store) if store is not None else default_store_path(plan.spec, runs_dir)
    ids = [p.id for p in plan.points]
    if dry_run:
        done = {}
        if store_path.exists():
            with ResultsStore(store_path, create=False) as st:
                done = st.status_of(ids)
        pending = _pending(plan.points, done, retry_failed)
        return SweepOutcome(
            plan.name,
            plan.spec.study,
            store_path,
            "none",
            0,
            len(plan.points),
            len(plan.points) - len(pending),
            len(pending),
            dry_run=True,
            points=plan.points,
            done_status=done,
        )

    t_start = time.perf_counter()
    with ResultsStore(store_path) as st:
        done = st.status_of(ids)
        pending = _pending(plan.points, done, retry_failed)
        ex = make_executor(
            executor, n_pending=len(pending), jobs=jobs, scheduler=scheduler, dask_processes=dask_processes
        )
        out = SweepOutcome(
            plan.name,
            plan.spec.study,
            store_path,
            ex.name,
            ex.jobs,
            len(plan.points),
            len(plan.points) - len(pending),
            len(pending),
            points=plan.points,
            done_status=done,
        )
        by_id = {p.id: p for p in pending}
        threads = ex.threads()
        with progress_bar(len(pending), f"sweep {plan.name} ({ex.name} x{ex.jobs})", enabled=progress) as advance:

            def tasks() -> Iterator[dict[str, Any]]:
                for p in pending:
                    # another sweep on the same store may have finished it since we looked
                    if not (retry_failed and done.get(p.id) == "failed") and st.has(p.id):
                        out.n_skipped_late += 1
                        advance(1)
                        continue
                    yield p.task(plan.imports, threads)

            def on_result(row: dict[str, Any]) -> None:
                p = by_id[row["id"]]
                full = {
                    **row,
                    "study": p.study,
                    "seed": p.seed,
                    "config": p.config,
                    "coords": p.coords,
                    "sweep": plan.name,
                    "executor": ex.name,
                }
                out.n_run += 1
                if st.put(full, replace_failed=retry_failed):
                    out.n_written += 1
                    out.status_counts[row["status"]] += 1
                    if row["status"] != "ok":
                        out.failures.append(
                            {"id": p.id, "point": p.label(), "status": row["status"], "message": row["message"]}
                        )
                else:
                    out.n_duplicate += 1
                advance(1)

            ex.map(tasks(), on_result)
    out.seconds = time.perf_counter() - t_start
    if report:
        from .report import sweep_report

        target = None if report is True else Path(report)
        paths = sweep_report(plan, store_path, out=target, runs_dir=runs_dir)
        out.report = paths["report.md"].parent
    return out


def _pending(points: list[Point], done: Mapping[str, str], retry_failed: bool) -> list[Point]:
    return [p for p in points if p.id not in done or (retry_failed and done[p.id] == "failed")]
