"""The ``cow sweep`` and ``cow results`` commands; :func:`register` adds them to the ``cow`` typer app.

Bad input raises :class:`~sphericalcow.errors.SphericalCowError` (``cli.main`` prints it as one line, exit 2).
Until ``cli.py`` registers them, ``python -m sphericalcow.sweep sweep SPEC.toml`` runs the same commands.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from .errors import SphericalCowError

__all__ = ["FORMATS", "register"]

#: Output formats of ``cow results``.
FORMATS = ("table", "csv", "json", "parquet")

_out = Console()


def _short(v: Any, width: int = 40) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != v:
            return "—"
        return f"{v:.6g}"
    s = str(v)
    return s if len(s) <= width else s[: width - 1] + "…"


def sweep_cmd(
    spec: Annotated[Path, typer.Argument(help="sweep spec (.toml or .json): study, grid, zip, seeds")],
    store: Annotated[
        Path | None, typer.Option(help="results store (SQLite file); default: the spec's store or runs/<name>.sqlite")
    ] = None,
    executor: Annotated[
        str, typer.Option(help="auto | inprocess | process | dask (auto: in-process for tiny sweeps, else process)")
    ] = "auto",
    jobs: Annotated[int | None, typer.Option(help="workers (default: one per CPU)")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address tcp://HOST:PORT (default: a LocalCluster)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar with ETA")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the points (and which are done); run nothing")
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="run points recorded as failed again (replacing their rows)")
    ] = False,
    report: Annotated[bool, typer.Option(help="write a sweep report (figures over the axes, CIs over seeds)")] = True,
    out: Annotated[Path | None, typer.Option(help="report folder (default runs/<UTC timestamp>-sweep-<name>/)")] = None,
) -> None:
    """Run a sweep: every point of SPEC not yet in the store; resumable, safe to run twice at once."""
    from .sweep import sweep

    outcome = sweep(
        spec,
        store=store,
        executor=executor,
        jobs=jobs,
        scheduler=scheduler,
        progress=progress,
        dry_run=dry_run,
        retry_failed=retry_failed,
        report=(out if out is not None else True) if report and not dry_run else False,
    )
    if dry_run:
        _print_dry_run(outcome)
        return
    c = outcome.status_counts
    _out.print(
        f"sweep [bold]{outcome.name}[/bold] ({outcome.study}): {outcome.n_points} points, "
        f"{outcome.n_done_before} already in the store, {outcome.n_run} run on {outcome.executor} "
        f"x{outcome.jobs} in {outcome.seconds:.1f} s: ok {c['ok']}, diverged {c['diverged']}, failed {c['failed']}"
        + (f"; {outcome.n_skipped_late} finished by another sweep meanwhile" if outcome.n_skipped_late else "")
        + (f"; {outcome.n_duplicate} also written by another sweep (kept theirs)" if outcome.n_duplicate else ""),
        highlight=False,
    )
    for f in outcome.failures[:10]:
        _out.print(f"  {f['status']:<8} {f['point']}: {f['message']}", markup=False, highlight=False)
    if len(outcome.failures) > 10:
        _out.print(f"  ... and {len(outcome.failures) - 10} more (cow results {outcome.store} --where status=failed)")
    _out.print(f"store: {outcome.store}", markup=False, highlight=False)
    if outcome.report is not None:
        _out.print(f"report: {outcome.report / 'report.html'}", markup=False, highlight=False)


def _print_dry_run(outcome: Any) -> None:
    axes: list[str] = []
    for p in outcome.points:
        for a in p.coords:
            if a not in axes:
                axes.append(a)
    t = RichTable(title=f"sweep {outcome.name}: {outcome.n_points} points, {outcome.n_pending} to run")
    for col in ("#", "id", *axes, "seed", "status"):
        t.add_column(col, overflow="fold")
    for p in outcome.points:
        status = outcome.done_status.get(p.id, "to run")
        t.add_row(str(p.index), p.id[:12], *(_short(p.coords.get(a)) for a in axes), str(p.seed), status)
    _out.print(t)
    _out.print(f"store: {outcome.store} (dry run: nothing was run or written)", markup=False, highlight=False)


def _parquet_safe(df: Any) -> Any:
    """Object columns with mixed value types become text (Parquet columns have one type)."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {type(v) for v in df[c] if v is not None}
            if len(kinds) > 1:
                df[c] = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in df[c]]
    return df


def results_cmd(
    store: Annotated[Path, typer.Argument(help="results store (SQLite file written by cow sweep)")],
    study: Annotated[str | None, typer.Option(help="only this study's rows")] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="only rows with column=value, e.g. --where width=64 (repeatable)")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="table | csv | json | parquet")] = "table",
    out: Annotated[Path | None, typer.Option(help="write to this file (required for parquet)")] = None,
    columns: Annotated[str | None, typer.Option(help="comma-separated columns to show (default: all)")] = None,
) -> None:
    """Show or export the rows of a results store (config keys and metrics as columns)."""
    from .report.jsonio import atomic_write_bytes, atomic_write_text, to_jsonable
    from .results import load_results

    if format_ not in FORMATS:
        raise SphericalCowError(f"--format={format_!r} is not allowed; expected one of {', '.join(FORMATS)}")
    if format_ == "parquet" and out is None:
        raise SphericalCowError("--format parquet writes a binary file; give --out FILE.parquet")
    if format_ == "table" and out is not None:
        raise SphericalCowError("--out is for --format csv, json or parquet; a table prints to the terminal")
    if out is not None and out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a folder; expected a file name")
    if out is not None and not out.parent.exists():
        raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} does not exist")
    df = load_results(store, study=study, where=where)
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        bad = [c for c in wanted if c not in df.columns]
        if bad:
            known = ", ".join(c for c in df.columns if c != "traceback")
            raise SphericalCowError(f"--columns: {bad[0]!r} is not a column; columns: {known}")
        df = df[wanted]
    if format_ == "csv":
        text = df.to_csv(index=False)
        if out is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(out, text)
    elif format_ == "json":
        records = to_jsonable(df.astype(object).where(df.notna(), None).to_dict(orient="records"))
        text = json.dumps(records, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        if out is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(out, text)
    elif format_ == "parquet":
        buf = io.BytesIO()
        try:
            _parquet_safe(df).to_parquet(buf, index=False)
        except ImportError:
            raise SphericalCowError("--format parquet needs pyarrow; install it with pip install pyarrow") from None
        assert out is not None
        atomic_write_bytes(out, buf.getvalue())
    else:
        _print_table(df, explicit=bool(columns))
    if out is not None:
        Console(stderr=True).print(f"wrote {len(df)} rows to {out}", markup=False, highlight=False)


def _print_table(df: Any, *, explicit: bool) -> None:
    from .results import META_COLUMNS

    if explicit:
        cols = list(df.columns)
    else:
        cols = ["id", "seed", "status"]
        if df["study"].nunique() > 1:
            cols.insert(1, "study")
        config_cols = df.attrs.get("config_columns")
        rest = [c for c in df.columns if c not in META_COLUMNS and c != "traceback"]
        if config_cols is not None:  # config keys only where they vary; every metric
            rest = [c for c in rest if c not in config_cols or df[c].astype(str).nunique() > 1]
        cols += [*rest, "seconds"]
        if df["message"].notna().any():
            cols.append("message")
    t = RichTable(title=f"{len(df)} rows")
    for c in cols:
        t.add_column(c, overflow="fold", justify="right" if df[c].dtype.kind in "fi" else "left")
    for _, row in df.iterrows():
        t.add_row(*(_short(row[c][:12] if c == "id" else row[c], 60 if c == "message" else 40) for c in cols))
    _out.print(t)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` and ``results`` to ``app`` (idempotent)."""
    names = {c.name for c in app.registered_commands}
    if "sweep" not in names:
        app.command("sweep")(sweep_cmd)
    if "results" not in names:
        app.command("results")(results_cmd)
