"""How long SGD takes to learn a k-sparse parity of n bits (formulas and sources; float64).

* Statistical-query lower bound (Kearns 1998; Blum et al. 1994; restated by Barak, Edelman, Goel, Kakade, Malach &
  Zhang 2022, "Hidden progress in deep learning: SGD learns parities near the computational limit", NeurIPS,
  section 2): an SQ algorithm with tolerance tau needs at least C(n, k) tau^2 queries, since the C(n, k)
  candidate parities are pairwise orthogonal. Gradient descent with minibatches of size B is an SQ algorithm with
  tau ~ 1/sqrt(B), so steps x batch >= C(n, k) ~ n^k / k!: total samples n^k.
* Online SGD (batch 1) on a two-layer network: the relevant coordinates are found after
  T(n) ~ n^(k-1) steps for k >= 3 and n log n for k = 2 (Ben Arous, Gheissari & Jagannath 2021, JMLR 22, "Online
  stochastic gradient descent on non-convex losses from high-dimensional inference", Theorem 1.3 with information
  exponent k; Abbe, Boix-Adsera & Misiakiewicz 2023, COLT, "SGD learning on neural networks: leap complexity and
  saddle-to-saddle dynamics": d^(max(Leap - 1, 1)) samples for a leap-k target such as a k-parity). Barak et al.
  2022 (section 4) measure n^O(k) SGD iterations with a loss plateau during which hidden progress (the weight
  on the relevant bits) grows.

These are scaling laws up to constants; the ``parity`` study fits the exponent of the measured steps vs n.
"""

from __future__ import annotations

import math

from ..errors import SphericalCowError, check_int

__all__ = ["online_sgd_exponent", "online_sgd_steps", "sq_lower_bound"]


def _nk(n: int, k: int) -> tuple[int, int]:
    n = check_int("n", n, minimum=1)
    k = check_int("k", k, minimum=1)
    if k > n:
        raise SphericalCowError(f"k={k} is not allowed; expected 1 <= k <= n={n}")
    return n, k


def sq_lower_bound(n: int, k: int, tolerance: float = 1.0) -> float:
    """C(n, k) tolerance^2: the number of statistical queries of tolerance ``tolerance`` needed to identify a
    k-sparse parity among n bits (module docstring). With tolerance 1/sqrt(B) it is the number of steps (queries)
    of batch-B SGD, C(n, k) / B; the samples are steps x B = C(n, k) = ``sq_lower_bound(n, k)``."""
    n, k = _nk(n, k)
    if not (isinstance(tolerance, int | float) and 0 < tolerance <= 1):
        raise SphericalCowError(f"tolerance={tolerance!r} is not allowed; expected a number in (0, 1]")
    return math.comb(n, k) * tolerance**2


def online_sgd_exponent(k: int) -> float:
    """The exponent a in T(n) ~ n^a of online SGD on a k-sparse parity: max(k - 1, 1) (Ben Arous et al. 2021;
    Abbe et al. 2023; for k = 2 the law is n log n, exponent 1 up to the logarithm, k = 1 is linear)."""
    k = check_int("k", k, minimum=1)
    return float(max(k - 1, 1))


def online_sgd_steps(n: int, k: int, c: float = 1.0) -> float:
    """c n^(k-1) for k >= 3, c n log n for k = 2, c n for k = 1 (module docstring): online-SGD steps, up to the
    constant c."""
    n, k = _nk(n, k)
    if k == 2:
        return c * n * math.log(n)
    return c * float(n) ** online_sgd_exponent(k)
