"""Confidence intervals over independent units (typically random seeds).

Two estimators, both returning an :class:`Estimate`:

* :func:`mean_ci`: the Student-t interval for the mean of independent samples along one axis;
* :func:`bootstrap_ci`: the percentile bootstrap interval for an arbitrary statistic of independent units,
  resampling the units (axis 0) with replacement.

Every field of an :class:`Estimate` has the same shape (a float for scalar estimates, a float64 array
otherwise), so element-wise statements such as ``est.contains(truth)`` work for whole layers at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

from sphericalcow.errors import SphericalCowError, check_int

__all__ = ["Estimate", "bootstrap_ci", "bootstrap_means_ci", "mean_ci"]

# Upper bound on the bytes of one vectorised bootstrap chunk (resampled data), to keep memory bounded.
_CHUNK_BYTES = 1 << 25


def _as_field(x: Any) -> np.ndarray | float:
    """A float for 0-d values, a float64 array otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def _jsonable(x: Any) -> Any:
    """Lists / floats with non-finite values replaced by ``None`` (strict JSON has no NaN or inf)."""
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    ``mean``, ``lo``, ``hi`` and ``sem`` share one shape: floats for a scalar estimate, float64 arrays
    otherwise. ``sem`` is the standard error (the t-interval's ``s/sqrt(n)``, or the standard deviation of
    the bootstrap replicates). ``n`` is the number of independent units (e.g. seeds) and ``level`` the
    nominal coverage of ``[lo, hi]``. A NaN anywhere in the inputs of an element gives NaN for that element.
    """

    mean: np.ndarray | float
    lo: np.ndarray | float
    hi: np.ndarray | float
    sem: np.ndarray | float
    n: int
    level: float

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the estimate (``()`` for a scalar)."""
        return np.shape(self.mean)

    def __getitem__(self, index: Any) -> Estimate:
        """The estimate of one element (or a slice) along the leading axes, e.g. one layer of a stacked estimate."""
        return Estimate(
            mean=self.mean[index], lo=self.lo[index], hi=self.hi[index], sem=self.sem[index], n=self.n, level=self.level
        )

    def contains(self, value: Any) -> np.ndarray | bool:
        """Whether ``lo <= value <= hi`` (element-wise for arrays; False where the interval is NaN)."""
        v = np.asarray(value, dtype=np.float64)
        inside = (np.asarray(self.lo) <= v) & (v <= np.asarray(self.hi))
        return bool(inside) if np.ndim(inside) == 0 else inside

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: floats or (nested) lists; non-finite values become ``None``."""
        return {
            "mean": _jsonable(self.mean),
            "lo": _jsonable(self.lo),
            "hi": _jsonable(self.hi),
            "sem": _jsonable(self.sem),
            "n": int(self.n),
            "level": float(self.level),
        }


def _check_level(level: float) -> float:
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise SphericalCowError(f"level={level!r} is not a number; expected a number in (0, 1)") from None
    if not 0.0 < lv < 1.0:
        raise SphericalCowError(f"level={level!r} is not allowed; expected a number in (0, 1), e.g. 0.95")
    return lv


def _as_samples(samples: Any) -> np.ndarray:
    try:
        arr = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError):
        raise SphericalCowError(
            f"samples of type {type(samples).__name__} are not numeric; expected an array of real numbers"
        ) from None
    if arr.ndim == 0:
        raise SphericalCowError("samples is a scalar; expected an array with the independent units along an axis")
    return arr


def mean_ci(samples: np.ndarray, axis: int = 0, level: float = 0.95) -> Estimate:
    """Student-t confidence interval for the mean of independent samples along ``axis``.

    ``samples`` holds one value per independent unit (e.g. per seed) along ``axis``; the other axes are
    estimated element-wise. The interval is ``mean ± t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the
    sample standard deviation (``ddof=1``). Needs ``n >= 2`` units, else :class:`SphericalCowError`.
    """
    arr = _as_samples(samples)
    lv = _check_level(level)
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or not -arr.ndim <= axis < arr.ndim:
        raise SphericalCowError(
            f"axis={axis!r} is not allowed for samples of shape {arr.shape}; expected an integer in "
            f"[{-arr.ndim}, {arr.ndim - 1}]"
        )
    n = arr.shape[axis]
    if n < 2:
        raise SphericalCowError(
            f"n={n} samples along axis {axis} is too few for a confidence interval; expected at least 2"
        )
    mean = arr.mean(axis=axis)
    sem = arr.std(axis=axis, ddof=1) / math.sqrt(n)
    half = float(_sps.t.ppf(0.5 + lv / 2.0, n - 1)) * sem
    return Estimate(
        mean=_as_field(mean),
        lo=_as_field(mean - half),
        hi=_as_field(mean + half),
        sem=_as_field(sem),
        n=int(n),
        level=lv,
    )


def bootstrap_ci(
    samples: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> Estimate:
    """Percentile-bootstrap confidence interval for ``statistic`` of independent units.

    The units (e.g. seeds) lie along axis 0 of ``samples``; each bootstrap replicate resamples ``n`` of them
    with replacement and applies ``statistic``. ``statistic`` maps an array of units of shape
    ``(n, *rest)`` to the estimate (a scalar or an array of any fixed shape). With ``vectorized=True`` it is
    instead called on a batch of replicates of shape ``(B, n, *rest)`` and must return shape
    ``(B, *out)``; a statistic written with negative axes (e.g. ``lambda x: x.mean(axis=-2)``) usually works
    both ways. Batches are chunked to bound memory.

    Returns an :class:`Estimate` whose ``mean`` is ``statistic(samples)`` (the plug-in estimate), ``lo`` /
    ``hi`` the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the replicates, ``sem`` their standard
    deviation, and ``n`` the number of units. Deterministic given ``seed``.
    """
    arr = _as_samples(samples)
    lv = _check_level(level)
    nb = check_int("n_boot", n_boot, minimum=10)
    sd = check_int("seed", seed, minimum=0)
    if not callable(statistic):
        raise SphericalCowError(f"statistic={statistic!r} is not callable; expected a function of an array")
    n = arr.shape[0]
    if n < 2:
        raise SphericalCowError(f"n={n} units along axis 0 is too few for a bootstrap; expected at least 2")

    if vectorized:
        point = np.asarray(statistic(arr[None]), dtype=np.float64)[0]
    else:
        point = np.asarray(statistic(arr), dtype=np.float64)

    rng = np.random.default_rng(sd)
    # Same chunking whatever ``vectorized`` is, so both paths draw the same replicates.
    chunk = max(1, min(nb, _CHUNK_BYTES // max(arr.nbytes, 8)))
    reps = np.empty((nb, *point.shape), dtype=np.float64)
    done = 0
    while done < nb:
        b = min(chunk, nb - done)
        idx = rng.integers(0, n, size=(b, n))
        if vectorized:
            out = np.asarray(statistic(arr[idx]), dtype=np.float64)
            if out.shape != (b, *point.shape):
                raise SphericalCowError(
                    f"statistic returned shape {out.shape} on {b} bootstrap replicates but {point.shape} on "
                    f"the data; expected the same shape every time, i.e. ({b}, *{point.shape})"
                )
            reps[done : done + b] = out
        else:
            for r, i in enumerate(idx):
                one = np.asarray(statistic(arr[i]), dtype=np.float64)
                if one.shape != point.shape:
                    raise SphericalCowError(
                        f"statistic returned shape {one.shape} on a bootstrap replicate but {point.shape} on "
                        "the data; expected the same shape every time"
                    )
                reps[done + r] = one
        done += b

    alpha = (1.0 - lv) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    sem = reps.std(axis=0, ddof=1)
    return Estimate(
        mean=_as_field(point),
        lo=_as_field(lo),
        hi=_as_field(hi),
        sem=_as_field(sem),
        n=int(n),
        level=lv,
    )


def bootstrap_means_ci(
    samples: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile-bootstrap interval for a smooth function of means over units: ``fn(samples.mean(axis=0))``.

    The same bootstrap as :func:`bootstrap_ci` with ``statistic = lambda x: fn(x.mean(axis=0))`` (units
    along axis 0 resampled with replacement), but each replicate's means are computed as multinomial
    resampling counts times the data, one matrix product for all replicates, so thousands of units and many
    statistics (e.g. a pooled kurtosis ``<z^4>/<z^2>^2 - 3`` for every layer at once) stay cheap. ``fn`` maps
    means of shape ``(B, *rest)`` to ``(B, *out)`` (write it with ``...`` indexing / negative axes).
    """
    arr = _as_samples(samples)
    lv = _check_level(level)
    nb = check_int("n_boot", n_boot, minimum=10)
    sd = check_int("seed", seed, minimum=0)
    if not callable(fn):
        raise SphericalCowError(f"fn={fn!r} is not callable; expected a function of an array of means")
    n = arr.shape[0]
    if n < 2:
        raise SphericalCowError(f"n={n} units along axis 0 is too few for a bootstrap; expected at least 2")
    rest = arr.shape[1:]
    flat = arr.reshape(n, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        point = np.asarray(fn(flat.mean(axis=0).reshape(1, *rest)), dtype=np.float64)[0]
    rng = np.random.default_rng(sd)
    chunk = max(1, min(nb, _CHUNK_BYTES // max(arr.nbytes, 8)))  # as in bootstrap_ci: same replicates
    reps = np.empty((nb, *point.shape), dtype=np.float64)
    done = 0
    while done < nb:
        b = min(chunk, nb - done)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        means = (counts @ flat / n).reshape(b, *rest)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(fn(means), dtype=np.float64)
        if out.shape != (b, *point.shape):
            raise SphericalCowError(
                f"fn returned shape {out.shape} on {b} replicates but {point.shape} on the data; expected "
                f"shape ({b}, *{point.shape})"
            )
        reps[done : done + b] = out
        done += b
    alpha = (1.0 - lv) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    sem = reps.std(axis=0, ddof=1)
    return Estimate(
        mean=_as_field(point),
        lo=_as_field(lo),
        hi=_as_field(hi),
        sem=_as_field(sem),
        n=int(n),
        level=lv,
    )
