"""Test-only study for the sweep tests, registered on import (sweep specs name this file in ``imports``, so the
sweep's own process, pool workers and Dask workers all register it).

``sweep-probe``: no torch, a few milliseconds unless ``sleep`` is set. ``mode`` decides what a point does:
``ok`` (metrics from a seeded generator), ``fail`` (raises), ``nan`` (a NaN loss: diverged), ``crash`` (the
process dies with ``os._exit``, like a segfault or the OOM killer).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from sphericalcow.report import Result, Table, Verdict
from sphericalcow.studies.base import Study, StudyConfig, register

HERE = Path(__file__).resolve()


class ProbeConfig(StudyConfig):
    seed: int = Field(0, ge=0)
    x: float = Field(1.0, allow_inf_nan=False)
    mode: Literal["ok", "fail", "nan", "crash"] = "ok"
    sleep: float = Field(0.0, ge=0, le=10)


def run(config: ProbeConfig, *, progress: bool = False) -> Result:
    if config.sleep:
        time.sleep(config.sleep)
    if config.mode == "fail":
        raise ValueError(f"boom at x={config.x}\nsecond line of the message")
    if config.mode == "crash":
        os._exit(3)
    rng = np.random.default_rng(config.seed)
    noise = float(rng.normal())
    loss = math.nan if config.mode == "nan" else config.x**2 + 0.1 * noise
    return Result(
        study="sweep-probe",
        title="probe",
        summary="a test study",
        config=config.model_dump(),
        tables=[Table("t", ["name", "value", "flag"], [{"name": "a", "value": config.x + noise, "flag": "yes"}])],
        verdicts=[Verdict("x is positive", passed=config.x > 0)],
        data={"loss": loss, "noise": noise, "series": [1.0, 2.0]},
    )


register(Study("sweep-probe", "Test-only probe study for the sweep tests.", ProbeConfig, run))
