"""Sweep specs: parse (TOML/JSON/dict), validate every point against its study, expand grid x zip x seeds.

A spec (see ``docs/sweeps.md``)::

    study   = "criticality"          # required: a registered study
    name    = "width-depth"          # optional: names the store file and the report (default: the file's stem)
    store   = "runs/width-depth.sqlite"   # optional, relative to the current folder (default runs/<name>.sqlite)
    seeds   = 4                      # n -> seeds 0..n-1, or an explicit list [0, 7, 11]; default 1
    imports = ["my_studies.py"]      # optional: modules (or .py files, relative to the spec) that register studies

    [base]                           # config keys fixed for every point
    n_seeds = 16
    [grid]                           # cartesian product over these keys (first key varies slowest)
    width = [64, 128]
    depth = [10, 20]
    [zip]                            # lists of equal length walked together (one axis), crossed with the grid
    q0   = [0.5, 1.0]                # ([[zip]] tables give several independent zipped groups)
    rho0 = [0.2, 0.5]
    [report]
    metrics = ["..."]                # optional: metrics drawn in the sweep report (default: up to 8)
    x = "width"                      # optional: the report's x axis (default: the numeric axis with most values)

Identity: a point is ``(study, full validated config including defaults, seed)``; its id is the sha256 of the
canonical JSON of that triple (:func:`point_id`). The package version is *not* part of it (it is stored as a
column): upgrading sphericalcow keeps finished points, unless the new version's config has different keys or
defaults, which changes the full config and so the id. The study's ``seed`` config key, if it has one, is set
from the sweep seed; ``seed`` may not appear in ``[base]``, ``[grid]`` or ``[zip]``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SphericalCowError

__all__ = [
    "MAX_POINTS",
    "Point",
    "ReportSpec",
    "SweepPlan",
    "SweepSpec",
    "canonical_json",
    "load_spec",
    "plan_sweep",
    "point_id",
]

#: A spec expanding to more points than this is rejected (split it).
MAX_POINTS = 1_000_000

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class ReportSpec(BaseModel):
    """The ``[report]`` table: which metrics the sweep report draws, and against which axis."""

    model_config = ConfigDict(extra="forbid", strict=True)
    metrics: list[str] | None = Field(None, min_length=1)
    x: str | None = None


class SweepSpec(BaseModel):
    """A validated sweep spec (the structure only; :func:`plan_sweep` checks it against the study)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    study: str = Field(min_length=1)
    name: str | None = None
    store: str | None = Field(None, min_length=1)
    seeds: int | list[int] = 1
    imports: list[str] = Field(default_factory=list)
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(default_factory=dict)
    report: ReportSpec = Field(default_factory=ReportSpec)
    #: folder that relative ``.py`` imports are resolved against (the spec file's folder; else the current one)
    source_dir: str | None = None

    def seed_list(self) -> list[int]:
        """The sweep's seeds: ``range(seeds)`` for an int, the list itself otherwise."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def zip_groups(self) -> list[dict[str, list[Any]]]:
        """The zipped groups (``[zip]`` is one group, ``[[zip]]`` several); empty groups dropped."""
        groups = [self.zip] if isinstance(self.zip, dict) else list(self.zip)
        return [g for g in groups if g]

    def axes(self) -> list[str]:
        """The sweep axes: grid keys, then zip keys, in spec order."""
        return [*self.grid, *(k for g in self.zip_groups() for k in g)]

    def display_name(self) -> str:
        """``name``, else the study's name."""
        return self.name or self.study


_TOP_KEYS = tuple(k for k in SweepSpec.model_fields if k != "source_dir")


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a study, its full validated config (JSON form) and a seed, with a stable ``id``."""

    index: int
    id: str
    study: str
    seed: int
    coords: dict[str, Any]  # the point's values of the sweep axes
    config: dict[str, Any] = field(repr=False)

    def label(self) -> str:
        """``width=64, depth=10, seed=0``: the coordinates and seed, for messages and listings."""
        return _fmt_coords({**self.coords, "seed": self.seed})

    def task(self, imports: list[str], threads: int | None = None) -> dict[str, Any]:
        """What a worker needs to run this point (plain data: picklable, sent to other processes)."""
        return {
            "id": self.id,
            "study": self.study,
            "seed": self.seed,
            "config": self.config,
            "imports": list(imports),
            "threads": threads,
        }


@dataclass
class SweepPlan:
    """A spec checked against its study: the expanded, validated points in run order."""

    spec: SweepSpec
    name: str
    points: list[Point]
    imports: list[str]  # resolved: module names and absolute .py paths

    @property
    def axes(self) -> list[str]:
        """The sweep axes (grid keys, then zip keys)."""
        return self.spec.axes()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, UTF-8 kept, NaN/inf refused: equal values give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def point_id(study: str, config: Mapping[str, Any], seed: int) -> str:
    """The stable identity of a run: sha256 (hex) of the canonical JSON of ``{"study", "config", "seed"}``,
    ``config`` the full validated config in JSON form (``model_dump(mode="json")``, defaults included)."""
    text = canonical_json({"study": study, "config": dict(config), "seed": int(seed)})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fmt_value(v: Any) -> str:
    if isinstance(v, str):
        return v
    text = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 60 else text[:59] + "…"


def _fmt_coords(coords: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in coords.items()) or "(base config)"


def _pydantic_message(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg} (got {err.get('input')!r})" if loc else msg


def load_spec(source: str | Path | Mapping[str, Any] | SweepSpec) -> SweepSpec:
    """A :class:`SweepSpec` from a TOML (``.toml``) or JSON (``.json``) file, a dict, or a spec (returned as is).

    Structural problems (unknown or missing keys, wrong types, bad names or seeds) raise
    :class:`SphericalCowError` naming the file and the key; nothing is run.
    """
    if isinstance(source, SweepSpec):
        return source
    where = "spec"
    if isinstance(source, str | Path):
        path = Path(source)
        where = f"spec {str(path)!r}"
        if not path.is_file():
            raise SphericalCowError(f"{where}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SphericalCowError(f"{where}: cannot read it: {e}") from None
        try:
            raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
            raise SphericalCowError(f"{where}: invalid {kind}: {e}") from None
        if not isinstance(raw, dict):
            raise SphericalCowError(f"{where}: expected a table of keys at the top level")
        raw = {**raw}
        raw.setdefault("name", path.stem)
        raw["source_dir"] = str(path.resolve().parent)
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise SphericalCowError(f"a sweep spec must be a file path, a dict or a SweepSpec; got {type(source).__name__}")
    unknown = [k for k in raw if k not in _TOP_KEYS and k != "source_dir"]
    if unknown:
        raise SphericalCowError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}")
    if "study" not in raw:
        raise SphericalCowError(f"{where}: 'study' is required (the name of the study to sweep)")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SphericalCowError(f"{where}: {_pydantic_message(e)}") from None
    _check_structure(spec, where)
    return spec


def _check_structure(spec: SweepSpec, where: str) -> None:
    if spec.name is not None and not _NAME_RE.fullmatch(spec.name):
        raise SphericalCowError(
            f"{where}: name={spec.name!r} is not allowed; expected letters, digits, '_', '.' or '-' (it names files)"
        )
    if isinstance(spec.seeds, int):
        if not 1 <= spec.seeds <= MAX_POINTS:
            raise SphericalCowError(f"{where}: seeds={spec.seeds} is not allowed; expected 1 <= seeds <= {MAX_POINTS}")
    else:
        if not spec.seeds:
            raise SphericalCowError(f"{where}: seeds is an empty list; give at least one seed (or a count, seeds = 4)")
        dup = [s for s, n in _counts(spec.seeds).items() if n > 1]
        if dup:
            raise SphericalCowError(f"{where}: seeds lists {dup[0]} twice; each seed once")
    for name, values in spec.grid.items():
        if not values:
            raise SphericalCowError(f"{where}: grid.{name} is an empty list; give at least one value")
        texts = [_value_key(v) for v in values]
        dup = [t for t, n in _counts(texts).items() if n > 1]
        if dup:
            raise SphericalCowError(f"{where}: grid.{name} lists the value {dup[0]} twice; each value once")
    seen_in: dict[str, str] = {k: "base" for k in spec.base}
    for k in spec.grid:
        if k in seen_in:
            raise SphericalCowError(f"{where}: key {k!r} is in both [{seen_in[k]}] and [grid]; give it once")
        seen_in[k] = "grid"
    for i, group in enumerate(spec.zip_groups()):
        lengths = {k: len(v) for k, v in group.items()}
        if any(n == 0 for n in lengths.values()):
            empty = next(k for k, n in lengths.items() if n == 0)
            raise SphericalCowError(f"{where}: zip.{empty} is an empty list; give at least one value")
        if len(set(lengths.values())) > 1:
            desc = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise SphericalCowError(f"{where}: zipped lists must have equal lengths; got {desc}")
        for k in group:
            if k in seen_in:
                raise SphericalCowError(f"{where}: key {k!r} is in both [{seen_in[k]}] and [zip]; give it once")
            seen_in[k] = "zip" if isinstance(spec.zip, dict) else f"zip {i + 1}"
    for k in (spec.report.x,) if spec.report.x else ():
        if k not in spec.axes():
            axes = ", ".join(spec.axes()) or "none"
            raise SphericalCowError(f"{where}: report.x={k!r} is not a sweep axis; axes: {axes}")


def _counts(items: list[Any]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def _value_key(v: Any) -> str:
    try:
        return json.dumps(v, sort_keys=True, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return repr(v)


def _resolve_imports(spec: SweepSpec) -> list[str]:
    out = []
    base = Path(spec.source_dir) if spec.source_dir else Path.cwd()
    for item in spec.imports:
        if item.endswith(".py") or "/" in item or "\\" in item:
            p = Path(item)
            p = (p if p.is_absolute() else base / p).resolve()
            if not p.is_file():
                raise SphericalCowError(f"imports: {item!r} is not a file (looked at {str(p)!r})")
            out.append(str(p))
        else:
            out.append(item)
    return out


def plan_sweep(source: str | Path | Mapping[str, Any] | SweepSpec) -> SweepPlan:
    """Load a spec and check it completely before anything runs: imports, the study, every key against the
    study's config, and every expanded point through the study's config validation (:func:`make_config`).

    Raises :class:`SphericalCowError` naming the first problem (unknown study or key, empty or unequal lists,
    duplicate points, a value the study rejects together with the point that has it).
    """
    from ..studies.base import get_study, make_config
    from .runner import import_modules

    spec = load_spec(source)
    imports = _resolve_imports(spec)
    import_modules(imports)
    study = get_study(spec.study)
    fields = study.config.model_fields
    allowed = ", ".join(sorted(fields))
    has_seed = "seed" in fields
    sections = [("base", spec.base), ("grid", spec.grid)] + [("zip", g) for g in spec.zip_groups()]
    for section, keys in sections:
        for k in keys:
            if k not in fields:
                raise SphericalCowError(
                    f"{section}.{k}: {k!r} is not a config key of study {study.name!r}; allowed: {allowed}"
                )
            if k == "seed" and has_seed:
                raise SphericalCowError(
                    f"{section}.seed: the study's seed is set from the sweep's seeds; use seeds = [...] instead"
                )

    grid_keys = list(spec.grid)
    groups = spec.zip_groups()
    seeds = spec.seed_list()
    n_coords = math.prod(len(v) for v in spec.grid.values()) * math.prod(len(next(iter(g.values()))) for g in groups)
    n_points = n_coords * len(seeds)
    if n_points > MAX_POINTS:
        raise SphericalCowError(f"the spec expands to {n_points} points, more than {MAX_POINTS}; split the sweep")

    points: list[Point] = []
    seen: dict[str, Point] = {}
    round_trip_checked = False
    grid_product = itertools.product(*spec.grid.values())
    for grid_values in grid_product:
        for zip_idx in itertools.product(*(range(len(next(iter(g.values())))) for g in groups)):
            coords = dict(zip(grid_keys, grid_values, strict=True))
            for g, j in zip(groups, zip_idx, strict=True):
                coords.update({k: v[j] for k, v in g.items()})
            for seed in seeds:
                overrides = {**spec.base, **coords}
                if has_seed:
                    overrides["seed"] = seed
                try:
                    config = make_config(study, overrides)
                except SphericalCowError as e:
                    raise SphericalCowError(f"point {_fmt_coords({**coords, 'seed': seed})}: {e}") from None
                cfg = config.model_dump(mode="json")
                if not round_trip_checked:
                    _check_round_trip(study, config, cfg)
                    round_trip_checked = True
                pid = point_id(study.name, cfg, seed)
                p = Point(len(points), pid, study.name, seed, coords, cfg)
                if pid in seen:
                    raise SphericalCowError(
                        f"points {seen[pid].label()} and {p.label()} have the same full config; remove one "
                        "(a value equal to the default, or a repeated zip entry?)"
                    )
                seen[pid] = p
                points.append(p)
    return SweepPlan(spec, spec.display_name(), points, imports)


def _check_round_trip(study: Any, config: Any, cfg: dict[str, Any]) -> None:
    """Workers rebuild the config from its JSON form; it must come back identical."""
    try:
        again = study.config.model_validate_json(canonical_json(cfg)).model_dump(mode="json")
    except (ValidationError, ValueError) as e:
        raise SphericalCowError(
            f"study {study.name!r}: its config does not survive a JSON round trip, so it cannot be swept: {e}"
        ) from None
    if again != cfg:
        raise SphericalCowError(f"study {study.name!r}: its config changes in a JSON round trip; it cannot be swept")
