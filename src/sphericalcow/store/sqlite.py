"""The SQLite results store: one row per finished sweep point, safe under kill -9 and concurrent writers.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    points(
      id            TEXT PRIMARY KEY,  -- sha256 of the point's identity (study, full validated config, seed)
      study         TEXT NOT NULL,
      seed          INTEGER NOT NULL,
      config        TEXT NOT NULL,     -- the full validated config, canonical JSON
      coords        TEXT NOT NULL,     -- the point's values of the sweep axes (grid and zip keys), JSON
      status        TEXT NOT NULL,     -- 'ok' | 'diverged' | 'failed'
      metrics       TEXT NOT NULL,     -- JSON object name -> number; nan/inf stored as the strings "nan"/"inf"/"-inf"
      message       TEXT,              -- one line: why a point failed or diverged (NULL when ok)
      traceback     TEXT,              -- the full traceback of a failed point
      seconds       REAL,              -- wall time of the study run
      started_utc   TEXT, finished_utc TEXT,
      worker        TEXT,              -- host:pid that ran it
      version       TEXT NOT NULL,     -- sphericalcow version of the worker (not part of the identity)
      sweep         TEXT,              -- name of the sweep that wrote the row
      executor      TEXT,              -- inprocess | process | dask
      written_utc   TEXT NOT NULL
    )

Guarantees:

* WAL journal, ``synchronous=NORMAL``: every row is its own transaction (one ``INSERT``), committed before the sweep
  counts the point as done; a process killed at any moment (SIGKILL included) loses no committed row and leaves no
  partial one. (A power loss may drop the last few commits; a resumed sweep recomputes them.)
* ``id`` is the primary key and rows are written with ``INSERT ... ON CONFLICT(id) DO NOTHING``: two sweeps
  writing the same point at once both succeed, exactly one row lands. Writers wait for each other up to
  ``timeout`` seconds (SQLite's busy timeout) instead of failing with "database is locked".
* Rows are never updated, except a ``failed`` row when a sweep re-runs failed points (``replace_failed=True``).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import SphericalCowError

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "ResultsStore",
    "decode_metrics",
    "encode_metrics",
]

#: Version of the table layout, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1

#: The allowed values of the ``status`` column.
STATUSES = ("ok", "diverged", "failed")

#: Columns of the ``points`` table, in order.
COLUMNS = (
    "id",
    "study",
    "seed",
    "config",
    "coords",
    "status",
    "metrics",
    "message",
    "traceback",
    "seconds",
    "started_utc",
    "finished_utc",
    "worker",
    "version",
    "sweep",
    "executor",
    "written_utc",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
  id           TEXT PRIMARY KEY NOT NULL,
  study        TEXT NOT NULL,
  seed         INTEGER NOT NULL,
  config       TEXT NOT NULL,
  coords       TEXT NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('ok', 'diverged', 'failed')),
  metrics      TEXT NOT NULL,
  message      TEXT,
  traceback    TEXT,
  seconds      REAL,
  started_utc  TEXT,
  finished_utc TEXT,
  worker       TEXT,
  version      TEXT NOT NULL,
  sweep        TEXT,
  executor     TEXT,
  written_utc  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS points_study ON points (study, status);
"""

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_metrics(metrics: Mapping[str, float]) -> str:
    """Metrics as strict JSON; non-finite values become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        f = float(v)
        out[str(k)] = f if math.isfinite(f) else ("nan" if f != f else ("inf" if f > 0 else "-inf"))
    return json.dumps(out, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def decode_metrics(text: str) -> dict[str, float]:
    """Inverse of :func:`encode_metrics`: every value a float (nan/inf restored)."""
    raw = json.loads(text)
    return {k: (_NONFINITE[v] if isinstance(v, str) else float(v)) for k, v in raw.items()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ResultsStore:
    """A results store in one SQLite file (see the module docstring for schema and guarantees).

    ``ResultsStore(path)`` creates the file (and its folder) if missing; ``create=False`` raises
    :class:`SphericalCowError` instead. Use it from one thread (SQLite connections are per thread); open one
    store per process: many processes may share the file. Also a context manager (closes on exit).
    """

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise SphericalCowError(f"store {str(self.path)!r} is a folder; expected a SQLite file")
        if not self.path.exists():
            if not create:
                raise SphericalCowError(f"no results store at {str(self.path)!r}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit mode (isolation_level=None): each INSERT is its own transaction
            self._con = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise SphericalCowError(f"cannot open results store {str(self.path)!r}: {e}") from None
        try:
            self._con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            version = self._con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SphericalCowError(
                    f"store {str(self.path)!r} has schema version {version}, newer than this sphericalcow "
                    f"understands ({SCHEMA_VERSION}); upgrade sphericalcow"
                )
            mode = self._con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SphericalCowError(f"store {str(self.path)!r}: cannot switch to WAL mode (got {mode!r})")
            self._con.execute("PRAGMA synchronous = NORMAL")
            if version < SCHEMA_VERSION:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self._con.execute(stmt)
                    self._con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    self._con.execute("COMMIT")
                except BaseException:
                    if self._con.in_transaction:
                        self._con.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as e:
            self._con.close()
            raise SphericalCowError(f"{str(self.path)!r} is not a usable results store: {e}") from None
        except BaseException:
            self._con.close()
            raise

    # ------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._con.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------------------
    def put(self, row: Mapping[str, Any], *, replace_failed: bool = False) -> bool:
        """Write one finished point in its own transaction. Returns True if this call wrote the row, False if a
        row with that id already existed (another sweep got there first; nothing is changed).

        ``row`` has the :data:`COLUMNS` (``metrics`` a dict, ``config``/``coords`` dicts or JSON text,
        ``written_utc`` optional). With ``replace_failed`` an existing ``failed`` row is replaced; ``ok`` and
        ``diverged`` rows never are.
        """
        status = row["status"]
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {STATUSES}")
        values = {c: row.get(c) for c in COLUMNS}
        for c in ("config", "coords"):
            if not isinstance(values[c], str):
                values[c] = json.dumps(values[c], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if not isinstance(values["metrics"], str):
            values["metrics"] = encode_metrics(values["metrics"] or {})
        values["written_utc"] = values["written_utc"] or _now()
        cols = ", ".join(COLUMNS)
        marks = ", ".join(f":{c}" for c in COLUMNS)
        if replace_failed:
            update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "id")
            conflict = f"ON CONFLICT(id) DO UPDATE SET {update} WHERE points.status = 'failed'"
        else:
            conflict = "ON CONFLICT(id) DO NOTHING"
        cur = self._con.execute(f"INSERT INTO points ({cols}) VALUES ({marks}) {conflict}", values)
        return cur.rowcount == 1

    def has(self, point_id: str) -> bool:
        """Whether a row with this id exists (any status)."""
        return self._con.execute("SELECT 1 FROM points WHERE id = ?", (point_id,)).fetchone() is not None

    def status_of(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """``{id: status}`` of the rows among ``ids`` (all rows if None)."""
        if ids is None:
            return dict(self._con.execute("SELECT id, status FROM points").fetchall())
        out: dict[str, str] = {}
        ids = list(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id, status FROM points WHERE id IN ({', '.join('?' * len(chunk))})"
            out.update(self._con.execute(q, chunk).fetchall())
        return out

    def count(self, *, study: str | None = None, status: str | None = None) -> int:
        """Number of rows, optionally of one study and/or status."""
        q, args = "SELECT COUNT(*) FROM points WHERE 1=1", []
        if study is not None:
            q += " AND study = ?"
            args.append(study)
        if status is not None:
            q += " AND status = ?"
            args.append(status)
        return int(self._con.execute(q, args).fetchone()[0])

    def studies(self) -> list[str]:
        """The studies with rows, sorted."""
        return [r[0] for r in self._con.execute("SELECT DISTINCT study FROM points ORDER BY study")]

    def rows(self, *, study: str | None = None, ids: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Decoded rows in the order they were written: ``config``/``coords`` as dicts, ``metrics`` as
        ``{name: float}``; optionally only one study's and/or only the given ids."""
        where, args = "WHERE 1=1", []
        if study is not None:
            where += " AND study = ?"
            args.append(study)
        cols = ", ".join(COLUMNS)
        if ids is not None:
            idl = list(ids)
            for i in range(0, len(idl), 500):
                chunk = idl[i : i + 500]
                q = f"SELECT {cols} FROM points {where} AND id IN ({', '.join('?' * len(chunk))}) ORDER BY rowid"
                yield from (self._decode(r) for r in self._con.execute(q, [*args, *chunk]).fetchall())
            return
        for r in self._con.execute(f"SELECT {cols} FROM points {where} ORDER BY rowid", args):
            yield self._decode(r)

    @staticmethod
    def _decode(r: tuple) -> dict[str, Any]:
        d = dict(zip(COLUMNS, r, strict=True))
        d["config"] = json.loads(d["config"])
        d["coords"] = json.loads(d["coords"])
        d["metrics"] = decode_metrics(d["metrics"])
        return d
