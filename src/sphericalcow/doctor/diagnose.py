"""Verdicts: turn the measurements into plain-words diagnoses, each with its numbers, theory and fix.

Thresholds (each from theory, none tuned on the test models):

* ``DEPTH_SCALE_FACTOR = 6``: a perturbation (or the signal's second moment) changes by chi^l = exp(+-l/xi) over l
  layers, xi = 1/|log chi| (PDLT §5.1; Poole et al. 2016). Schoenholz et al. 2017 ("Deep information propagation",
  §5 and Fig. 5) found that random networks train only when their depth is below about 6 depth scales, L < 6 xi.
  We measure xi from the deeper half of the blocks, 1/xi = |mean log chi_l| there, where the signal has reached its
  asymptotic behaviour (the first blocks are a transient from the input's scale), and fail when L/xi > 6. This
  separates exponential decay/growth (L/xi = L |log chi|, growing with depth) from the power laws of critical
  networks in the K*=0 class (tanh at C_W = 1: K ~ 1/(2l), chi_perp ~ 1 - 1/l, so L/xi ~ 2 log 2 ~ 1.4 at any depth;
  PDLT §5.3). The same bound applies to chi_perp, to the per-block gain of the second moment E[K_out/K_in] (a mean
  of per-draw ratios, robust to the heavy tails of K itself at large depth/width), to a residual stack (whose depth
  scale is 1/log(1 + c), c the branch-to-trunk variance ratio) and to the spread of per-layer weight gradients
  (their ratio between layers is a product of the chis in between, PDLT §9.4).
  The phase is labelled critical when |L/xi| <= 2 (above the power law's 1.4), "mildly ordered/chaotic (within the
  trainable range)" when 2 < |L/xi| <= 6, and ordered or chaotic beyond 6, so the label never contradicts the grade.
  The readout (the last weight layer, when it produces the output) is not a depth block: its susceptibility is about
  C_W/2 for one output and a zero or small readout is healthy practice. Gradients are backpropagated from the
  readout's input, so the readout's scale (a common factor of every earlier layer's gradient) cancels.
* ``KAPPA_MAX = 3``: the leading finite-width correction to the four-point function is kappa K^2 with
  kappa = 3 V / (n K^2) (PDLT eq. 4.77 and §5.4: kappa ~ nu L / n at criticality); the Gaussian (infinite-width)
  part is 3 K^2. When the predicted kappa at the output exceeds 3 the "correction" is larger than the quantity it
  corrects, the 1/n expansion that every infinite-width statement rests on is not controlled, and the fix is a
  wider or shallower network. The recommended width makes the predicted kappa <= ``KAPPA_TARGET = 1``.
  kappa is predicted by :func:`sphericalcow.finite_width` for a model that maps onto an MLP; otherwise each plain
  layer adds nu / n_eff with the class-universal slope nu of the activation the next layer reads (ReLU 15, linear
  6, K*=0 class 2; :func:`universal_kurtosis_slope`), each residual block maps kappa by
  :func:`residual_block_kurtosis` (derived here, checked against Monte Carlo), and the reported effective aspect
  ratio is kappa_pred / nu of the dominant activation. For a convolution n_eff is the next layer's fan-in
  (channels x kernel size) rather than the channel count: the next layer's metric
  averages over channels x kernel positions. This treats the kernel positions as independent, so it is a lower
  bound on the fluctuations (the channel count gives the upper bound). For an MLP the prediction (exact at leading
  order) grades the verdict; for other models it is approximate, so the measured excess kurtosis at the output
  (ensemble over draws, jackknife SE) grades it when its 95% interval (+-2 SE) lies on one side of 3, and the
  prediction only when the measurement cannot decide. Post-norm residual blocks (LayerNorm after the sum) reset the
  scale each block, so the residual estimate does not apply: the verdict is "not applicable". Where the aspect
  ratio fails the gradient verdict is not graded: per-layer gradients then fluctuate O(1) from draw to draw.
* fixes are attached to failed verdicts only. Activations without a critical initialisation (softplus: chi_par < 1
  wherever chi_perp = 1) or unidentified nonlinearities get a stated note instead of a C_W. Critical C_W above 4
  (sigmoid: ~103 at C_b = 0) comes with a saturation caveat.
* sharpness: gradient descent with learning rate lr is stable on a quadratic only if lambda_max(H) < 2 / lr
  (the classical bound; Cohen et al. 2021, "Edge of stability", §2). Larger is a failure.
* weight spectra: informational only (Martin & Mahoney 2021: power-law alpha in [2, 6] for well-trained layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..activations import Activation
from ..errors import SphericalCowError
from ..measure.stats import mean_ci
from .model_map import ModelMap
from .signal import Measurements, pooled_kurtosis

__all__ = ["DEPTH_SCALE_FACTOR", "KAPPA_MAX", "KAPPA_TARGET", "DoctorVerdict", "critical_std", "summarize"]

DEPTH_SCALE_FACTOR = 6.0
KAPPA_MAX = 3.0
KAPPA_TARGET = 1.0
#: Critical C_W above which the fix carries a saturation caveat: C_W = 4 already puts a unit-variance input's
#: preactivation at std 2, where tanh/sigmoid-like units spend most of their time saturated.
SATURATION_CW = 4.0


@dataclass
class DoctorVerdict:
    """One diagnosis. ``passed``: True (healthy), False (a defect) or None (informational)."""

    key: str
    title: str
    passed: bool | None
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    theory: str = ""
    fix: str = ""

    @property
    def status(self) -> str:
        return "info" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "passed": self.passed,
            "status": self.status,
            "message": self.message,
            "numbers": self.numbers,
            "theory": self.theory,
            "fix": self.fix,
        }


def critical_std(act: Activation, fan_in: int) -> tuple[float, float, float]:
    """(C_W, C_b, std of W) of the critical initialisation for ``act`` (sc.critical_init at C_b = 0; activations
    with no critical line at C_b = 0, e.g. GELU, take the book's critical point with its C_b > 0)."""
    from ..theory.criticality import critical_init, critical_point

    try:
        cw, cb = critical_init(act, 0.0)
    except SphericalCowError:
        cp = critical_point(act)
        cw, cb = cp.cw, cp.cb
    return float(cw), float(cb), math.sqrt(cw / fan_in)


def _ci(samples: np.ndarray) -> tuple[float, float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan"), float("nan")
    if s.size == 1:
        return float(s[0]), float("nan"), float("nan")
    e = mean_ci(s)
    return float(e.mean), float(e.lo), float(e.hi)


def _kurtosis(m2: np.ndarray, m4: np.ndarray) -> tuple[float, float]:
    """Excess kurtosis per group pooled over draws, averaged over the groups that are not identically zero; jackknife
    standard error over draws."""

    live = m2.mean(0) > 0  # a group that is zero in every draw (a zero input, no bias) has no kurtosis

    def stat(a2: np.ndarray, a4: np.ndarray) -> float:
        if not live.any():  # an all-zero layer (zero readout): NaN, no verdict
            return float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.mean(a4[:, live].mean(0) / a2[:, live].mean(0) ** 2 - 3.0))

    k = stat(m2, m4)
    n = m2.shape[0]
    if n < 3:
        return k, float("nan")
    jk = np.array([stat(np.delete(m2, i, 0), np.delete(m4, i, 0)) for i in range(n)])
    se = math.sqrt((n - 1) / n * np.sum((jk - jk.mean()) ** 2))
    return k, se


def residual_block_kurtosis(kappa_in: float, c: float, a: float, kappa_branch: float, n: float) -> float:
    """Leading-order excess kurtosis after a residual block z' = z + u, from its value ``kappa_in`` before it.

    Derivation (ours; the book treats residual MLPs only for Gaussian statistics, PDLT §9): write
    R^2 = |z|^2 / n_trunk and v = Var(R^2) / E[R^2]^2 over draws. A layer reading the trunk linearly has output
    excess kurtosis 3 v (given z its output is Gaussian with variance C_W R^2), so we track kappa = 3 v.
    The branch ends in a zero-mean weight layer, so given z and the branch's internals u is Gaussian, i.i.d. over
    units, with variance s (s = C_W mean_a phi_a^2 + C_b of its last hidden layer). Then
    R'^2 = R^2 + 2 z.u / n + |u|^2 / n with conditional variances 4 s R^2 / n and 2 s^2 / n, and
    Var(R'^2) = Var(E[R'^2 | R^2]) + E[4 s R^2 + 2 s^2] / n + E[Var(s | z)]. With c = E[s] / E[R^2] (the block's
    measured gain minus 1), a = d log K_out / d log K_in = chi_par / gain (1 for a scale-invariant branch without
    normalisation, 1 / (1 + c) for a pre-norm branch) and kappa_branch = 3 Var(s | z) / E[s]^2 (the excess
    kurtosis of the branch output u, which is 0 for a branch with a single weight layer and (nu / n_h) for one
    hidden layer of width n_h; nu = 15 for ReLU):

        kappa' = a^2 kappa_in + 3 (4 c + 2 c^2) / (n (1 + c)^2) + (c / (1 + c))^2 kappa_branch.

    Checks: c -> 0 (identity block) leaves kappa unchanged; c -> infinity gives a plain stack's 6 / n (the trunk
    read linearly: 3 (3 - 1) / n) plus the branch's kurtosis; a ReLU branch W2 relu(W1 z) adds
    3 (4 c + 7 c^2) / (n (1 + c)^2). Against Monte Carlo of real residual ReLU stacks (tests/test_doctor.py):
    agreement at 1/n after Richardson extrapolation in the width, with and without pre-LayerNorm; the earlier
    estimate (c / (1 + c))^2 nu / n per block missed the trunk-branch cross term 4 c and was 2x low at c = 1.
    """
    return a * a * kappa_in + 3.0 * (4.0 * c + 2.0 * c * c) / (n * (1.0 + c) ** 2) + (c / (1.0 + c)) ** 2 * kappa_branch


def _layer_nu(la: Any, nu_dom: float | None) -> float | None:
    """Per-layer kurtosis increment slope: nu of the activation the next layer reads (``out_act``; none: the
    linear 6), falling back to the dominant activation's when it is unknown or has no universal slope."""
    from ..activations import activation
    from ..theory.finite_width import universal_kurtosis_slope

    if la.out_unknown is not None:
        return nu_dom
    act = la.out_act if la.out_act is not None else activation("linear")
    try:
        return universal_kurtosis_slope(act)[1]
    except SphericalCowError:
        return nu_dom


def _nu_next(la: Any, nu: float, kappa_unit: float, mix: float) -> float | None:
    """The next layer's kurtosis slope when this layer's units are not Gaussian (excess kurtosis ``kappa_unit``,
    symmetric) or, in a grouped convolution, pool channel groups of unequal variance K_c (``mix`` =
    Var_c(K_c) / mean_c(K_c)^2). nu = 3 n Var(mean_i sigma(z_i)^2) / E[sigma(z)^2]^2 (PDLT §5.4) over independent
    units gives 3 (2 + kappa) (1 + mix) read linearly (E z^4 = (3 + kappa) K^2) and 3 (5 + 2 kappa) (1 + mix) through
    ReLU (E relu(z)^4 = E z^4 / 2); other activations keep the Gaussian nu when mix = 0 (an O(kappa / n) error, small
    unless the units are O(1) non-Gaussian: a uniform embedding, a bias-dominated layer) and get no prediction
    otherwise. Both shifts are O(1/n^2) for a layer whose units are O(1/n) from Gaussian."""
    spec = None if la.out_unknown is not None else la.out_act.spec if la.out_act is not None else "linear"
    if spec == "linear":
        return 3.0 * (2.0 + kappa_unit) * (1.0 + mix)
    if spec == "relu":
        return 3.0 * (5.0 + 2.0 * kappa_unit) * (1.0 + mix)
    return nu if mix < 1e-12 else None


def _measured_K(ms: Measurements, i: int) -> float:
    """E[z^2] of weight layer i's output units, measured: the mean over draws and unit groups."""
    return float(np.mean(ms.kurt_m2[i]))


def _bias_entries(ms: Measurements, i: int) -> np.ndarray | None:
    """(entries, 2): b^2 and b^4 of weight layer i's effective bias over all draws; ``None`` without a bias."""
    return ms.b_entries[i] if ms.b_entries is not None else None


#: A weight or bias distribution counts as non-Gaussian when its excess kurtosis differs from zero by more than this
#: many standard errors of the Gaussian null (:func:`~sphericalcow.doctor.signal.pooled_kurtosis`): a Gaussian init
#: then predicts exactly the Gaussian theory rather than its sampling noise (false alarms <= 0.2% per layer, measured
#: for 12-800 rows), while PyTorch's uniform init (-1.2) is detected from about 270 entries on.
KAPPA_W_SIGNIFICANCE = 4.0
#: Weight rows count as dependent (:func:`_row_dependence`) beyond this many null standard errors: the consequence,
#: no prediction downstream, is heavier (false alarms <= 0.03% per layer, measured).
DEPENDENCE_SIGNIFICANCE = 5.0


def _significant(k: float, se: float, level: float = KAPPA_W_SIGNIFICANCE) -> float:
    """``k`` if it differs from zero by more than ``level`` standard errors (and more than round-off, 1e-9: a null SE
    of zero, e.g. for +-c weights, must not turn 1e-16 into a finding), else 0 (NaN stays)."""
    if not math.isfinite(k) or not math.isfinite(se):
        return k
    return k if abs(k) > max(level * se, 1e-9) else 0.0


def _row_dependence(rows: np.ndarray, d: int, kappa: float) -> tuple[float, float]:
    """d22 = E[w_j^2 w_k^2] / E[w^2]^2 - 1 over the rows (j != k in one row; 0 for i.i.d. entries, -2 / (d + 2) for an
    orthogonal row) and its standard error under the i.i.d. null, (2 + kappa) sqrt(2 / (d (d - 1) N)) for N rows of
    d entries of excess kurtosis kappa (our derivation: with a_j = w_j^2 / E[w^2] - 1, the estimator minus twice the
    relative mean square is the degenerate U-statistic 2 sum_{j<k} a_j a_k / (d (d - 1)), whose linear parts cancel).
    (NaN, NaN) for a fan-in of one (no pairs)."""
    n = rows.shape[0]
    if d < 2 or n == 0 or not np.isfinite(rows[:, 2]).all():
        return math.nan, math.nan
    d22 = float(rows[:, 2].mean() / rows[:, 0].mean() ** 2 - 1.0)
    return d22, max(2.0 + kappa, 0.0) * math.sqrt(2.0 / (d * (d - 1) * n))


_NOT_IID = (
    "no prediction: an earlier layer's weight rows are not i.i.d. (dependent entries, e.g. orthogonal init, or rows "
    "of different scales)"
)


@dataclass
class WeightTerm:
    """:func:`_weight_term`'s result: ``value`` (``None``: not predicted, ``why``), and ``iid``: False where the
    entries of a weight row are measurably dependent (the metric's fluctuation downstream is then not modelled)."""

    value: float | None
    why: str = ""
    iid: bool = True
    #: Var_c(K_c) / mean_c(K_c)^2 over the channel groups c of a grouped convolution (units pooled in one measured
    #: group read different inputs): the carried kurtosis kappa enters the row as kappa (1 + mix)
    mix: float = 0.0


def _weight_term(mm: ModelMap, ms: Measurements, i: int) -> WeightTerm:
    """Single-neuron excess kurtosis that non-Gaussian weights and biases add to weight layer i's output.

    Given the layer's input x, the units z = w . x + b are independent, so the excess kurtosis of a unit splits
    exactly into E_x[cum_4(z | x)] / K^2 plus the fluctuation of the metric E[z^2 | x] across draws (PDLT's V,
    computed for Gaussian weights). For a row w with exchangeable, sign-symmetric entries (i.i.d., or e.g. a
    uniformly rotated row as in orthogonal init), E[w^2] = s2, E[w^4] = m4, E[w_j^2 w_k^2] = m22 (j != k), and an
    independent bias of excess kurtosis kappa_b and mean square C_b, expanding E[(w . x)^4] gives (our derivation,
    cumulant additivity)

        cum_4(z | x) = (m4 - 3 m22) S4 + 3 (m22 - s2^2) S22 + kappa_b C_b^2,   S4 = sum_j x_j^4, S22 = (sum_j x_j^2)^2,

    summed over the inputs feeding the unit (a convolution's patch, padding included). For i.i.d. entries m22 = s2^2
    and the first term is kappa_W s2^2 S4; for an orthogonal row (fixed norm) m4 = 3 m22 and the second term gives
    -6 / (d + 2). The weight and bias moments are pooled over draws (the population's); S2, S4 and S22 are averaged
    over the draws at each unit group (example, position), the cumulant divided by that group's K^2 with K = s2 S2 +
    C_b (the expectation of the measured second moment, without its sampling noise), then averaged over the groups
    exactly as the measured kurtosis is. A grouped convolution's units of one measured group read different channels
    (K_c per channel group c): the pooled moments are a mixture, adding 3 Var_c(K_c) / mean_c(K_c)^2 (and scaling
    the carried kurtosis by 1 + Var_c(K_c) / mean_c(K_c)^2, ``mix``). An embedding's output is one entry of its
    table: kappa_W. PyTorch's default uniform init has kappa_W = kappa_b = -6/5: a ReLU-fed linear layer adds about
    -7.2 / fan_in, half the +15 / n of the metric, and where the bias dominates K (too small a weight init) the
    output tends to the bias's -1.2.

    kappa_W and kappa_b count only where a Gaussian is rejected (:data:`KAPPA_W_SIGNIFICANCE` null standard errors),
    so a Gaussian init predicts the Gaussian theory exactly. The term itself does not carry; the next layer's nu
    changes with it (:func:`_nu_next`), at O(1/n^2) while it is O(1/n), at O(1/n) for an embedding of non-Gaussian
    entries or a bias-dominated layer (applied on the leading-order route; the matched-MLP route keeps the Gaussian
    recursion). Dependent row entries (m22 != s2^2 beyond :data:`DEPENDENCE_SIGNIFICANCE`, :func:`_row_dependence`) set
    ``iid`` False: PDLT's V assumes i.i.d. weights (an orthogonal linear map does not fluctuate the metric at all),
    so nothing downstream is predicted. ``None`` where the inputs feeding a unit cannot be summed (transposed
    convolutions, attention, other layers) and the weights are not Gaussian, or for an embedding bag (it sums
    several entries)."""
    la = mm.layers[i]
    rows = ms.w_rows[i] if ms.w_rows is not None else None
    if rows is None or rows.shape[0] == 0:
        return WeightTerm(0.0)
    bias = _bias_entries(ms, i)
    kb = _significant(*pooled_kurtosis(bias))
    cb = float(bias[:, 0].mean()) if bias is not None else 0.0
    bias4 = kb * cb * cb if math.isfinite(kb) else 0.0
    s2 = float(rows[:, 0].mean())
    d = ms.w_row_len[i] if ms.w_row_len is not None else la.fan_in  # entries per row
    kw_raw, kw_se = pooled_kurtosis(rows, per_sample=d) if s2 > 0 else (0.0, math.nan)
    kw = _significant(kw_raw, kw_se)
    if la.kind == "embedding":
        if la.module_type == "EmbeddingBag" and kw != 0:
            return WeightTerm(None, "no prediction: an embedding bag's output sums several non-Gaussian entries")
        return WeightTerm(0.0 if la.module_type == "EmbeddingBag" else kw)
    d22, d22_se = _row_dependence(rows, d, kw_raw) if s2 > 0 else (math.nan, math.nan)
    d22 = _significant(d22, d22_se, DEPENDENCE_SIGNIFICANCE) if math.isfinite(d22) else 0.0
    iid = d22 == 0
    if not iid:
        kw = kw_raw  # m4 - 3 m22 below needs the entries' kurtosis as measured (~ 3 d22 for an orthogonal row)
    S2, S4, S22 = [
        None if a is None or a[i] is None else np.mean(a[i], axis=0) for a in (ms.in_s2, ms.in_s4, ms.in_s22)
    ]
    if S2 is None or S4 is None or S22 is None:
        if kw != 0 or d22 != 0:
            why = f"no prediction: non-Gaussian weights in a {la.kind} layer ({la.module_type})"
            return WeightTerm(None, why, iid)
        K = _measured_K(ms, i)
        return WeightTerm(bias4 / K**2 if K > 0 else 0.0, "", iid)
    # (groups, channel groups): E[z^2] = s2 S2 + C_b, the expectation the measured second moment estimates
    K = s2 * S2 + cb
    cum = s2 * s2 * ((kw - 3.0 * d22) * S4 + 3.0 * d22 * S22) + bias4  # m4 - 3 m22 = s2^2 (kappa - 3 d22)
    Kbar = K.mean(axis=1)
    ok = Kbar > 0
    if not ok.any():
        return WeightTerm(None, "no prediction: the layer's output is zero")
    mix = K[ok].var(axis=1) / Kbar[ok] ** 2  # pooling channel groups of different variance: a mixture
    value = cum[ok].mean(axis=1) / Kbar[ok] ** 2 + 3.0 * mix
    return WeightTerm(float(np.mean(value)), "", iid, float(np.mean(mix)))


def _bias_dilution(ms: Measurements, i: int) -> float:
    """((K - C_b) / K)^2 for weight layer i (K = E[z^2] measured, C_b the mean square of its effective bias): the
    metric's fluctuation reaches z = W x + b only through the weight part, Var(E[z^2 | x]) = Var(s2 |x|^2), so the
    input's carried excess kurtosis is multiplied by it (PDLT's recursion has it through K = C_b + C_W <sigma^2>)."""
    K = _measured_K(ms, i)
    bias = _bias_entries(ms, i)
    if bias is None or not K > 0:
        return 1.0
    cb = float(bias[:, 0].mean())
    return ((K - min(cb, K)) / K) ** 2


def _predicted_kurtosis(
    mm: ModelMap, ms: Measurements, n_eff: dict[str, int], nu_dom: float | None, terms: list[WeightTerm]
) -> list[tuple[float | None, str]]:
    """Predicted excess kurtosis of each weight layer's output, with its source, for a model without a matched MLP.

    Plain layers add nu / n_eff (nu of the activation the next layer reads, :func:`_layer_nu`, shifted where the
    layer's own units are not Gaussian, :func:`_nu_next`; PDLT §5.4), the carried value is diluted by a layer's
    bias (:func:`_bias_dilution`), and each row adds the single-unit weight term (:func:`_weight_term`). A
    per-example normalisation over the units a linear layer reads (LayerNorm, RMSNorm, GroupNorm with one group)
    divides out the carried fluctuation: that layer's output has kurtosis nu_norm / fan_in only
    (:func:`sphericalcow.theory.finite_width.normalized_kurtosis_slope`, with the activation that ran after the
    norm, or none; an unidentified one after it gives no prediction). Norms whose statistics are not those of the
    fan-in (any norm before a convolution, InstanceNorm, GroupNorm with several groups, a norm over several axes)
    are not modelled: no prediction until a modelled norm resets. Batch norm is not reset: it standardises each unit
    over the batch, and the fluctuations of the kernel across the batch are carried (measured: 0.21 after the first
    BatchNorm-ReLU layer of width 64, as nu_batch(B = 16) / 64 = 0.20 predicts, then rising to 0.62 after seven,
    where the plain accumulation gives 1.6). The plain accumulation is kept there; it is not a bound (in a residual
    net with batch-normed branches the block recursion's damping can put it below the measurement), and the
    measurement grades. Attention layers are not modelled (their output mixes positions through a softmax of the
    inputs), nor other weight layers (recurrent, bilinear, custom): no prediction for them or after them until a
    modelled norm resets.

    A residual block's first weight layer reads the trunk, which is fixed given the block's input, so the branch
    starts Gaussian; its later layers accumulate kappa_branch (shown with the trunk's carried kurtosis added unless
    a modelled norm divided it out: the branch output's scale follows the trunk's), and the block's output follows
    :func:`residual_block_kurtosis` with the measured mean gain (c = gain - 1) and log-susceptibility a = mean
    chi_par / mean gain."""
    from ..activations import activation
    from ..theory.finite_width import normalized_kurtosis_slope

    where: dict[str, int] = {}
    for b_i, b in enumerate(mm.blocks):
        if b.residual and b.layers:
            for name in b.layers:
                where[name] = b_i
    plain_src = "leading order: nu / n_eff per layer, norms reset, residual_block_kurtosis, weight kurtosis"
    out: list[tuple[float | None, str]] = []
    kappa: float | None = 0.0
    trunk: float | None = 0.0
    carry: float | None = 0.0  # the trunk's fluctuation seen inside a branch (shown, not used by the block formula)
    why = ""
    for i, la in enumerate(mm.layers):
        b_i = where.get(la.name)
        first = b_i is not None and la.name == mm.blocks[b_i].layers[0]
        inside = b_i is not None and not first
        if first:
            trunk = kappa
        reset = la.norm_in in ("layer", "rms") and la.kind == "linear" and not la.first
        if reset:
            act = la.in_act if la.act_after_norm else activation("linear")
            try:
                kappa = None if act is None or la.unknown_after_norm else normalized_kurtosis_slope(act, la.norm_in)
            except SphericalCowError:
                kappa = None
            kappa = None if kappa is None else kappa / la.fan_in
            why = "" if kappa is not None else "no prediction: an unidentified activation after a normalisation"
            if inside:
                carry = 0.0
        elif la.norm_in not in (None, "batch") and not la.first:
            kappa, why = None, f"no prediction: a normalisation not over a linear layer's fan-in ({la.kind} layer)"
        unmodelled = la.kind in ("attention", "other")
        if la.kind == "attention":
            why = "no prediction: attention is not modelled"
        elif la.kind == "other" and la.module_type == "ParametrizationList":
            why = "no prediction: a parametrized weight (weight_norm, spectral_norm) is not mapped to its layer"
        elif la.kind == "other":
            why = f"no prediction: a {la.module_type or 'custom'} layer is not modelled"
        if kappa is not None:
            kappa *= _bias_dilution(ms, i)
        row = kappa if not inside else (None if kappa is None or carry is None else kappa + carry)
        term = terms[i]
        if unmodelled or row is None:
            out.append((None, why or "no prediction (activation outside the universality classes)"))
        elif term.value is None:
            out.append((None, term.why))
        else:
            out.append((row * (1.0 + term.mix) + term.value, plain_src))
        if la.readout:
            continue
        if not term.iid:
            kappa, why = None, _NOT_IID
            continue
        if first:
            carry = 0.0 if reset else kappa
            kappa = 0.0
        if unmodelled:
            kappa = None
            continue
        nu = _layer_nu(la, nu_dom)
        if nu is not None and term.value is not None:
            nu = _nu_next(la, nu, term.value - 3.0 * term.mix, term.mix)
        last = b_i is not None and la.name == mm.blocks[b_i].layers[-1]
        if not last:
            kappa = None if kappa is None or nu is None else kappa + nu / n_eff[la.name]
            continue
        gain = float(np.mean(ms.gain[:, b_i]))
        ok = np.isfinite(ms.chi_par[:, b_i])
        a = float(np.mean(ms.chi_par[ok, b_i])) / gain if ok.any() and gain > 0 else 1.0
        if trunk is None or kappa is None or not (math.isfinite(gain) and math.isfinite(a)):
            kappa = None
        else:
            kappa = residual_block_kurtosis(trunk, max(gain - 1.0, 0.0), a, kappa, n_eff[la.name])
    return out


def _phase(g: float) -> str:
    """Label from g = L / xi_late (signed): critical when |g| <= 2, "mildly ordered"/"mildly chaotic" when
    2 < |g| <= DEPTH_SCALE_FACTOR (trainable), else ordered (g < 0) or chaotic (g > 0). A power law l^(-p) over the
    deeper half gives |g| ~ 2 p log 2 (p_perp = 1 for tanh at criticality, PDLT §5.3: 1.39); an exponential chi^l
    gives |g| = L |log chi|, growing with depth."""
    if not math.isfinite(g):
        return "undetermined"
    if abs(g) <= 2.0:
        return "critical"
    side = "ordered" if g < 0 else "chaotic"
    return f"mildly {side}" if abs(g) <= DEPTH_SCALE_FACTOR else side


def _eff_width(mm: ModelMap, i: int) -> int:
    """Width entering the aspect ratio for weight layer i: its output units, or for a convolution read by a
    conv/dense layer that layer's fan-in (channels x kernel size; see the module docstring)."""
    la = mm.layers[i]
    if la.kind == "conv" and i + 1 < len(mm.layers) and mm.layers[i + 1].kind in ("conv", "linear"):
        return max(la.width, mm.layers[i + 1].fan_in)
    return la.width


def summarize(mm: ModelMap, ms: Measurements, x0: Any) -> dict[str, Any]:
    """Tables (as row dicts) and the scalar summaries the verdicts use."""
    from ..theory.criticality import chi_parallel, chi_perpendicular
    from ..theory.finite_width import finite_width, universal_kurtosis_slope

    probes_rows = []
    for i, (name, where) in enumerate(mm.probes):
        k = _ci(ms.K[:, i])
        c = _ci(ms.corr[:, i])
        probes_rows.append({"probe": f"{name} ({where})", "K": k[0], "K_lo": k[1], "K_hi": k[2], "correlation": c[0]})
    fw = None
    if mm.mlp is not None:
        try:
            fw = finite_width(mm.mlp, x0)
        except SphericalCowError:
            fw = None
    block_rows = []
    for b_i, b in enumerate(mm.blocks):
        cp = _ci(ms.chi_perp[:, b_i])
        ca = _ci(ms.chi_par[:, b_i])
        row = {
            "block": b.name,
            "residual": b.residual,
            "chi_perp": cp[0],
            "chi_perp_lo": cp[1],
            "chi_perp_hi": cp[2],
            "chi_par": ca[0],
            "chi_par_lo": ca[1],
            "chi_par_hi": ca[2],
            "gain": float(np.mean(ms.gain[:, b_i])),
            "chi_perp_theory": None,
            "chi_par_theory": None,
        }
        if fw is not None:  # block l maps z^{(l)} to z^{(l+1)}: PDLT susceptibilities at K^{(l)}
            act, cw = mm.mlp.activation, mm.mlp.cw
            row["chi_perp_theory"] = float(chi_perpendicular(act, cw, float(fw.K[b_i])))
            row["chi_par_theory"] = float(chi_parallel(act, cw, float(fw.K[b_i])))
        block_rows.append(row)

    # finite width: aspect ratio and kurtosis (measured vs predicted)
    hidden = [la for la in mm.layers[:-1] if la.kind != "embedding"]
    n_eff = {la.name: _eff_width(mm, i) for i, la in enumerate(mm.layers)}
    aspect = float(sum(1.0 / la.width for la in hidden))
    r_plain = float(sum(1.0 / n_eff[la.name] for la in hidden))
    dom = mm.mlp.activation if mm.mlp is not None else mm.dominant_activation
    nu, cls = None, None
    if dom is not None:
        try:
            cls, nu = universal_kurtosis_slope(dom)
        except SphericalCowError:
            nu = None
    terms = [_weight_term(mm, ms, i) for i in range(len(mm.layers))]
    preds = _predicted_kurtosis(mm, ms, n_eff, nu, terms) if fw is None else None
    kurt_rows = []
    r_before = 0.0
    dependent = False
    for i, la in enumerate(mm.layers):
        km, kse = _kurtosis(ms.kurt_m2[i], ms.kurt_m4[i])
        if preds is not None:
            pred, src = preds[i]
        else:
            term = terms[i]
            if dependent:
                pred, src = None, _NOT_IID
            elif term.value is None:
                pred, src = None, term.why
            else:
                pred, src = float(fw.kurtosis[i]) + term.value, "finite_width (matched MLP) + weight kurtosis"
            dependent = dependent or not term.iid
        kurt_rows.append(
            {
                "layer": la.name,
                "r": r_before,
                "kurtosis": km,
                "kurtosis_se": kse,
                "predicted": pred,
                "weight_term": terms[i].value,
                "source": src,
            }
        )
        if la in hidden:
            r_before += 1.0 / n_eff[la.name]
    kappa_pred = kurt_rows[-1]["predicted"] if kurt_rows else None
    kappa_meas = (kurt_rows[-1]["kurtosis"], kurt_rows[-1]["kurtosis_se"]) if kurt_rows else (math.nan, math.nan)
    # effective aspect ratio: the plain sum 1/n_eff for an MLP; otherwise the sum a plain network of the dominant
    # activation would need for the same predicted kurtosis (kappa_pred / nu)
    r_eff = r_plain if fw is not None or kappa_pred is None or not nu else float(kappa_pred) / nu

    # gradients per weight layer, per fan-in (the standard-parametrization learning-rate scale)
    grad_rows = []
    for i, la in enumerate(mm.layers):
        g = _ci(ms.grad[:, i])
        gb = _ci(ms.grad_bias[:, i])
        gy = _ci(ms.grad_body[:, i])
        grad_rows.append(
            {
                "layer": la.name,
                "kind": la.kind,
                "fan_in": la.fan_in,
                "readout": la.readout,
                "grad_sq": g[0],
                "grad_sq_per_fan_in": g[0] / la.fan_in,
                "bias_grad_sq": gb[0],
                "body_grad_sq_per_fan_in": gy[0] / la.fan_in,
            }
        )

    plain = [i for i, b in enumerate(mm.blocks) if not b.residual]
    resid = [i for i, b in enumerate(mm.blocks) if b.residual]

    def chain_growth(idx: list[int]) -> tuple[float, float]:
        """L times the mean log chi_perp and log K-gain over the deeper half of the chain (L / xi_late, signed)."""
        if not idx:
            return float("nan"), float("nan")
        late = idx[len(idx) // 2 :]
        lp = np.log([max(block_rows[i]["chi_perp"], 1e-300) for i in late])
        lk = np.log([max(float(np.mean(ms.gain[:, i])), 1e-300) for i in late])
        return float(len(idx) * lp.mean()), float(len(idx) * lk.mean())

    g_perp, g_k = chain_growth(plain)
    r_perp, r_k = chain_growth(resid)
    return {
        "probes": probes_rows,
        "blocks": block_rows,
        "kurtosis": kurt_rows,
        "gradients": grad_rows,
        "aspect_ratio": aspect,
        "aspect_ratio_effective": r_eff,
        "kappa_pred": kappa_pred,
        "kappa_measured": kappa_meas[0],
        "kappa_measured_se": kappa_meas[1],
        "post_norm": any(b.post_norm for b in mm.blocks),
        "nu": nu,
        "universality": cls,
        "log_gain_perp": g_perp,
        "log_growth_K": g_k,
        "n_plain_blocks": len(plain),
        "residual_log_gain_perp": r_perp,
        "residual_log_growth_K": r_k,
        "n_residual_blocks": len(resid),
        "phase": _phase(g_perp),
        "depth_scale": (len(plain) / abs(g_perp)) if plain and g_perp != 0 else float("inf"),
        "finite_width": fw,
    }


def verdicts(mm: ModelMap, s: dict[str, Any], extra: dict[str, Any]) -> list[DoctorVerdict]:
    """The verdict list; ``extra`` holds the data-dependent measurements (possibly empty)."""
    out: list[DoctorVerdict] = []
    T = DEPTH_SCALE_FACTOR
    aspect = _aspect_verdict(mm, s)
    kappa_bad = aspect.passed is False

    # 1. criticality of the plain (non-residual) chain
    init_rows = _init_rows(mm)
    if s["n_plain_blocks"] == 0:
        out.append(
            DoctorVerdict(
                "criticality",
                "signal propagation at initialisation",
                None,
                "no plain (non-residual) blocks: see the residual verdict"
                if s["n_residual_blocks"]
                else "fewer than two hidden weight layers before the readout: no depth to propagate through",
            )
        )
    else:
        g, gk, L = s["log_gain_perp"], s["log_growth_K"], s["n_plain_blocks"]
        ok = abs(g) <= T and abs(gk) <= T
        xi = s["depth_scale"]
        phase = s["phase"]
        words = {
            "critical": "critical: perturbations keep their size through the network",
            "mildly ordered": f"mildly ordered (within the trainable range L < {T:g} xi): perturbations shrink slowly",
            "mildly chaotic": f"mildly chaotic (within the trainable range L < {T:g} xi): perturbations grow slowly",
            "ordered": "ordered: nearby inputs collapse onto each other and gradients vanish",
            "chaotic": "chaotic: nearby inputs are torn apart and gradients explode",
        }.get(phase, phase)
        if not ok and phase in ("critical", "mildly ordered", "mildly chaotic"):  # failed on the second moment
            words = f"{phase} for perturbations, but the second moment {'grows' if gk > 0 else 'decays'} too fast"
        msg = (
            f"phase {words}; over {L} blocks, L/xi = {g:.3g} for perturbations (depth scale xi = {xi:.3g} blocks) "
            f"and {gk:.3g} for the second moment"
        )
        if not ok:
            msg += f"; the depth exceeds {T:g} depth scales"
        fix_init = _fix_text(init_rows) if not ok else ""
        out.append(
            DoctorVerdict(
                "criticality",
                "signal propagation at initialisation",
                ok,
                msg,
                {"L_over_xi_perp": g, "L_over_xi_K": gk, "blocks": L, "xi": xi, "threshold": T},
                "chi_perp = C_W <sigma'^2>, chi_par = dK'/dK (PDLT eqs. 5.9-5.10); trainable when L < 6 xi "
                "(Schoenholz et al. 2017)",
                fix_init,
            )
        )

    # 2. residual stack
    if s["n_residual_blocks"]:
        g, gk, B = s["residual_log_gain_perp"], s["residual_log_growth_K"], s["n_residual_blocks"]
        ok = abs(g) <= T and abs(gk) <= T
        out.append(
            DoctorVerdict(
                "residual",
                "residual stack scaling",
                ok,
                f"{B} residual blocks: L/xi = {gk:.3g} for the second moment and {g:.3g} for perturbations"
                + ("" if ok else f" (beyond exp({T:g}): each branch adds variance that compounds with depth)"),
                {"blocks": B, "L_over_xi_K": gk, "L_over_xi_perp": g, "threshold": T},
                "z + f(z) with Var f = c Var z grows as (1 + c)^B; a branch multiplier 1/sqrt(B) bounds it by e^c",
                "" if ok else f"multiply each residual branch by 1/sqrt({B}) = {1 / math.sqrt(B):.3g}",
            )
        )

    # 3. gradients (backpropagated from the readout's input; the readout itself is left out)
    rows = [r for r in s["gradients"] if r["kind"] in ("linear", "conv", "attention") and not r["readout"]]
    vals = [r["body_grad_sq_per_fan_in"] for r in rows]
    if len(vals) >= 2 and all(v > 0 and math.isfinite(v) for v in vals):
        lo_i, hi_i = int(np.argmin(vals)), int(np.argmax(vals))
        spread = math.log(vals[hi_i] / vals[lo_i])
        direction = "exploding toward the input" if hi_i < lo_i else "vanishing toward the input"
        ok: bool | None = spread <= T
        msg = (
            f"per-layer squared weight gradient / fan-in (backpropagated from the readout's input) spans "
            f"exp({spread:.3g}) from {rows[lo_i]['layer']} to {rows[hi_i]['layer']}"
            + ("" if spread <= T else f": {direction}")
        )
        if kappa_bad:
            ok = None
            msg += "; not graded: at this aspect ratio per-layer gradients fluctuate O(1) between draws"
        out.append(
            DoctorVerdict(
                "gradients",
                "gradient norms per layer",
                ok,
                msg,
                {"log_spread": spread, "threshold": T},
                "weight gradient of layer l / fan-in ~ its NTK contribution C_W s^{(l-1)} prod_{k>=l} chi_perp^{(k)} "
                "(PDLT §9.4): forward and backward signal together",
                ""
                if ok is not False
                else "re-initialise at criticality; or per-layer learning rates (sc.learning_rates)",
            )
        )
    else:
        out.append(
            DoctorVerdict(
                "gradients",
                "gradient norms per layer",
                None,
                "fewer than two hidden layers with non-zero gradients (the readout is not counted)",
            )
        )

    # 4. aspect ratio
    out.append(aspect)

    # 5. data-dependent
    if "sharpness" in extra:
        lam, lr = extra["sharpness"], extra.get("lr")
        if lr is not None:
            ok = lam < 2.0 / lr
            out.append(
                DoctorVerdict(
                    "sharpness",
                    "Hessian sharpness vs learning rate",
                    ok,
                    f"lambda_max = {lam:.4g} vs 2/lr = {2 / lr:.4g}"
                    + ("" if ok else ": gradient descent is unstable along the top direction"),
                    {"lambda_max": lam, "two_over_lr": 2.0 / lr},
                    "GD on a quadratic is stable iff lr < 2/lambda_max (Cohen et al. 2021)",
                    "" if ok else f"lower the learning rate below {2 / lam:.3g}",
                )
            )
    if "ntk_eigenvalues" in extra:
        ev = extra["ntk_eigenvalues"]
        cond = extra["ntk_condition"]
        out.append(
            DoctorVerdict(
                "ntk",
                "empirical NTK spectrum",
                None,
                f"NTK on {len(ev)} examples: lambda_max = {max(ev):.4g}, condition number {cond:.4g}",
                {"lambda_max": max(ev), "condition": cond},
                "the linearised model learns eigendirection i at rate lr lambda_i (Jacot et al. 2018)",
            )
        )
    if extra.get("weight_alpha"):
        al = {k: v for k, v in extra["weight_alpha"].items() if v is not None and math.isfinite(v)}
        if al:
            out.append(
                DoctorVerdict(
                    "weight_spectra",
                    "weight spectra (power-law alpha)",
                    None,
                    "alpha per layer: " + ", ".join(f"{k} {v:.3g}" for k, v in al.items()),
                    {"alpha": al},
                    "heavy-tailed self-regularisation: alpha in [2, 6] typical of trained layers "
                    "(Martin & Mahoney 2021)",
                )
            )
    if "learning_rates" in extra:
        out.append(
            DoctorVerdict(
                "learning_rates",
                "per-layer learning rates",
                None,
                "learning-rate equivalence principle rates (standard parametrization): "
                + ", ".join(f"{n} {w:.3g}" for n, w in extra["learning_rates"].items()),
                {"weight_lr": extra["learning_rates"]},
                "equal per-layer NTK contributions (PDLT §9.4; sc.learning_rates)",
                "use these per-layer rates (LearningRates.param_groups for a sphericalcow MLP)",
            )
        )
    return out


def _aspect_verdict(mm: ModelMap, s: dict[str, Any]) -> DoctorVerdict:
    """Finite-width verdict (see the module docstring for the grading rule)."""
    kp = s["kappa_pred"]
    r = s["aspect_ratio_effective"]
    hidden = [la for la in mm.layers[:-1] if la.kind != "embedding"]
    n_hidden = len(hidden)
    title = "finite-width corrections"
    if s.get("post_norm"):
        return DoctorVerdict(
            "aspect_ratio",
            title,
            None,
            "not applicable: post-norm residual blocks (normalisation after the sum) reset the signal's scale each "
            "block, so the residual finite-width estimate does not apply",
            {"aspect_ratio": s["aspect_ratio"]},
        )
    if kp is None:
        return DoctorVerdict(
            "aspect_ratio",
            title,
            None,
            f"effective aspect ratio sum 1/width = {r:.3g}; no kurtosis prediction for this activation",
            {"aspect_ratio": r},
        )
    km, kse = s.get("kappa_measured", math.nan), s.get("kappa_measured_se", math.nan)
    numbers = {
        "aspect_ratio": r,
        "kappa_predicted": kp,
        "kappa_measured": km,
        "kappa_measured_se": kse,
        "threshold": KAPPA_MAX,
        "nu": s["nu"],
    }
    msg = f"effective aspect ratio r = sum 1/width = {r:.3g} over {n_hidden} hidden layers; "
    if mm.mlp is not None or not (math.isfinite(km) and math.isfinite(kse)):
        ok = kp <= KAPPA_MAX
        msg += f"predicted output excess kurtosis {kp:.3g}"
    else:
        meas = f"measured output excess kurtosis {km:.3g} +- {2 * kse:.2g} (95%), predicted ~{kp:.3g} (approximate)"
        if km - 2 * kse > KAPPA_MAX:
            ok, how = False, "graded on the measurement"
        elif km + 2 * kse < KAPPA_MAX:
            ok, how = True, "graded on the measurement"
        else:
            ok, how = kp <= KAPPA_MAX, "the measurement cannot decide: graded on the prediction"
        msg += f"{meas}; {how}"
    if not ok:
        msg += f"; above {KAPPA_MAX:g}: the network is far from its infinite-width behaviour"
    fix = ""
    if not ok and kp > 0 and n_hidden:
        depth = max(1, math.floor(n_hidden * KAPPA_TARGET / max(kp, 1e-300)))
        if mm.mlp is not None:
            width = math.ceil(kp / KAPPA_TARGET * n_hidden / r) if r > 0 else None
            fix = (
                f"widen the hidden layers to >= {width} units (or cut depth to ~{depth} layers) "
                f"so kappa <= {KAPPA_TARGET:g}"
            )
        else:
            fix = (
                f"advice (not applied by --fix): more units/channels per layer or fewer layers (~{depth}), so that "
                f"nu sum 1/width <= {KAPPA_TARGET:g}"
            )
    return DoctorVerdict(
        "aspect_ratio",
        title,
        ok,
        msg,
        numbers,
        "kappa = 3V/(nK^2) ~ nu L/n (PDLT §5.4; sc.finite_width)",
        fix,
    )


def cw_off(row: dict[str, Any]) -> bool:
    """Whether a layer's measured C_W is off its critical value by more than sampling noise: the sample C_W of
    numel i.i.d. Gaussian weights has relative SD sqrt(2 / numel); allowed: 10% + 4 SD."""
    tol = 0.1 + 4.0 * math.sqrt(2.0 / max(row["fan_in"] * row["width"], 1))
    return abs(row["cw"] / row["cw_critical"] - 1.0) > tol


def _fix_text(rows: list[dict[str, Any]]) -> str:
    """Re-initialisation advice for the non-readout dense/conv layers whose C_W is off its critical value, plus a
    note for layers whose activation has no critical initialisation or could not be identified."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    no_crit: dict[str, list[str]] = {}
    for r in rows:
        if r["kind"] not in ("linear", "conv") or r["readout"]:
            continue
        if not math.isfinite(r["cw_critical"]):
            no_crit.setdefault(r["no_critical"], []).append(r["layer"])
        elif cw_off(r):
            groups.setdefault((r["activation"], r["cw_critical"]), []).append(r)
    parts = []
    for (act, cwc), rs in groups.items():
        names = rs[0]["layer"] if len(rs) == 1 else f"{rs[0]['layer']} .. {rs[-1]['layer']} ({len(rs)} layers)"
        lo, hi = min(r["cw"] for r in rs), max(r["cw"] for r in rs)
        cw = f"{lo:.3g}" if math.isclose(lo, hi, rel_tol=0.05) else f"{lo:.3g}-{hi:.3g}"
        text = f"{names}: C_W {cw} -> {cwc:.3g} (std sqrt({cwc:.3g}/fan_in), {act} input)"
        if cwc > SATURATION_CW:
            text += (
                f" (caveat: C_W {cwc:.3g} means large weights and saturated {act} units; an activation of the K*=0 "
                "class such as tanh, critical at C_W = 1, is usually the better fix)"
            )
        parts.append(text)
    if parts:
        parts[0] = "re-initialise at criticality (sc.critical_init): " + parts[0]
    for why, names in no_crit.items():
        parts.append(f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''}: {why}")
    return "; ".join(parts)


def _init_rows(mm: ModelMap) -> list[dict[str, Any]]:
    rows = []
    for la in mm.layers:
        act = la.init_act
        cw_c, cb_c, std_c = float("nan"), float("nan"), float("nan")
        why = ""
        if la.kind in ("linear", "conv"):
            if act is None:
                why = (
                    f"{la.unknown_act or la.out_unknown} is a nonlinearity outside the activation registry: "
                    "no critical C_W is claimed (choose one for that activation)"
                )
            else:
                try:
                    cw_c, cb_c, std_c = critical_std(act, la.fan_in)
                except SphericalCowError:
                    why = (
                        f"no critical initialisation exists for {act.spec} (sc.critical_init finds no C_W, C_b with "
                        "chi_par = chi_perp = 1 for K* in [1e-6, 1e3]; PDLT §5): keep the depth within a few depth "
                        "scales or use an activation that has one (tanh, ReLU, GELU)"
                    )
        rows.append(
            {
                "layer": la.name,
                "kind": la.kind,
                "fan_in": la.fan_in,
                "width": la.width,
                "activation": act.spec if act is not None else f"unknown ({la.unknown_act or la.out_unknown})",
                "readout": la.readout,
                "cw": la.cw,
                "cb": la.cb,
                "std": math.sqrt(la.cw / la.fan_in),
                "cw_critical": cw_c,
                "cb_critical": cb_c,
                "std_critical": std_c,
                "no_critical": why,
            }
        )
    return rows
