"""Studies: a validated config, ``run(config) -> Result``, and a registry the CLI reads.

A study pairs one prediction (theory/) with one measurement (measure/) and reads like the claim it tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import SphericalCowError
from ..report import Result, new_run_dir, write_run


class StudyConfig(BaseModel):
    """Base for study configs: unknown keys are errors, values are validated on assignment too, and types are strict
    (``--set depth=true`` or ``depth=2.5`` is an error, not depth=1 or 2)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


@dataclass(frozen=True)
class Study:
    name: str
    summary: str
    config: type[StudyConfig]
    run: Callable[..., Result]  # run(config, *, progress: bool) -> Result


STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    STUDIES[study.name] = study
    return study


def _import_study_modules() -> None:
    """Every module of this package except base registers its studies when imported."""
    import importlib
    import pkgutil

    from .. import studies

    for info in pkgutil.iter_modules(studies.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{studies.__name__}.{info.name}")


def get_study(name: str) -> Study:
    _import_study_modules()
    if name not in STUDIES:
        raise SphericalCowError(f"unknown study {name!r}; allowed: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


@contextmanager
def threads_for_width(width: int) -> Iterator[None]:
    """One intra-op thread for small networks (batches of a few inputs through layers narrower than 512: threading
    costs more than it saves and collapses when other processes share the cores); the default above. Restored."""
    before = torch.get_num_threads()
    if width < 512:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["depth=100", "cases=[...]"]`` -> dict; values are JSON where they parse as JSON, else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise SphericalCowError(f"--set {item!r} is malformed; expected key=value, e.g. --set depth=100")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def make_config(study: Study, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """The study's default config with ``overrides`` applied; invalid keys or values -> one-line error."""
    overrides = overrides or {}
    allowed = set(study.config.model_fields)
    for key in overrides:
        if key not in allowed:
            raise SphericalCowError(
                f"unknown config key {key!r} for study {study.name!r}; allowed: {', '.join(sorted(allowed))}"
            )
    try:
        return study.config(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            raise SphericalCowError(f"{loc} is required") from None
        if not loc:  # a whole-config check (model validator): its message names the problem
            raise SphericalCowError(msg) from None
        raise SphericalCowError(f"{loc}={err.get('input')!r} is not allowed: {msg}") from None


RUN_FILES = ("config.json", "results.json", "report.md", "report.html")


def check_out_dir(out: Path) -> None:
    """A run folder must be new or hold no earlier run: nothing already stored is overwritten."""
    if out.exists() and not out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a file; expected a folder for the run")
    taken = [f for f in RUN_FILES if (out / f).exists()]
    if taken:
        raise SphericalCowError(f"--out={str(out)!r} already holds a run ({taken[0]}); choose a new folder")


def run_study(
    name: str,
    overrides: dict[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
) -> tuple[Result, dict[str, Path]]:
    """Validate, run and write a study. ``out`` is the run folder (default runs/<UTC timestamp>-<name>/)."""
    from .. import __version__

    study = get_study(name)
    config = make_config(study, overrides)
    if out is not None:
        check_out_dir(Path(out))
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    result = study.run(config, progress=progress)
    result.meta.update(
        {
            "version": __version__,
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )
    out_dir = Path(out) if out is not None else new_run_dir(runs_dir, name, now=started)
    paths = write_run(result, out_dir)
    return result, paths
