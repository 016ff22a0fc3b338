"""Sweeps: many runs of one study over a grid / zipped lists of config values and seeds, into a results store.

>>> import sphericalcow as sc                                              # doctest: +SKIP
>>> out = sc.sweep("examples/sweep_criticality.toml", executor="process")  # doctest: +SKIP
>>> df = sc.load_results(out.store, where={"status": "ok"})                # doctest: +SKIP

This package is callable: ``sphericalcow.sweep(...)`` is :func:`sphericalcow.sweep.sweep` (``sc.sweep(...)``), and
``sphericalcow.sweep.plan_sweep`` etc. stay reachable (a function of the package's name would hide them).
See ``docs/sweeps.md`` for the spec format, the store schema, identity and resume rules, and the executors.
Nothing heavy is imported here: pandas and dask load only when used.
"""

import sys as _sys
import types as _types
from typing import Any as _Any

from .core import SweepOutcome, default_store_path, sweep
from .executors import EXECUTORS, make_executor
from .report import sweep_report
from .runner import default_metrics, extract_metrics, run_point
from .spec import Point, SweepPlan, SweepSpec, load_spec, plan_sweep, point_id

__all__ = [
    "EXECUTORS",
    "Point",
    "SweepOutcome",
    "SweepPlan",
    "SweepSpec",
    "default_metrics",
    "default_store_path",
    "extract_metrics",
    "load_spec",
    "make_executor",
    "plan_sweep",
    "point_id",
    "run_point",
    "sweep",
    "sweep_report",
]


class _CallableModule(_types.ModuleType):
    """The type of this package: calling it runs :func:`sweep`."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> SweepOutcome:
        return sweep(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
