"""Sweep results as a table: :func:`load_results` reads a results store into a pandas DataFrame.

Columns, in order: ``id, study, sweep, seed, status, message, seconds, started_utc, finished_utc, version, worker,
executor``; then the config keys (nested mappings flattened with ``.``, e.g. ``optimizer.lr``; list values such as
criticality's ``cases`` as canonical JSON text; the study's ``seed`` key is the ``seed`` column; a key named like a
column above is called ``config.<key>``); then the metrics (float64, NaN where a row lacks one; a metric
whose name equals an earlier column is called ``metric.<name>``); last ``traceback``. Rows are in the order they
were written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SphericalCowError
from .store import ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["META_COLUMNS", "load_results", "parse_where", "rows_to_frame"]

#: The leading columns of :func:`load_results`.
META_COLUMNS = (
    "id",
    "study",
    "sweep",
    "seed",
    "status",
    "message",
    "seconds",
    "started_utc",
    "finished_utc",
    "version",
    "worker",
    "executor",
)


def _flatten(d: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            _flatten(v, name + ".", out)
        elif isinstance(v, list | dict):
            out[name] = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        else:
            out[name] = v


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Decoded store rows (:meth:`ResultsStore.rows`) -> the DataFrame described in the module docstring."""
    import pandas as pd

    config_cols: list[str] = []
    metric_names: list[str] = []
    seen_c: set[str] = set()
    seen_m: set[str] = set()
    records = []
    for r in rows:
        cfg: dict[str, Any] = {}
        _flatten(r["config"], "", cfg)
        for k in cfg:
            if k not in seen_c:
                seen_c.add(k)
                config_cols.append(k)
        for k in r["metrics"]:
            if k not in seen_m:
                seen_m.add(k)
                metric_names.append(k)
        records.append((r, cfg))
    # the study's seed key is the row's seed: one column; any other clash with a meta column gets a prefix
    if "seed" in seen_c:
        config_cols.remove("seed")
    config_names = {k: (f"config.{k}" if k in META_COLUMNS or k == "traceback" else k) for k in config_cols}
    taken = set(META_COLUMNS) | set(config_names.values()) | {"traceback"}
    metric_cols = {m: (f"metric.{m}" if m in taken else m) for m in metric_names}
    columns: dict[str, list[Any]] = {c: [] for c in (*META_COLUMNS, *config_names.values())}
    for c in metric_cols.values():
        columns[c] = []
    columns["traceback"] = []
    for r, cfg in records:
        for c in META_COLUMNS:
            columns[c].append(r[c])
        for k, c in config_names.items():
            columns[c].append(cfg.get(k))
        for m, c in metric_cols.items():
            columns[c].append(r["metrics"].get(m, float("nan")))
        columns["traceback"].append(r["traceback"])
    df = pd.DataFrame(columns)
    for c in metric_cols.values():
        df[c] = df[c].astype("float64")
    if len(df):
        df["seed"] = df["seed"].astype("int64")
    df["seconds"] = df["seconds"].astype("float64")
    df.attrs["config_columns"] = list(config_names.values())
    df.attrs["metric_columns"] = list(metric_cols.values())
    return df


def parse_where(items: list[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """``["width=64", "status=ok"]`` (values JSON where they parse as JSON, else strings) or a mapping -> dict."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise SphericalCowError(f"--where {item!r} is malformed; expected key=value, e.g. --where width=64")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _matches(series: pd.Series, value: Any) -> pd.Series:
    import pandas as pd

    if isinstance(value, list | dict):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if value is None:
        return series.isna()
    if isinstance(value, bool):
        return series.map(lambda v: v is value or (isinstance(v, bool | int | float) and v == value))
    if isinstance(value, int | float):
        num = pd.to_numeric(series, errors="coerce")
        return num == value
    return series.astype(str) == str(value)


def load_results(
    store: str | Path | ResultsStore,
    study: str | None = None,
    where: Mapping[str, Any] | list[str] | None = None,
) -> pd.DataFrame:
    """The rows of a results store as a DataFrame (columns: see the module docstring), optionally only one
    ``study``'s and only rows whose columns equal every ``where`` value (``{"width": 64, "status": "ok"}`` or
    ``["width=64", "status=ok"]``; a list/dict value matches a JSON column such as ``cases``).

    Raises :class:`SphericalCowError` for a missing store or a ``where`` key that is no column.
    """
    conditions = parse_where(where)
    if isinstance(store, ResultsStore):
        rows = list(store.rows(study=study))
    else:
        with ResultsStore(store, create=False) as st:
            rows = list(st.rows(study=study))
    df = rows_to_frame(rows)
    for key, value in conditions.items():
        if key not in df.columns:
            cols = [c for c in df.columns if c != "traceback"]
            shown = ", ".join(cols[:40]) + (" …" if len(cols) > 40 else "")
            raise SphericalCowError(f"where key {key!r} is not a column of the results; columns: {shown}")
        df = df[_matches(df[key], value).fillna(False).astype(bool)]
    return df.reset_index(drop=True)
