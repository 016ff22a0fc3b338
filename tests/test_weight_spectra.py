"""Weight spectra: MP theory and fits on random matrices, BBP spikes, power-law MLE with KS-optimal xmin, per-layer
ESDs of any module (dense/conv conventions), and no mutation of the model."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy import stats as sps

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure.weight_spectra import (
    COLUMNS,
    fit_marchenko_pastur,
    fit_power_law,
    layer_esd,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
    plot_weight_spectra,
    tracy_widom_quantile,
    tw_edge,
    weight_spectra,
)


def esd(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W / N by numpy's SVD (independent of the module's torch route)."""
    n = max(w.shape)
    return np.sort(np.linalg.svd(w, compute_uv=False) ** 2 / n)


# ------------------------------------------------------------------------------------------------ MP theory
@pytest.mark.parametrize("q", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("sigma2", [1.0, 0.3])
def test_mp_density_moments_match_closed_forms(q, sigma2):
    lo, hi = marchenko_pastur_edges(q, sigma2)
    assert lo == pytest.approx(sigma2 * (1 - q**-0.5) ** 2, rel=1e-14, abs=1e-15)
    assert hi == pytest.approx(sigma2 * (1 + q**-0.5) ** 2, rel=1e-14)
    opts = {"limit": 200, "epsabs": 1e-11, "epsrel": 1e-11}
    pts = [lo, hi]
    mass = integrate.quad(lambda x: marchenko_pastur_pdf(x, q, sigma2), *pts, **opts)[0]
    m1 = integrate.quad(lambda x: x * marchenko_pastur_pdf(x, q, sigma2), *pts, **opts)[0]
    m2 = integrate.quad(lambda x: x * x * marchenko_pastur_pdf(x, q, sigma2), *pts, **opts)[0]
    # Bai & Silverstein 2010, Lemma 3.1 with y = 1/Q: moments sigma^2, sigma^4 (1 + y)
    assert mass == pytest.approx(1.0, abs=1e-7)
    assert m1 == pytest.approx(sigma2, rel=1e-7)
    assert m2 == pytest.approx(sigma2**2 * (1 + 1 / q), rel=1e-7)
    assert marchenko_pastur_pdf(np.array([lo * 0.5, hi * 1.01]), q, sigma2).tolist() == [0.0, 0.0]


def test_tracy_widom_quantiles_match_johnstone_table_and_edge_tends_to_mp():
    # Johnstone 2001, Table 1 (TW1 percentiles)
    for level, published in ((0.90, 0.4501), (0.95, 0.9793), (0.99, 2.0234)):
        assert tracy_widom_quantile(level) == pytest.approx(published, abs=0.015)
    assert tracy_widom_quantile(0.5) == pytest.approx(-1.2686, abs=0.01)
    # the TW edge converges to the MP edge from above as N, M grow at fixed Q = 4
    gaps = [tw_edge(4 * m, m, 1.0, level=0.99) - marchenko_pastur_edges(4.0)[1] for m in (50, 500, 5000, 50000)]
    assert all(g > 0 for g in gaps)
    # the Tracy-Widom scale shrinks as N^(-2/3): a factor 10^(2/3) = 4.64 per decade of N and M
    ratios = [a / b for a, b in itertools.pairwise(gaps)]
    assert all(4.0 < r < 5.0 for r in ratios), ratios


@pytest.mark.parametrize(("n", "m"), [(120, 60), (200, 50)])
def test_tw_edge_exceedance_matches_its_level_by_monte_carlo(n, m):
    """Independent route: the largest eigenvalue of white Wishart matrices exceeds the 90% TW edge ~10% of the time."""
    rng = np.random.default_rng(11)
    s = 400
    edge = tw_edge(n, m, 1.0, level=0.90)
    hits = sum(esd(rng.standard_normal((n, m)))[-1] > edge for _ in range(s))
    lo, hi = sps.binom.ppf([0.0005, 0.9995], s, 0.10)
    assert lo <= hits <= hi, hits


# --------------------------------------------------------------------------------------------------- MP fits
@pytest.mark.parametrize(("n", "m"), [(300, 300), (600, 300), (1200, 300), (2000, 200)])
def test_mp_fit_on_random_gaussian_matrices(n, m):
    rng = np.random.default_rng(n + m)
    sigma2 = 0.37
    w = rng.normal(scale=math.sqrt(sigma2), size=(n, m))
    lam = esd(w)
    fit = fit_marchenko_pastur(lam, n, m)
    # sigma2 = ||W||_F^2 / (N M): relative standard error sqrt(2 / (N M))
    assert abs(fit.sigma2 / sigma2 - 1) < 5 * math.sqrt(2 / (n * m))
    assert fit.lambda_plus == pytest.approx(sigma2 * (1 + math.sqrt(m / n)) ** 2, rel=1e-2)
    assert fit.n_spikes == 0
    # largest eigenvalue within a few Tracy-Widom scales of the MP edge (Johnstone's scale, sigma_NM / N)
    a = math.sqrt(n - 1) + math.sqrt(m)
    tw_scale = sigma2 * a * (1 / math.sqrt(n - 1) + 1 / math.sqrt(m)) ** (1 / 3) / n
    assert abs(lam[-1] - fit.lambda_plus) < 6 * tw_scale
    # the ESD against the MP CDF (quadrature of the density) at 19 quantiles: Kolmogorov distance O(1/M)
    q = n / m
    lo, _ = marchenko_pastur_edges(q, sigma2)
    points = np.quantile(lam, np.linspace(0.05, 0.95, 19))
    cdf = np.array([integrate.quad(lambda x: marchenko_pastur_pdf(x, q, sigma2), lo, v, limit=200)[0] for v in points])
    ecdf = np.searchsorted(lam, points, side="right") / m
    assert np.max(np.abs(ecdf - cdf)) < 10 / m


def test_mp_false_alarm_rate_is_at_most_its_level():
    rng = np.random.default_rng(5)
    s, level = 300, 0.95
    alarms = sum(fit_marchenko_pastur(esd(rng.standard_normal((160, 80))), 160, 80, level=level).n_spikes > 0
                 for _ in range(s))  # fmt: skip
    # plug-in sigma2 (the mean, correlated with the largest eigenvalue) makes the edge conservative, never liberal
    assert alarms <= sps.binom.ppf(0.999, s, 1 - level), alarms


def spiked(n, m, ells, rng):
    """Rows ~ N(0, I + sum_i ell_i e_i e_i^T) (Johnstone's spiked covariance model)."""
    z = rng.standard_normal((n, m))
    z[:, : len(ells)] *= np.sqrt(1 + np.asarray(ells))
    return z


def test_bbp_planted_spikes_above_threshold_found_below_not():
    """BBP (Baik, Ben Arous & Peche 2005; Paul 2007): with gamma = M/N, a population spike ell > sqrt(gamma) gives a
    sample eigenvalue (1 + ell)(1 + gamma/ell) outside the bulk, with Gaussian fluctuations of variance
    2 (1 + ell)^2 (1 - gamma/ell^2) / N; a spike ell < sqrt(gamma) sticks to the edge."""
    n, m = 1600, 400
    gamma = m / n  # sqrt(gamma) = 0.5
    rng = np.random.default_rng(3)
    ells = [1.5, 3.0]
    found = []
    for _ in range(5):
        fit = fit_marchenko_pastur(esd(spiked(n, m, ells, rng)), n, m)
        assert fit.n_spikes == 2
        assert fit.sigma2 == pytest.approx(1.0, abs=5 * math.sqrt(2 / (n * m)) + 4 / m)
        found.append(np.sort(fit.spikes))
    found = np.array(found)
    for i, ell in enumerate(sorted(ells)):
        where = (1 + ell) * (1 + gamma / ell)
        sd = math.sqrt(2 * (1 + ell) ** 2 * (1 - gamma / ell**2) / n)
        assert abs(found[:, i].mean() - where) < 4 * sd / math.sqrt(5) + 3 / n * where
    misses = 0
    for _ in range(20):
        fit = fit_marchenko_pastur(esd(spiked(n, m, [0.2, 0.3], rng)), n, m)  # both below sqrt(gamma) = 0.5
        misses += fit.n_spikes
    assert misses <= 2  # at most the false-alarm rate (1%) allows, not 40 detections


# -------------------------------------------------------------------------------------------------- power law
def pareto(n, alpha, xmin, rng):
    return xmin * (1 - rng.random(n)) ** (-1 / (alpha - 1))


def test_power_law_mle_with_known_xmin_covers_truth_at_nominal_rate():
    rng = np.random.default_rng(0)
    alpha, s = 2.5, 300
    hits = 0
    for _ in range(s):
        x = pareto(400, alpha, 1.0, rng)
        fit = fit_power_law(x, xmin=1.0)
        # closed form of the MLE (Clauset et al. 2009, Eq. 3.1)
        assert fit.alpha == pytest.approx(1 + x.size / np.log(x).sum(), rel=1e-12)
        hits += abs(fit.alpha - alpha) <= 1.959964 * fit.alpha_se
    lo, hi = sps.binom.ppf([0.0005, 0.9995], s, 0.95)
    assert lo <= hits <= hi, hits


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_ks_scan_recovers_planted_xmin_and_alpha(alpha):
    """Body below xmin (density 3 x^2 / xmin^3 on [0, xmin], 60% of the mass) and a Pareto tail above it. The KS
    estimate of xmin scatters (upwards when a heavy tail's top happens to fit better alone, downwards when the body's
    density at xmin nearly continues the tail's, alpha = 4.5 here): its median is checked, and alpha's z-scores."""
    rng = np.random.default_rng(int(alpha * 10))
    xmin, n, reps = 2.0, 3000, 8
    z, found = [], []
    for _ in range(reps):
        body = xmin * rng.random(int(0.6 * n)) ** (1 / 3)
        x = np.concatenate([body, pareto(n - body.size, alpha, xmin, rng)])
        fit = fit_power_law(x)
        found.append(fit.xmin)
        z.append((fit.alpha - alpha) / fit.alpha_se)
    z = np.array(z)
    assert abs(math.log(np.median(found) / xmin)) < 0.1, found
    assert np.all(np.abs(z) < 4) and abs(z.mean()) < 3 / math.sqrt(reps), z


@pytest.mark.parametrize("ks", ["two-sided", "lower"])
def test_ks_xmin_selection_matches_brute_force_scan(ks):
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.lognormal(0, 0.5, 200), pareto(150, 2.7, 2.5, rng)])
    fit = fit_power_law(x, min_tail=5, ks=ks)
    xs = np.sort(x)
    best = (np.inf, None, None)
    for i in range(xs.size - 5 + 1):
        tail = xs[i:]
        a = 1 + tail.size / np.sum(np.log(tail / xs[i]))
        cdf = lambda v, a=a, x0=xs[i]: 1 - (v / x0) ** (1 - a)  # noqa: E731
        if ks == "two-sided":
            d = sps.kstest(tail, cdf).statistic
        else:
            d = np.max(np.abs(cdf(tail) - np.arange(tail.size) / tail.size))
        if d < best[0]:
            best = (d, xs[i], a)
    assert fit.xmin == best[1]
    assert fit.alpha == pytest.approx(best[2], rel=1e-12)
    assert fit.ks == pytest.approx(best[0], abs=1e-12)
    assert fit.alpha_se == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail), rel=1e-12)


@pytest.mark.slow
def test_long_run_coverage_and_false_alarms():
    """Longer versions of the default checks: CI coverage with known xmin over 2000 draws, the MP false-alarm rate
    over 2000 matrices (plug-in sigma2: at most the nominal rate)."""
    rng = np.random.default_rng(77)
    s = 2000
    hits = sum(abs(fit_power_law(pareto(300, 3.0, 1.0, rng), xmin=1.0).alpha - 3.0) <= 1.959964 * 2.0 / math.sqrt(300)
               for _ in range(s))  # fmt: skip
    lo, hi = sps.binom.ppf([0.0005, 0.9995], s, 0.95)
    # SE from the true alpha here: (alpha - 1)/sqrt(n) is the MLE's asymptotic sd, so the rate is nominal up to O(1/n)
    assert lo <= hits <= hi, hits
    alarms = sum(fit_marchenko_pastur(esd(rng.standard_normal((200, 100))), 200, 100, level=0.9).n_spikes > 0
                 for _ in range(s))  # fmt: skip
    assert alarms <= sps.binom.ppf(0.999, s, 0.1), alarms


def test_max_candidates_scans_a_subset_and_never_beats_the_full_scan():
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.lognormal(0, 0.5, 800), pareto(400, 2.7, 2.5, rng)])
    full = fit_power_law(x)
    assert fit_power_law(x, max_candidates=5000) == full
    sub = fit_power_law(x, max_candidates=40)
    assert sub.xmin in x and sub.ks >= full.ks


def test_power_law_bad_input():
    with pytest.raises(SphericalCowError, match="min_tail=10"):
        fit_power_law([1.0, 2.0, 3.0])
    with pytest.raises(SphericalCowError, match="NaN"):
        fit_power_law([1.0, np.nan] * 10)
    with pytest.raises(SphericalCowError, match="xmin=-1"):
        fit_power_law(np.arange(1, 30.0), xmin=-1)
    with pytest.raises(SphericalCowError, match="ks='both'"):
        fit_power_law(np.arange(1, 30.0), ks="both")
    with pytest.raises(SphericalCowError, match=r"Q=0\.5"):
        marchenko_pastur_pdf(1.0, 0.5)
    with pytest.raises(SphericalCowError, match="N=10 < M=20"):
        fit_marchenko_pastur(np.ones(20), 10, 20)


# ---------------------------------------------------------------------------------------------- per-layer ESDs
def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(16 * 6 * 6, 120),
        torch.nn.Linear(120, 40),
    )


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_layer_esd_conventions_against_numpy(method):
    torch.manual_seed(1)
    # gram: absolute error ~ M eps lambda_max; svd: relative to each eigenvalue
    tol = {"rtol": 1e-10, "atol": 0.0} if method == "svd" else {"rtol": 1e-9, "atol": 1e-13}
    conv = torch.nn.Conv2d(12, 20, (3, 2))
    w = conv.weight.detach().double().numpy()
    lam, n, m, k = layer_esd(conv.weight, kind="conv", conv="slices", method=method)
    ref = np.sort(np.concatenate([esd(w[:, :, i, j]) for i in range(3) for j in range(2)]))
    assert (n, m, k) == (20, 12, 6)
    np.testing.assert_allclose(lam, ref, **tol)
    lam, n, m, k = layer_esd(conv.weight, kind="conv", conv="reshape", method=method)
    assert (n, m, k) == (72, 20, 1)
    np.testing.assert_allclose(lam, esd(w.reshape(20, -1)), **tol)
    conv1 = torch.nn.Conv1d(7, 30, 4)
    lam, n, m, k = layer_esd(conv1.weight, kind="conv", method=method)
    ref = np.sort(np.concatenate([esd(conv1.weight.detach().double().numpy()[:, :, i]) for i in range(4)]))
    np.testing.assert_allclose(lam, ref, **tol)
    dense = torch.randn(300, 200)  # out > in: W^T W is in x in
    np.testing.assert_allclose(layer_esd(dense, method=method)[0], esd(dense.double().numpy()), **tol)


def test_transposed_and_grouped_convolutions_are_sliced_like_convolutions():
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(24, 40, 3), torch.nn.Conv2d(40, 60, 2, groups=2))
    ws = weight_spectra(model)
    assert [(sp.name, sp.kind, sp.n, sp.m, sp.n_matrices) for sp in ws.layers] == [
        ("0", "conv", 40, 24, 9),  # ConvTranspose weight (in, out, k, k): slices (24, 40)
        ("1", "conv", 60, 20, 4),  # groups=2: slices (out, in/groups) = (60, 20)
    ]
    w = model[0].weight.detach().double().numpy()
    ref = np.sort(np.concatenate([esd(w[:, :, i, j]) for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(ws["0"].eigenvalues, ref, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_rank_deficient_layer_zero_eigenvalues_are_left_out_of_the_tail_fit(method):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(200, 30, generator=g, dtype=torch.float64) @ torch.randn(30, 120, generator=g, dtype=torch.float64)
    sp = weight_spectra({"fc.weight": w}, method=method).layers[0]
    assert sp.eigenvalues.size == 120 and sp.power_law.n == 30  # rank 30: 90 numerically zero eigenvalues


def test_weight_spectra_of_a_module_table_norms_and_state_dict_agree():
    model = small_model()
    ws = weight_spectra(model)
    assert [sp.name for sp in ws.layers] == ["0", "5", "6"]
    assert [sp.kind for sp in ws.layers] == ["conv", "dense", "dense"]
    df = ws.to_frame()
    assert list(df.columns) == list(COLUMNS) and len(df) == 3
    for name in ("5", "6"):
        w = dict(model.named_modules())[name].weight.detach().double().numpy()
        sp = ws[name]
        two = np.linalg.norm(w, 2)
        assert sp.spectral_norm == pytest.approx(two, rel=1e-10)
        assert sp.frobenius_norm == pytest.approx(np.linalg.norm(w), rel=1e-10)
        assert sp.stable_rank == pytest.approx(np.linalg.norm(w) ** 2 / two**2, rel=1e-10)
        assert (sp.n, sp.m) == (max(w.shape), min(w.shape))
    sd = weight_spectra(model.state_dict())
    assert [sp.name for sp in sd.layers] == ["0", "5", "6"]  # BatchNorm's 1-D weight is not a matrix
    for a, b in zip(ws.layers, sd.layers, strict=True):
        np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
        assert a.power_law == b.power_law and a.mp.sigma2 == b.mp.sigma2
    only = weight_spectra(model, layers=["6"])
    assert [sp.name for sp in only.layers] == ["6"]
    fig = plot_weight_spectra(ws)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3


def test_weight_spectra_does_not_mutate_the_model():
    model = small_model()
    model.train()
    model[1].eval()  # a mixed mode must survive too
    model(torch.randn(2, 3, 8, 8))  # non-trivial running stats
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    versions = {k: v._version for k, v in model.state_dict(keep_vars=True).items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    modes = {k: m.training for k, m in model.named_modules()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    weight_spectra(model, conv="reshape")
    weight_spectra(model)
    after = model.state_dict(keep_vars=True)
    assert set(after) == set(before)
    for k, v in after.items():
        assert torch.equal(v.detach(), before[k]) and v.dtype == before[k].dtype and v._version == versions[k], k
    assert {k: p.grad for k, p in model.named_parameters()}.keys() == grads.keys()
    assert all(torch.equal(p.grad, grads[k]) for k, p in model.named_parameters())
    assert {k: m.training for k, m in model.named_modules()} == modes
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_weight_spectra_of_a_float64_model_reads_without_copy_and_still_does_not_mutate():
    model = torch.nn.Linear(50, 30).double()
    w0 = model.weight.detach().clone()
    v0 = model.weight._version
    sp = weight_spectra(model).layers[0]
    assert sp.name == "(root)" and sp.n_matrices == 1
    assert torch.equal(model.weight, w0) and model.weight._version == v0


def test_random_init_layers_look_marchenko_pastur():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(400, 800), torch.nn.Linear(800, 200))
    for sp in weight_spectra(model).layers:
        w = next(m for n, m in model.named_modules() if n == sp.name).weight.detach().double()
        # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), entry variance 1/(3 fan_in)
        assert sp.mp.sigma2 == pytest.approx(1 / (3 * w.shape[1]), rel=5 * math.sqrt(2 / w.numel()) + 0.01)
        assert sp.mp.n_spikes == 0


def test_weight_spectra_bad_input():
    model = small_model()
    with pytest.raises(SphericalCowError, match="unknown layer 'nope'"):
        weight_spectra(model, layers=["nope"])
    with pytest.raises(SphericalCowError, match="method='qr'"):
        weight_spectra(model, method="qr")
    with pytest.raises(SphericalCowError, match="conv='fft'"):
        weight_spectra(model, conv="fft")
    with pytest.raises(SphericalCowError, match=r"level=1\.5"):
        weight_spectra(model, level=1.5)
    with pytest.raises(SphericalCowError, match="no dense or convolutional"):
        weight_spectra(torch.nn.ReLU())
    with pytest.raises(SphericalCowError, match="type list"):
        weight_spectra([1, 2])
    bad = torch.nn.Linear(20, 20)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(SphericalCowError, match="NaN or inf"):
        weight_spectra(bad)
    with pytest.raises(SphericalCowError, match="no materialised weight"):
        weight_spectra(torch.nn.LazyLinear(4))
    tiny = weight_spectra(torch.nn.Linear(3, 5)).layers[0]  # 3 eigenvalues: no fits, NaN in the table
    assert tiny.mp is None and tiny.power_law is None and math.isnan(tiny.record()["alpha"])


# ------------------------------------------------------------------------------- bootstrap standard error of alpha
def planted(n, frac_tail, alpha, rng, xmin=1.0):
    """A non-power-law body (density 3 x^2 / xmin^3 on [0, xmin]) and a Pareto(alpha) tail above xmin; the number of
    tail points is Binomial(n, frac_tail)."""
    nt = rng.binomial(n, frac_tail)
    return np.concatenate([xmin * rng.random(n - nt) ** (1 / 3), pareto(nt, alpha, xmin, rng)])


def coverage_counts(reps, n, frac_tail, alpha, n_boot, seed):
    """Per draw: (asymptotic CI covers alpha, bootstrap CI covers alpha), both 95% normal intervals around the same
    estimate (the bootstrap fit also gives the point estimate and n_tail, hence the asymptotic SE)."""
    rng = np.random.default_rng(seed)
    z = sps.norm.ppf(0.975)
    out = []
    for r in range(reps):
        fit = fit_power_law(planted(n, frac_tail, alpha, rng), alpha_se="bootstrap", n_boot=n_boot, seed=r)
        se_asym = (fit.alpha - 1) / math.sqrt(fit.n_tail)
        lo, hi = fit.ci(0.95)
        assert hi - fit.alpha == pytest.approx(z * fit.alpha_se, rel=1e-12)
        out.append((abs(fit.alpha - alpha) <= z * se_asym, lo <= alpha <= hi))
    return np.array(out)


def cp_interval(k, n, level=0.999):
    return sps.binomtest(int(k), int(n)).proportion_ci(level, method="exact")


def test_asymptotic_se_under_covers_when_xmin_is_scanned():
    """Body + Pareto(2.5) tail, 200 points, 40% in the tail: alpha +- 1.96 (alpha - 1)/sqrt(n_tail) ignores the
    uncertainty of the KS-selected xmin and covers the truth clearly less often than 95% (its 99.9% Clopper-Pearson
    interval lies below 0.95)."""
    rng = np.random.default_rng(2024)
    s = 1000
    hits = 0
    for _ in range(s):
        fit = fit_power_law(planted(200, 0.4, 2.5, rng))
        assert fit.se_method == "asymptotic" and math.isnan(fit.xmin_se)
        hits += abs(fit.alpha - 2.5) <= 1.959964 * fit.alpha_se
    ci = cp_interval(hits, s)
    assert ci.high < 0.95, (hits, ci)


def test_bootstrap_se_covers_at_the_nominal_rate_where_the_asymptotic_one_does_not():
    """Clauset et al. 2009, Sec. 3.5: the bootstrap over the whole procedure (resample, re-select xmin, refit). On
    150 draws of the same mixture as above the bootstrap interval covers at a rate whose 99.9% Clopper-Pearson
    interval contains 0.95 (it excludes rates below ~0.89, where the asymptotic one lies), and on the same draws it
    covers where the asymptotic one misses more often than the reverse (the slow test makes this a McNemar test)."""
    cov = coverage_counts(150, 200, 0.4, 2.5, n_boot=100, seed=7)
    asym, boot = cov[:, 0], cov[:, 1]
    ci = cp_interval(boot.sum(), boot.size)
    assert ci.low <= 0.95 <= ci.high, (boot.sum(), ci)
    assert np.sum(boot & ~asym) > np.sum(asym & ~boot), (boot.sum(), asym.sum())


@pytest.mark.slow
def test_bootstrap_coverage_long_run():
    """600 draws at two sample sizes, 200 resamples each: bootstrap coverage consistent with 95% (99% Clopper-Pearson
    interval), asymptotic coverage below it, and on the same draws the bootstrap covers more often (exact one-sided
    McNemar test on the discordant draws, p < 0.01)."""
    for n, seed in ((200, 1), (300, 2)):
        cov = coverage_counts(600, n, 0.4, 2.5, n_boot=200, seed=seed)
        asym, boot = cov[:, 0], cov[:, 1]
        ci_boot = cp_interval(boot.sum(), len(cov), 0.99)
        ci_asym = cp_interval(asym.sum(), len(cov), 0.99)
        assert ci_boot.low <= 0.95 <= ci_boot.high, (n, boot.sum())
        assert ci_asym.high < 0.95, (n, asym.sum())
        only_boot, only_asym = int(np.sum(boot & ~asym)), int(np.sum(asym & ~boot))
        p = sps.binomtest(only_boot, only_boot + only_asym, 0.5, alternative="greater").pvalue
        assert p < 0.01, (n, only_boot, only_asym)


def test_bootstrap_is_the_whole_procedure_on_resamples_and_is_seeded():
    """Independent route: resample by hand with the same generator stream and refit each resample with the full scan;
    the standard deviations must agree exactly. Same seed: same answer; another seed: another answer."""
    rng = np.random.default_rng(31)
    x = planted(150, 0.5, 3.0, rng)
    fit = fit_power_law(x, alpha_se="bootstrap", n_boot=40, seed=5)
    data = np.sort(x)
    g = np.random.default_rng(5)
    reps = [fit_power_law(data[g.integers(0, data.size, data.size)]) for _ in range(40)]
    assert fit.alpha_se == pytest.approx(np.std([r.alpha for r in reps], ddof=1), rel=1e-12)
    assert fit.xmin_se == pytest.approx(np.std([r.xmin for r in reps], ddof=1), rel=1e-12)
    assert (fit.se_method, fit.n_boot) == ("bootstrap", 40)
    plain = fit_power_law(x)
    assert (fit.alpha, fit.xmin, fit.n_tail, fit.ks) == (plain.alpha, plain.xmin, plain.n_tail, plain.ks)
    assert fit_power_law(x, alpha_se="bootstrap", n_boot=40, seed=5) == fit
    assert fit_power_law(x, alpha_se="bootstrap", n_boot=40, seed=6).alpha_se != fit.alpha_se


def test_bootstrap_with_known_xmin_matches_the_asymptotic_se():
    """Pure Pareto data with xmin given: no selection uncertainty, so the bootstrap SD of the MLE must agree with
    (alpha - 1)/sqrt(n) (the inverse Fisher information, Clauset et al. Eq. 3.2) within its own sampling error
    (relative sd ~ 1/sqrt(2 n_boot) = 3.5% for 400 resamples, plus O(1/sqrt(n)) skewness of the MLE)."""
    rng = np.random.default_rng(8)
    ratios = []
    for _ in range(5):
        x = pareto(500, 2.8, 1.0, rng)
        fit = fit_power_law(x, xmin=1.0, alpha_se="bootstrap", n_boot=400, seed=1)
        ratios.append(fit.alpha_se / ((fit.alpha - 1) / math.sqrt(500)))
        assert fit.xmin_se == 0.0
    assert abs(np.mean(ratios) - 1) < 0.06, ratios


def test_bootstrap_bad_input_and_passthrough():
    x = np.arange(1, 40.0)
    with pytest.raises(SphericalCowError, match="alpha_se='jackknife'"):
        fit_power_law(x, alpha_se="jackknife")
    with pytest.raises(SphericalCowError, match="n_boot=5"):
        fit_power_law(x, alpha_se="bootstrap", n_boot=5)
    with pytest.raises(SphericalCowError, match="seed=-1"):
        fit_power_law(x, alpha_se="bootstrap", seed=-1)
    with pytest.raises(SphericalCowError, match=r"level=1\.5"):
        fit_power_law(x).ci(1.5)
    with pytest.raises(SphericalCowError, match="alpha_se='exact'"):
        weight_spectra(torch.nn.Linear(40, 30), alpha_se="exact")
    torch.manual_seed(0)
    model = torch.nn.Linear(120, 60)
    boot = weight_spectra(model, alpha_se="bootstrap", n_boot=30, seed=3).layers[0]
    plain = weight_spectra(model).layers[0]
    assert boot.power_law.alpha == plain.power_law.alpha and boot.power_law.se_method == "bootstrap"
    assert boot.record()["alpha_se_method"] == "bootstrap" and plain.record()["alpha_se_method"] == "asymptotic"
    lam = plain.eigenvalues
    direct = fit_power_law(lam[lam > 0], alpha_se="bootstrap", n_boot=30, seed=3)
    assert boot.power_law.alpha_se == direct.alpha_se


# ------------------------------------------------------------------------------------------------- stable rank
def whole(w: torch.Tensor) -> np.ndarray:
    return w.detach().double().numpy().reshape(w.shape[0], -1)


def test_conv_stable_rank_is_the_whole_layer_one_and_the_slice_version_is_kept():
    """Conv2d(3, 16, 3): slices are 16 x 3 (at most rank 3), the whole layer 16 x 27. The pooled-slice ratio
    ||W||_F^2 / max_k ||W_k||^2 can exceed 3 (here: 9 slices of similar norm); the reported stable rank is the whole
    layer's ||W||_F^2 / ||W_r||_2^2 <= min(16, 27), computed here with numpy."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 16, 3)
    sp = weight_spectra(conv).layers[0]
    w = conv.weight.detach().double().numpy()
    wr = whole(conv.weight)
    assert sp.spectral_norm == pytest.approx(np.linalg.norm(wr, 2), rel=1e-10)
    assert sp.frobenius_norm == pytest.approx(np.linalg.norm(wr), rel=1e-10)
    assert sp.stable_rank == pytest.approx(np.linalg.norm(wr) ** 2 / np.linalg.norm(wr, 2) ** 2, rel=1e-10)
    slice_norms = [np.linalg.norm(w[:, :, i, j], 2) for i in range(3) for j in range(3)]
    assert sp.slice_spectral_norm == pytest.approx(max(slice_norms), rel=1e-10)
    assert sp.slice_stable_rank == pytest.approx(np.linalg.norm(wr) ** 2 / max(slice_norms) ** 2, rel=1e-10)
    assert sp.slice_stable_rank > 3  # above the size of a slice: why it is not reported as the stable rank
    assert 1 <= sp.stable_rank <= 16
    rec = sp.record()
    assert rec["stable_rank"] == sp.stable_rank and rec["slice_stable_rank"] == sp.slice_stable_rank
    # the reshape convention: the same whole-layer numbers; and the slice version equals it there
    rs = weight_spectra(conv, conv="reshape").layers[0]
    assert rs.stable_rank == pytest.approx(sp.stable_rank, rel=1e-10)
    assert rs.spectral_norm == pytest.approx(sp.spectral_norm, rel=1e-10)
    assert rs.slice_stable_rank == pytest.approx(rs.stable_rank, rel=1e-12)


def test_stable_rank_never_exceeds_the_smaller_dimension():
    """Invariant 1 <= srank <= rank(W_r) <= min(rows, cols) of the reshaped weight, over random dense and convolutional
    layers (plain, grouped, transposed, 1-D and 3-D, low-rank, one dominant direction, nearly orthogonal), both
    conventions, both ESD routes."""
    g = torch.Generator().manual_seed(12)
    layers = [
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.Conv2d(2, 64, 5),
        torch.nn.Conv2d(40, 60, 2, groups=4),
        torch.nn.ConvTranspose2d(8, 24, 3),
        torch.nn.Conv1d(4, 50, 7),
        torch.nn.Conv3d(2, 12, 2),
        torch.nn.Linear(30, 200),
        torch.nn.Linear(200, 30),
    ]
    checked = 0
    for layer in layers:
        for variant in ("random", "low-rank", "spike", "orthogonal"):
            with torch.no_grad():
                w = torch.randn(layer.weight.shape, generator=g, dtype=torch.float64)
                flat = w.reshape(w.shape[0], -1)
                if variant == "low-rank":
                    flat = flat[:, :1] @ torch.randn(1, flat.shape[1], generator=g, dtype=torch.float64) + 1e-3 * flat
                elif variant == "spike":
                    u = torch.randn(flat.shape[0], 1, generator=g, dtype=torch.float64)
                    flat = flat + 30 * u @ torch.randn(1, flat.shape[1], generator=g, dtype=torch.float64)
                elif variant == "orthogonal":
                    q, _ = torch.linalg.qr(flat if flat.shape[0] >= flat.shape[1] else flat.T)
                    flat = q if flat.shape[0] >= flat.shape[1] else q.T
                layer.weight.copy_(flat.reshape(w.shape).to(layer.weight.dtype))
            rows, cols = layer.weight.shape[0], layer.weight[0].numel()
            for conv in ("slices", "reshape"):
                for method in ("gram", "svd"):
                    sp = weight_spectra(layer, conv=conv, method=method, min_evals=2, min_tail=2).layers[0]
                    assert 1 - 1e-9 <= sp.stable_rank <= min(rows, cols) * (1 + 1e-9), (layer, variant, sp.stable_rank)
                    checked += 1
            if variant == "orthogonal":  # all singular values equal: the bound is attained
                assert sp.stable_rank == pytest.approx(min(rows, cols), rel=1e-6)
    assert checked == len(layers) * 4 * 4
