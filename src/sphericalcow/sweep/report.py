"""The sweep report: a run folder (``write_run``) with each metric against a sweep axis, mean and CI over seeds."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store import ResultsStore
from .spec import SweepPlan, SweepSpec, plan_sweep

__all__ = ["DEFAULT_MAX_METRICS", "sweep_report"]

#: Without ``[report] metrics`` the report draws the first this-many metrics that every ok point has.
DEFAULT_MAX_METRICS = 8
_MAX_SERIES = 10


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    text = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 40 else text[:39] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_")
    return s[:60] or "metric"


def _pick_x(plan: SweepPlan) -> tuple[str | None, bool]:
    """(x axis, numeric?): ``[report] x`` or the numeric axis with the most distinct values, else the first."""
    axes = plan.axes
    values = {a: [p.coords[a] for p in plan.points] for a in axes}
    numeric = {a: all(_is_num(v) for v in vs) for a, vs in values.items()}
    if plan.spec.report.x:
        return plan.spec.report.x, numeric[plan.spec.report.x]
    num = [a for a in axes if numeric[a]]
    if num:
        return max(num, key=lambda a: len({json.dumps(v) for v in values[a]})), True
    return (axes[0], False) if axes else (None, False)


def _stats(values: list[float], level: float) -> dict[str, float]:
    from ..measure.stats import mean_ci

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"n": 0, "mean": math.nan, "lo": math.nan, "hi": math.nan}
    if len(finite) == 1:
        return {"n": 1, "mean": finite[0], "lo": math.nan, "hi": math.nan}
    est = mean_ci(finite, level=level)
    return {"n": len(finite), "mean": float(est.mean), "lo": float(est.lo), "hi": float(est.hi)}


def sweep_report(
    spec: SweepPlan | SweepSpec | str | Path | Mapping[str, Any],
    store: str | Path,
    *,
    out: str | Path | None = None,
    runs_dir: str | Path = "runs",
    metrics: list[str] | None = None,
    level: float = 0.95,
) -> dict[str, Path]:
    """Write the report of a sweep from the rows the store has for its points (finished or not).

    Figures: one per metric (``metrics``, else ``[report] metrics``, else the first :data:`DEFAULT_MAX_METRICS`
    metrics that every ok point has and that vary over the sweep), mean over seeds with ``level`` Student-t CIs
    (:func:`~sphericalcow.measure.stats.mean_ci`; a single seed: the point alone) against the x axis, one line per
    combination of the other axes. Tables: status counts per grid point, the metrics' means and CIs, and the points
    that failed or diverged. Requested metrics that no row has are named in the summary. Returns ``write_run``'s
    ``{file name: path}``; the folder is ``out`` (new or empty of runs) or a new
    ``<runs_dir>/<UTC timestamp>-sweep-<name>/``.
    """
    from ..report import FigureSpec, Result, Table, Verdict, new_run_dir, write_run
    from ..studies.base import check_out_dir

    plan = spec if isinstance(spec, SweepPlan) else plan_sweep(spec)
    if out is not None:
        check_out_dir(Path(out))
    with ResultsStore(store, create=False) as st:
        rows = {r["id"]: r for r in st.rows(ids=[p.id for p in plan.points])}
    axes = plan.axes
    groups: dict[str, dict[str, Any]] = {}
    for p in plan.points:
        key = json.dumps([p.coords[a] for a in axes], sort_keys=True)
        g = groups.setdefault(key, {"coords": dict(p.coords), "rows": [], "missing": 0})
        if p.id in rows:
            g["rows"].append((p, rows[p.id]))
        else:
            g["missing"] += 1
    ok_rows = [r for r in rows.values() if r["status"] == "ok"]
    available: list[str] = []
    if ok_rows:
        common = set(ok_rows[0]["metrics"]).intersection(*(r["metrics"] for r in ok_rows[1:]))
        available = [m for m in ok_rows[0]["metrics"] if m in common]
        # metrics that change over the sweep first; constants (config echoes, theory inputs) only if nothing varies
        varying = [m for m in available if len({r["metrics"][m] for r in ok_rows}) > 1]
        available = varying or available
    wanted = metrics or plan.spec.report.metrics
    not_found: list[str] = []
    if wanted:
        seen_any = {m for r in rows.values() for m in r["metrics"]}
        not_found = [m for m in wanted if m not in seen_any]
        shown_metrics = [m for m in wanted if m in seen_any]
    else:
        shown_metrics = available[:DEFAULT_MAX_METRICS]

    stats: list[dict[str, Any]] = []
    for g in groups.values():
        ok = [r for _, r in g["rows"] if r["status"] == "ok"]
        g["stats"] = {m: _stats([r["metrics"].get(m, math.nan) for r in ok], level) for m in shown_metrics}
        for m, s in g["stats"].items():
            stats.append({**{a: _fmt(g["coords"][a]) for a in axes}, "metric": m, **s})

    x, x_numeric = _pick_x(plan)
    figures = [
        FigureSpec(name, fig, caption)
        for name, fig, caption in _figures(plan, groups, shown_metrics, x, x_numeric, level)
    ]

    counts = {"ok": 0, "diverged": 0, "failed": 0}
    for r in rows.values():
        counts[r["status"]] += 1
    missing = len(plan.points) - len(rows)
    point_rows = []
    for g in groups.values():
        c = {"ok": 0, "diverged": 0, "failed": 0}
        for _, r in g["rows"]:
            c[r["status"]] += 1
        point_rows.append({**{a: _fmt(g["coords"][a]) for a in axes}, **c, "not run": g["missing"]})
    problems = [
        {"point": p.label(), "status": r["status"], "message": r["message"] or ""}
        for g in groups.values()
        for p, r in g["rows"]
        if r["status"] != "ok"
    ]
    tables = [
        Table(
            "points", [*axes, "ok", "diverged", "failed", "not run"], point_rows, "Points per grid point, by status."
        ),
        Table(
            "metrics",
            [*axes, "metric", "n", "mean", "lo", "hi"],
            stats,
            f"Mean over the ok seeds and its {level:.0%} Student-t confidence interval [lo, hi] (none for one seed).",
        ),
    ]
    if problems:
        tables.append(Table("problems", ["point", "status", "message"], problems[:200], "Failed or diverged points."))
    n_seeds = len(plan.spec.seed_list())
    axes_text = ", ".join(
        f"`{a}` ({_plural(len({json.dumps(p.coords[a]) for p in plan.points}), 'value')})" for a in axes
    )
    summary = (
        f"Sweep **{plan.name}** of study `{plan.spec.study}`: {len(plan.points)} points = {len(groups)} grid points "
        f"x {_plural(n_seeds, 'seed')}"
        + (f" over {axes_text}" if axes else "")
        + f". Store `{store}`: {counts['ok']} ok, "
        f"{counts['diverged']} diverged, {counts['failed']} failed, {missing} not run yet. Each figure shows one "
        f"metric against `{x or '—'}`: the mean over seeds with {level:.0%} Student-t confidence intervals, one line "
        "per combination of the other axes."
    )
    if not_found:
        names = ", ".join(f"`{m}`" for m in not_found)
        some = ", ".join(f"`{m}`" for m in available[:12]) + (" …" if len(available) > 12 else "")
        summary += f" Not drawn, as no row has them: {names} (metrics every ok row has: {some or 'none'})."
    if len(available) > len(shown_metrics) and not wanted:
        summary += (
            f" Drawn: the first {len(shown_metrics)} of {len(available)} metrics; choose others with "
            "`[report] metrics = [...]` in the spec."
        )
    verdict = Verdict(
        "every point of the sweep finished ok",
        passed=counts["ok"] == len(plan.points),
        detail=f"{counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed, {missing} not run",
    )
    from .. import __version__

    result = Result(
        study=f"sweep-{plan.name}",
        title=f"Sweep {plan.name}: {plan.spec.study} over {', '.join(axes) or 'seeds'}",
        summary=summary,
        config=plan.spec.model_dump(mode="json", exclude={"source_dir"}),
        tables=tables,
        figures=figures,
        verdicts=[verdict],
        data={
            "groups": [
                {
                    "coords": g["coords"],
                    "missing": g["missing"],
                    "stats": g["stats"],
                    "ids": [p.id for p, _ in g["rows"]],
                }
                for g in groups.values()
            ]
        },
        meta={"store": str(store), "version": __version__, "n_points": len(plan.points), "level": level},
    )
    out_dir = Path(out) if out is not None else new_run_dir(runs_dir, f"sweep-{plan.name}")
    return write_run(result, out_dir)


def _figures(
    plan: SweepPlan,
    groups: dict[str, dict[str, Any]],
    metrics: list[str],
    x: str | None,
    x_numeric: bool,
    level: float,
) -> list[tuple[str, Any, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    others = [a for a in plan.axes if a != x]
    series: dict[str, list[dict[str, Any]]] = {}
    for g in groups.values():
        label = ", ".join(f"{a}={_fmt(g['coords'][a])}" for a in others) or plan.spec.study
        series.setdefault(label, []).append(g)
    x_values: list[Any] = []
    if x is not None:
        for g in groups.values():
            if g["coords"][x] not in x_values:
                x_values.append(g["coords"][x])

    def xpos(g: dict[str, Any]) -> float:
        if x is None:
            return 0.0
        v = g["coords"][x]
        return float(v) if x_numeric else float(x_values.index(v))

    out = []
    used: set[str] = set()
    shown_series = list(series.items())[:_MAX_SERIES]
    for m in metrics:
        fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
        for j, (label, gs) in enumerate(shown_series):
            pts = sorted(((xpos(g), g["stats"][m]) for g in gs), key=lambda t: t[0])
            xs = [p for p, _ in pts]
            means = [s["mean"] for _, s in pts]
            lo = [s["mean"] - s["lo"] if math.isfinite(s["lo"]) else 0.0 for _, s in pts]
            hi = [s["hi"] - s["mean"] if math.isfinite(s["hi"]) else 0.0 for _, s in pts]
            ax.errorbar(xs, means, yerr=[lo, hi], fmt="o-", ms=4, capsize=3, color=f"C{j % 10}", label=label)
        if x is not None and not x_numeric:
            ax.set_xticks(range(len(x_values)), [_fmt(v) for v in x_values], rotation=20)
        if x_numeric and x_values and all(v > 0 for v in x_values) and max(x_values) / min(x_values) >= 16:
            ax.set_xscale("log")
        ax.set_xlabel(x or "")
        ax.set_ylabel(m)
        ax.set_title(m, fontsize=9)
        if len(shown_series) > 1 or others:
            ax.legend(fontsize=7)
        name = "metric-" + _slug(m)
        k = 2
        while name in used:
            name, k = f"metric-{_slug(m)}-{k}", k + 1
        used.add(name)
        caption = f"{m} against {x or 'the single grid point'}: mean over seeds with {level:.0%} CIs"
        if len(series) > _MAX_SERIES:
            caption += f" (first {_MAX_SERIES} of {len(series)} lines)"
        out.append((name, fig, caption + "."))
    return out
