"""Running one sweep point (in any process): the worker entry :func:`run_point` and metric extraction.

:func:`run_point` never raises for a problem of the point itself: an exception becomes a ``failed`` row (one-line
message, traceback kept), a NaN metric a ``diverged`` row. It runs in the sweep's process, in a process-pool worker
or on a Dask worker, with the same result: the config is rebuilt from its JSON form, the study's ``seed`` is
already in it, and Python's, NumPy's and torch's global generators are seeded from the sweep seed too.

Metrics (a flat ``{name: float}``) come from the study's own hook when it has one,
``study.metrics(result) -> Mapping[str, float]`` (a ``metrics`` attribute on the registered :class:`Study`),
else from :func:`default_metrics`. Status: ``failed`` if the run (or the metrics) raised; ``diverged`` if any metric
is NaN (a NaN loss); else ``ok``. Infinite metrics are values, not divergence: theory legitimately gives
xi_perp = inf at criticality and K* = inf for a chaotic ReLU network.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import multiprocessing as mp
import os
import random
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import SphericalCowError

__all__ = [
    "WORKER_DIED",
    "default_metrics",
    "extract_metrics",
    "failed_row",
    "import_modules",
    "init_worker",
    "mp_context",
    "run_point",
    "run_point_isolated",
]

#: The message of a point whose process died under it.
WORKER_DIED = (
    "the worker process died while running this point (crash, out of memory or os._exit); nothing was returned"
)

_BOOL_WORDS = {"yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0, "pass": 1.0, "fail": 0.0}


def import_modules(imports: list[str]) -> None:
    """Import modules by name, or ``.py`` files by absolute path (each once per process); they register studies.

    Raises :class:`SphericalCowError` naming the import that failed.
    """
    for item in imports:
        try:
            if item.endswith(".py") or os.sep in item or "/" in item:
                path = Path(item)
                digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
                name = f"_sphericalcow_sweep_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {item!r} as a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            else:
                importlib.import_module(item)
        except SphericalCowError:
            raise
        except Exception as e:
            raise SphericalCowError(f"imports: {item!r} failed: {type(e).__name__}: {_one_line(str(e))}") from None


def _one_line(text: str, limit: int = 500) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _number(v: Any) -> float | None:
    """A float for numbers, bools and yes/no-like words; None for anything else."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        return _BOOL_WORDS.get(v.strip().lower())
    if isinstance(v, int | float):
        return float(v)
    if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)):  # numpy scalars, 0-d arrays/tensors
        try:
            x = v.item()
        except (TypeError, ValueError, RuntimeError):
            return None
        return None if isinstance(x, str) else _number(x)
    return None


def _flat_numbers(d: Mapping[str, Any], prefix: str, out: dict[str, float]) -> None:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            _flat_numbers(v, name + ".", out)
        else:
            x = _number(v) if not isinstance(v, str) else None
            if x is not None:
                out[name] = x


def default_metrics(result: Any) -> dict[str, float]:
    """The metrics of a :class:`~sphericalcow.report.Result` when its study defines none:

    * ``passed`` (1/0, only if some verdict is pass/fail), ``n_pass``, ``n_fail``, and ``verdict.<i>`` (1/0) for
      each pass/fail verdict ``i`` in display order;
    * every numeric, boolean or yes/no/true/false/pass/fail cell of every table, named ``<row>.<column>``
      (``<table>.<row>.<column>`` when the result has several tables), ``<row>`` being the row's first cell when
      that column holds unique non-empty strings (e.g. a case label), else the row's index. A NaN cell is an empty
      cell (reports show it as "—"), so it gives no metric;
    * numeric scalars at the top level of ``result.data``, and everything numeric in a ``result.data["metrics"]``
      mapping (nested keys joined with ``.``). A NaN here marks the point ``diverged`` (e.g. ``data["loss"]``).
    """
    out: dict[str, float] = {}
    decided = [v.passed for v in result.verdicts if v.passed is not None]
    if decided:
        out["passed"] = float(all(decided))
    out["n_pass"] = float(sum(bool(p) for p in decided))
    out["n_fail"] = float(sum(not p for p in decided))
    for i, v in enumerate(v for v in result.verdicts if v.passed is not None):
        out[f"verdict.{i}"] = float(v.passed)
    several = len(result.tables) > 1
    for table in result.tables:
        if not table.columns:
            continue
        first = table.columns[0]
        labels = [row.get(first) for row in table.rows]
        by_label = all(isinstance(x, str) and x for x in labels) and len(set(labels)) == len(labels)
        for i, row in enumerate(table.rows):
            rname = labels[i] if by_label else str(i)
            for c in table.columns[1 if by_label else 0 :]:
                x = _number(row.get(c))
                if x is not None and x == x:  # a NaN cell is an empty cell ("—" in reports): no metric
                    out[f"{table.name}.{rname}.{c}" if several else f"{rname}.{c}"] = x
    for k, v in result.data.items():
        if k == "metrics" and isinstance(v, Mapping):
            _flat_numbers(v, "", out)
        elif not isinstance(v, str | Mapping):
            x = _number(v)
            if x is not None:
                out[str(k)] = x
    return out


def extract_metrics(study: Any, result: Any) -> dict[str, float]:
    """``study.metrics(result)`` if the study has such a hook, else :func:`default_metrics`; values as floats."""
    hook = getattr(study, "metrics", None)
    if not callable(hook):
        return default_metrics(result)
    raw = hook(result)
    if not isinstance(raw, Mapping):
        raise TypeError(f"study {study.name!r}: metrics() returned {type(raw).__name__}, expected a mapping")
    out = {}
    for k, v in raw.items():
        x = _number(v) if not isinstance(v, str) else None
        if x is None:
            raise TypeError(f"study {study.name!r}: metric {k!r} = {v!r} is not a number")
        out[str(k)] = x
    return out


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _close_figures(result: Any) -> None:
    figures = getattr(result, "figures", None) or []
    if figures:
        import matplotlib.pyplot as plt

        for f in figures:
            plt.close(f.figure)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _base_row(task: Mapping[str, Any]) -> dict[str, Any]:
    from .. import __version__

    return {
        "id": task["id"],
        "status": "failed",
        "metrics": {},
        "message": None,
        "traceback": None,
        "seconds": None,
        "started_utc": None,
        "finished_utc": None,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "version": __version__,
    }


def failed_row(task: Mapping[str, Any], message: str, tb: str | None = None) -> dict[str, Any]:
    """A ``failed`` row for ``task`` written by the sweep itself (e.g. the worker process died)."""
    row = _base_row(task)
    row.update(message=_one_line(message), traceback=tb, finished_utc=_now(), worker=None)
    return row


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one point (``task`` from :meth:`Point.task`) and return its row: status, metrics, message, traceback,
    seconds, start/finish UTC times, worker (host:pid) and package version. Never raises for the point's own
    errors (they become a ``failed`` row); KeyboardInterrupt still propagates."""
    row = _base_row(task)
    row["started_utc"] = _now()
    t0 = time.perf_counter()
    try:
        import_modules(task.get("imports") or [])
        from ..studies.base import get_study
        from .spec import canonical_json

        study = get_study(task["study"])
        threads = task.get("threads")
        torch = sys.modules.get("torch")
        if threads and torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(int(threads))
        config = study.config.model_validate_json(canonical_json(task["config"]))
        if "seed" in type(config).model_fields and config.seed != task["seed"]:
            raise SphericalCowError(f"config seed {config.seed} differs from the point's seed {task['seed']}")
        _seed_everything(int(task["seed"]))
        t0 = time.perf_counter()
        result = study.run(config, progress=False)
        seconds = time.perf_counter() - t0
        try:
            metrics = extract_metrics(study, result)
        finally:
            _close_figures(result)
    except (Exception, SystemExit) as e:
        text = _one_line(str(e))
        row.update(
            message=f"{type(e).__name__}: {text}" if text else type(e).__name__,
            traceback=traceback.format_exc(),
            finished_utc=_now(),
            seconds=time.perf_counter() - t0,
        )
        return row
    bad = [k for k, v in metrics.items() if math.isnan(v)]
    row.update(metrics=metrics, seconds=seconds, finished_utc=_now())
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        row.update(status="diverged", message=f"NaN metrics: {shown}")
    else:
        row["status"] = "ok"
    return row


def mp_context() -> mp.context.BaseContext:
    """forkserver where available (children fork from a server that imported sphericalcow and torch once: fast
    start, and no fork of a process that may run threads), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["sphericalcow.sweep.runner", "sphericalcow.studies.criticality"])
        return ctx
    return mp.get_context("spawn")  # pragma: no cover


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover  (exists, not ours)
        return True
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


def init_worker(owner_pid: int, threads: int | None = None) -> None:
    """Initializer of pool worker processes: ``threads`` torch threads, and exit as soon as the process that owns
    the pool is gone (a sweep killed with SIGKILL leaves no idle workers behind)."""
    if threads:
        import torch

        torch.set_num_threads(threads)

    def watch() -> None:
        while _alive(owner_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="sphericalcow-owner-watch", daemon=True).start()


def _iso_pool_new(slots: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(slots, mp_context=mp_context(), initializer=init_worker, initargs=(os.getpid(),))


_iso_lock = threading.Lock()
_iso_retry_lock = threading.Lock()
_iso_pool: ProcessPoolExecutor | None = None


def _iso_slots() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def run_point_isolated(task: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`run_point` in a child process of this (Dask worker) process, so that a point that kills its process
    (segfault, out of memory, ``os._exit``) becomes a ``failed`` row instead of taking the worker and the results it
    holds with it. Children are kept for the next points. A point whose child dies is run once more alone; if
    that child dies too, the point is ``failed``. Where no child process can be started (a daemonic worker), the
    point runs in this process."""
    global _iso_pool
    with _iso_lock:
        if _iso_pool is None:
            try:
                _iso_pool = _iso_pool_new(_iso_slots())
            except (AssertionError, OSError):  # daemonic processes may not have children
                _iso_pool = None
        pool = _iso_pool
    if pool is None:
        return run_point(task)
    try:
        return pool.submit(run_point, task).result()
    except BrokenProcessPool:
        with _iso_lock:
            if _iso_pool is pool:
                _iso_pool = None
        pool.shutdown(wait=False, cancel_futures=True)
    except AssertionError:  # daemonic: cannot start children after all
        return run_point(task)
    with _iso_retry_lock:  # alone, so that a crash here is this point's own
        single = _iso_pool_new(1)
        try:
            return single.submit(run_point, task).result()
        except BrokenProcessPool:
            return failed_row(task, WORKER_DIED)
        finally:
            single.shutdown(wait=False, cancel_futures=True)
