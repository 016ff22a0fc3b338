"""The in-memory result of a study: what a study returns and what :func:`write_run` turns into a run folder.

A :class:`Result` holds everything a report needs: prose (title, markdown summary), the validated config,
tables, matplotlib figures, pass/fail verdicts on the theory's claims, raw numbers and run metadata. It is
deliberately dumb: no rendering or I/O happens here (see :mod:`sphericalcow.report.render`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sphericalcow.report.jsonio import to_jsonable

__all__ = ["FIGURE_NAME_RE", "FigureSpec", "Result", "Table", "Verdict"]

#: Allowed figure names: they become ``<name>.png`` inside the run folder, so no dots, slashes or spaces.
FIGURE_NAME_RE = re.compile(r"[a-z0-9_-]+")


def _check_str(owner: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a str, got {type(value).__name__}")
    return value


@dataclass
class Verdict:
    """One checked claim of a study.

    ``passed`` is ``True`` (the measurement agrees with the theory within the stated tolerance), ``False``
    (it does not) or ``None`` (informational: a number worth reporting that is not a pass/fail test).
    ``numpy.bool_`` is accepted and stored as a plain ``bool``.
    """

    claim: str
    passed: bool | None
    detail: str = ""

    def __post_init__(self) -> None:
        _check_str("Verdict", "claim", self.claim)
        _check_str("Verdict", "detail", self.detail)
        if self.passed is not None:
            if not isinstance(self.passed, bool | np.bool_):
                raise TypeError(
                    f"Verdict.passed must be True, False or None, got {self.passed!r} ({type(self.passed).__name__})"
                )
            self.passed = bool(self.passed)

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"info"``."""
        return "info" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"claim", "passed", "status", "detail"}``."""
        return {"claim": self.claim, "passed": self.passed, "status": self.status, "detail": self.detail}


@dataclass
class Table:
    """A named table of rows; ``columns`` fixes the column order shown in reports.

    Each row is a dict keyed by column name. A missing key is an empty cell (shown as "—"); a key that is not
    one of ``columns`` raises :class:`ValueError` at construction, so data is never silently dropped.
    Cell values may be Python or numpy numbers, 0-d tensors, strings, ``None`` or nan/inf.
    """

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        _check_str("Table", "name", self.name)
        _check_str("Table", "caption", self.caption)
        self.columns = list(self.columns)
        self.rows = list(self.rows)
        for c in self.columns:
            if not isinstance(c, str):
                raise TypeError(f"Table {self.name!r}: column names must be str, got {c!r}")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"Table {self.name!r}: duplicate column names in {self.columns!r}")
        known = set(self.columns)
        for i, row in enumerate(self.rows):
            if not isinstance(row, dict):
                raise TypeError(f"Table {self.name!r}: row {i} must be a dict, got {type(row).__name__}")
            extra = [k for k in row if k not in known]
            if extra:
                raise ValueError(
                    f"Table {self.name!r}: row {i} has keys {extra!r} that are not columns {self.columns!r}"
                )

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as JSON-able dicts, keys in column order, missing cells ``None``, nan/inf as ``None``."""
        return [{c: to_jsonable(row.get(c)) for c in self.columns} for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"name", "caption", "columns", "records"}``."""
        return {
            "name": self.name,
            "caption": self.caption,
            "columns": list(self.columns),
            "records": self.to_records(),
        }


def check_figure_name(name: object) -> str:
    """Return ``name`` if it is a valid figure name (``[a-z0-9_-]+``), else raise :class:`ValueError`."""
    if not isinstance(name, str) or not FIGURE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"figure name {name!r} is not allowed; expected lowercase letters, digits, '_' or '-' "
            "(it becomes the PNG file stem)"
        )
    return name


@dataclass
class FigureSpec:
    """A matplotlib figure to save as ``<name>.png``; ``name`` must match ``[a-z0-9_-]+``."""

    name: str
    figure: Figure
    caption: str = ""

    def __post_init__(self) -> None:
        check_figure_name(self.name)
        _check_str("FigureSpec", "caption", self.caption)
        if not isinstance(self.figure, Figure):
            raise TypeError(
                f"FigureSpec {self.name!r}: figure must be a matplotlib.figure.Figure, got {type(self.figure).__name__}"
            )


@dataclass
class Result:
    """Everything one study run produced.

    Attributes:
        study: the study's identifier (used in the run-folder name).
        title: human-readable title (report heading).
        summary: a paragraph or two of markdown.
        config: the validated config, JSON-able (a pydantic model is also accepted by the JSON writer).
        tables, figures, verdicts: report content, in display order.
        data: raw numbers; may hold numpy arrays, torch tensors, nan/inf (see :func:`to_jsonable`).
        meta: package version, seeds, started/finished UTC ISO times, timings, ...
    """

    study: str
    title: str
    summary: str
    config: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("study", "title", "summary"):
            _check_str("Result", name, getattr(self, name))
        if not self.study:
            raise ValueError("Result.study must be a non-empty string")

    @property
    def passed(self) -> bool | None:
        """``True`` if every pass/fail verdict passed, ``False`` if any failed, ``None`` if there are none."""
        decided = [v.passed for v in self.verdicts if v.passed is not None]
        return all(decided) if decided else None

    def verdict_counts(self) -> dict[str, int]:
        """Counts of verdicts by status: ``{"pass": n, "fail": n, "info": n}``."""
        counts = {"pass": 0, "fail": 0, "info": 0}
        for v in self.verdicts:
            counts[v.status] += 1
        return counts
