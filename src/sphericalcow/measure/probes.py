"""Forward probes of any ``torch.nn.Module`` through forward hooks.

:func:`record` captures the outputs of chosen submodules in one forward pass without mutating the model.
:func:`probe_forward` repeats that over many random initialisations (one model per seed, built by a
factory) and reports, per layer, the statistics that infinite-width theory predicts (conventions of Roberts
& Yaida): the mean and the second moment ``K_aa`` of a neuron's preactivation, the correlation between two
inputs, and the single-neuron excess kurtosis, each with a confidence interval over seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sphericalcow.errors import SphericalCowError, check_int
from sphericalcow.measure.stats import Estimate, _check_level, _jsonable, bootstrap_means_ci, mean_ci

__all__ = ["MODES", "ForwardProbe", "ModelProbe", "probe_forward", "probe_model", "record", "resolve_layers"]

MODES = ("eval", "train", "keep")
"""Behaviour of the model during a probe: all submodules in eval mode, all in train mode, or as they are."""

# --------------------------------------------------------------------------------------------- validation


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise SphericalCowError(f"model of type {type(model).__name__} is not a torch.nn.Module")
    return model


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise SphericalCowError(f"mode={mode!r} is not allowed; expected one of {', '.join(map(repr, MODES))}")
    return str(mode)


def _check_inputs(inputs: Any) -> torch.Tensor:
    """A float tensor of shape (n_inputs, ...) with at least 2 dims and only finite values."""
    if not isinstance(inputs, torch.Tensor):
        raise SphericalCowError(
            f"inputs of type {type(inputs).__name__} is not a torch.Tensor; expected a float tensor"
        )
    if not inputs.is_floating_point():
        raise SphericalCowError(f"inputs has dtype {inputs.dtype}; expected a floating-point tensor")
    if inputs.dim() < 2:
        raise SphericalCowError(
            f"inputs has shape {tuple(inputs.shape)}; expected at least 2 dims (n_inputs, features...)"
        )
    if inputs.shape[0] < 1 or inputs.numel() == 0:
        raise SphericalCowError(f"inputs has shape {tuple(inputs.shape)}; expected at least one non-empty input")
    finite = torch.isfinite(inputs)
    if not bool(finite.all()):
        kind = "NaN" if bool(torch.isnan(inputs).any()) else "inf"
        bad = int((~finite).reshape(inputs.shape[0], -1).any(dim=1).nonzero()[0, 0])
        raise SphericalCowError(f"inputs contains {kind} (first in input {bad}); expected finite values only")
    return inputs


def _check_pairs(pairs: Any, n_inputs: int) -> list[tuple[int, int]]:
    try:
        out = [tuple(p) for p in pairs]
    except TypeError:
        raise SphericalCowError(f"pairs={pairs!r} is not a sequence of (a, b) index pairs") from None
    checked: list[tuple[int, int]] = []
    for p in out:
        ok = len(p) == 2 and all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in p)
        if not ok:
            raise SphericalCowError(f"pair {p!r} is not allowed; expected two integer input indices (a, b)")
        a, b = int(p[0]), int(p[1])
        if not (0 <= a < n_inputs and 0 <= b < n_inputs):
            raise SphericalCowError(
                f"pair {(a, b)!r} is out of range; expected indices in [0, {n_inputs - 1}] for {n_inputs} inputs"
            )
        checked.append((a, b))
    return checked


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        n = check_int("seeds", int(seeds), minimum=2)
        return list(range(n))
    try:
        lst = list(seeds)
    except TypeError:
        raise SphericalCowError(
            f"seeds={seeds!r} is not allowed; expected an integer count >= 2 or a sequence of >= 2 integers"
        ) from None
    out = [check_int("seed", s, minimum=0) for s in lst]
    if len(out) < 2:
        raise SphericalCowError(
            f"seeds={lst!r} gives {len(out)} seed; expected at least 2 for a confidence interval over seeds"
        )
    if len(set(out)) != len(out):
        dup = next(s for s in out if out.count(s) > 1)
        raise SphericalCowError(f"seed {dup} appears more than once in seeds; expected distinct seeds")
    return out


# ------------------------------------------------------------------------------------------------- layers


def resolve_layers(model: nn.Module, layers: Sequence[str | nn.Module]) -> list[tuple[str, nn.Module]]:
    """Resolve layer names and module objects to ``(name, module)`` pairs of ``model``.

    Names are those of ``model.named_modules()`` (``""`` is the model itself); module objects must be
    submodules of ``model`` and get their first qualified name. A single name or module may be passed
    instead of a sequence. Unknown names, foreign modules, duplicates and an empty list raise
    :class:`SphericalCowError`.
    """
    _check_model(model)
    if isinstance(layers, str | nn.Module):
        layers = [layers]
    try:
        items = list(layers)
    except TypeError:
        raise SphericalCowError(
            f"layers={layers!r} is not allowed; expected a sequence of layer names or modules"
        ) from None
    if not items:
        raise SphericalCowError("layers is empty; expected at least one layer name or module")
    by_name = dict(model.named_modules())
    by_id: dict[int, str] = {}
    for name, mod in by_name.items():
        by_id.setdefault(id(mod), name)
    out: list[tuple[str, nn.Module]] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            if item not in by_name:
                valid = [n for n in by_name if n][:6]
                more = len(by_name) - 1 - len(valid)
                listing = ", ".join(repr(n) for n in valid) + (f", ... ({more} more)" if more > 0 else "")
                raise SphericalCowError(
                    f"layer {item!r} is not a submodule name of {type(model).__name__}; valid names include "
                    f"{listing or repr('')}"
                )
            name, mod = item, by_name[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise SphericalCowError(
                    f"module {type(item).__name__} (id {id(item):#x}) is not a submodule of "
                    f"{type(model).__name__}; "
                    "expected a module from model.modules() or a name from model.named_modules()"
                )
            name, mod = by_id[id(item)], item
        else:
            raise SphericalCowError(
                f"layer {item!r} of type {type(item).__name__} is not allowed; expected a name (str) or an nn.Module"
            )
        if name in seen:
            raise SphericalCowError(f"layer {name!r} is listed more than once; expected distinct layers")
        seen.add(name)
        out.append((name, mod))
    return out


def _resolve_names(model: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """Fast path of :func:`resolve_layers` for names already known to be valid in a sibling model."""
    try:
        return [(name, model.get_submodule(name)) for name in names]
    except AttributeError:
        return resolve_layers(model, names)  # raises with the list of valid names


# ------------------------------------------------------------------------------------------------- record


def _version(t: torch.Tensor) -> int | None:
    """The in-place version counter of ``t`` (None for inference tensors, which have none)."""
    try:
        return int(t._version)
    except RuntimeError:
        return None


class _State:
    """Snapshot of everything a forward pass could change on a module tree, and its restoration.

    Tensor values are snapshotted per (device, dtype) group as ONE flat copy (a single ``torch.cat``) and
    checked on restore with one comparison per group, so the cost is a few large ops, not two per tensor.
    """

    def __init__(self, model: nn.Module) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        self.tables: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.requires_grad: list[tuple[torch.Tensor, bool]] = []
        tensors: dict[int, torch.Tensor] = {}
        for m in model.modules():
            for attr in ("_parameters", "_buffers"):
                table: dict[str, Any] = getattr(m, attr)
                self.tables.append((table, dict(table)))
                for t in table.values():
                    if t is None or id(t) in tensors:
                        continue
                    if isinstance(t, nn.parameter.UninitializedTensorMixin):
                        raise SphericalCowError(
                            f"{type(m).__name__} has uninitialised lazy parameters; "
                            "run one forward pass on the model before probing it"
                        )
                    tensors[id(t)] = t
                    if isinstance(t, nn.Parameter):
                        self.requires_grad.append((t, t.requires_grad))
        groups: dict[tuple[Any, ...], list[torch.Tensor]] = {}
        self.single: list[tuple[torch.Tensor, int | None, torch.Tensor]] = []
        for t in tensors.values():
            if t.layout == torch.strided and not t.is_quantized:
                groups.setdefault((t.device, t.dtype), []).append(t)
            else:
                self.single.append((t, _version(t), t.detach().clone()))
        self.groups = [
            (
                ts,
                [_version(t) for t in ts],
                [t.shape for t in ts],
                torch.cat([t.detach().reshape(-1) for t in ts]),
            )
            for ts in groups.values()
        ]

    def restore(self) -> None:
        for m, flag in self.training:
            if m.training != flag:
                m.training = flag
        for table, saved in self.tables:
            if table.keys() != saved.keys() or any(table[k] is not v for k, v in saved.items()):
                table.clear()
                table.update(saved)
        # Some kernels (e.g. batch norm's running statistics) write in place without bumping the version
        # counter, so values are compared (bitwise) too. Changed values are written back through ``.data``,
        # which does not bump the version counter either, so a backward pending through the model (which
        # saved these values) still works; unchanged tensors are not written at all.
        with torch.no_grad():
            for ts, versions, shapes, flat in self.groups:
                offset = 0
                for t, version, shape in zip(ts, versions, shapes, strict=True):
                    size = shape.numel()
                    value = flat[offset : offset + size].view(shape)
                    offset += size
                    if t.shape != shape:
                        t.set_(value.clone())  # resized in place: put a copy of the old values back
                    elif version is None or _version(t) != version or not _same_bits(t, value):
                        t.data.copy_(value)
            for t, version, value in self.single:
                if version is None or _version(t) != version or not torch.equal(t, value):
                    t.data.copy_(value)
        for p, flag in self.requires_grad:
            if p.requires_grad != flag:
                p.requires_grad_(flag)


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64, 16: torch.int64}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality of two strided tensors of one shape and dtype (NaN-safe, fast on CPU via numpy)."""
    x = a.detach().contiguous().reshape(-1).view(_INT_OF_SIZE[a.element_size()])
    y = b.detach().contiguous().reshape(-1).view(_INT_OF_SIZE[b.element_size()])
    if x.device.type == "cpu":
        return bool(np.array_equal(x.numpy(), y.numpy()))
    return torch.equal(x, y)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for t in model.parameters():
        if t.is_floating_point():
            return t.device, t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None


def _record(
    model: nn.Module, inputs: torch.Tensor, resolved: list[tuple[str, nn.Module]], mode: str
) -> dict[str, torch.Tensor]:
    """:func:`record` after validation."""
    n = inputs.shape[0]
    device, dtype = _model_device_dtype(model)
    x = inputs.to(device=device if device is not None else inputs.device, dtype=dtype or inputs.dtype)

    captured: dict[str, list[torch.Tensor]] = {name: [] for name, _ in resolved}

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise SphericalCowError(
                    f"layer {name!r} returned {type(output).__name__}, not a tensor; probe a submodule whose "
                    "output is a single tensor"
                )
            # Copy now: later in-place ops (e.g. ReLU(inplace=True)) may overwrite this tensor.
            captured[name].append(output.detach().to(device="cpu", dtype=torch.float64, copy=True))

        return hook

    state = _State(model)
    handles = []
    try:
        for name, mod in resolved:
            handles.append(mod.register_forward_hook(make_hook(name)))
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        state.restore()

    out: dict[str, torch.Tensor] = {}
    for name, _ in resolved:
        got = captured[name]
        if len(got) != 1:
            what = "did not run" if not got else f"ran {len(got)} times"
            raise SphericalCowError(
                f"layer {name!r} {what} in one forward pass; expected a layer that runs exactly once"
            )
        z = got[0]
        if z.dim() == 0 or z.shape[0] != n:
            raise SphericalCowError(
                f"layer {name!r} output has shape {tuple(z.shape)}; expected the {n} inputs along dim 0"
            )
        out[name] = z.reshape(n, -1)
    return out


def record(
    model: nn.Module, inputs: torch.Tensor, layers: Sequence[str | nn.Module], *, mode: str = "eval"
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` in one forward pass of ``model`` on ``inputs``, without mutating the model.

    Runs under ``torch.no_grad`` with forward hooks on the layers and returns ``{name: output}``, each output
    detached, copied to CPU as float64 and reshaped to ``(n_inputs, -1)``. ``mode`` is ``"eval"`` (every
    submodule in eval mode), ``"train"`` (every submodule in train mode, e.g. batch statistics in BatchNorm
    and active Dropout) or ``"keep"`` (as the model is). Inputs are moved to the device and floating dtype of
    the model's parameters.

    Afterwards the model is as before, even if forward raises: every submodule's ``training`` flag is
    restored, the hooks are removed, parameters and buffers changed in place (e.g. BatchNorm running
    statistics in train mode) are restored from a snapshot, replaced ones are put back, and ``requires_grad``
    is unchanged. Global RNG state is not restored (train-mode Dropout draws from it).
    """
    _check_model(model)
    x = _check_inputs(inputs)
    m = _check_mode(mode)
    resolved = resolve_layers(model, layers)
    return _record(model, x, resolved, m)


# -------------------------------------------------------------------------------------------- statistics


def _moments(zs: list[torch.Tensor], pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """Per-layer neuron averages of z, z^2, z^4 and of the cross products z_a z_b, in a few vectorised ops.

    ``zs`` holds each layer's output of shape (n_inputs, width_j). Returns a float64 array of shape
    ``(n_layers, 3 * n_inputs + n_pairs)`` whose rows are ``[m1 (n_inputs), m2, m4, m_ab (n_pairs)]``.
    """
    z = torch.cat(zs, dim=1).numpy() if len(zs) > 1 else zs[0].numpy()
    widths = np.array([t.shape[1] for t in zs], dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum([t.shape[1] for t in zs])[:-1]]).astype(np.intp)
    z2 = z * z
    # Sums over the neurons of each layer: reduceat over the concatenated feature axis -> (rows, n_layers).
    s1 = np.add.reduceat(z, starts, axis=1)
    s2 = np.add.reduceat(z2, starts, axis=1)
    s4 = np.add.reduceat(z2 * z2, starts, axis=1)
    sab = np.add.reduceat(z[pa] * z[pb], starts, axis=1) if len(pa) else np.empty((0, len(zs)))
    return np.concatenate([s1, s2, s4, sab], axis=0).T / widths[:, None]


def _correlation_from_means(pa: np.ndarray, pb: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """rho_ab = <z_a z_b> / sqrt(<z_a^2> <z_b^2>) from the means ``[m2 (k inputs), m_ab (pairs)]``."""

    def fn(means: np.ndarray) -> np.ndarray:
        m2, mab = means[..., :k], means[..., k:]
        return mab / np.sqrt(m2[..., pa] * m2[..., pb])

    return fn


def _kurtosis_from_means(means: np.ndarray) -> np.ndarray:
    """Excess kurtosis ``<z^4> / <z^2>^2 - 3`` from pooled means ``means[..., 0 / 1, inputs]`` = (m2, m4)."""
    m2 = means[..., 0, :]
    return means[..., 1, :] / (m2 * m2) - 3.0


@dataclass
class ForwardProbe:
    """Per-layer forward statistics over ``n_seeds`` random initialisations, with confidence intervals.

    For each layer name (the keys of every dict), with ``z`` the layer output of shape (n_inputs, width):

    * ``mean``: shape (n_inputs,): per seed the average over neurons of ``z_ia``; t-interval over seeds.
    * ``variance``: shape (n_inputs,): per seed the average over neurons of ``z_ia**2`` (the second moment
      about zero: at initialisation ``E[z] = 0``, so this is the unbiased estimator of the kernel ``K_aa``);
      t-interval over seeds.
    * ``correlation``: shape (n_pairs,): the kernel correlation ``K_ab / sqrt(K_aa K_bb)`` estimated as a ratio
      of means over neurons and seeds, ``<z_a z_b> / sqrt(<z_a^2> <z_b^2>)``, for each pair ``(a, b)`` of
      ``pairs``; percentile-bootstrap interval resampling seeds (NaN for a dead layer). Not the mean over seeds
      of each network's own cosine: that is a different quantity, biased against the kernel correlation by
      the seed-to-seed fluctuations, which grow like depth/width (e.g. +0.05 for tanh at criticality with
      depth 30, width 256).
    * ``kurtosis``: shape (n_inputs,): the excess kurtosis of a single neuron's output, pooled over neurons
      and seeds, ``<z^4> / <z^2>^2 - 3``; percentile-bootstrap interval resampling seeds (all layers share
      the resamples, bootstrap seed 0). Kurtosis intervals converge slowly (their error involves 8th
      moments): for Gaussian neurons, 200 seeds x 16 neurons, a nominal 95% interval covers ~93.5%.

    ``width`` is the number of features per layer (all entries of the flattened output).
    """

    layers: list[str]
    n_seeds: int
    width: dict[str, int]
    mean: dict[str, Estimate]
    variance: dict[str, Estimate]
    correlation: dict[str, Estimate]
    kurtosis: dict[str, Estimate]
    pairs: list[tuple[int, int]]
    seeds: list[int] = field(default_factory=list)
    mode: str = "eval"
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (non-finite numbers become ``None``)."""
        return {
            "layers": list(self.layers),
            "n_seeds": int(self.n_seeds),
            "seeds": [int(s) for s in self.seeds],
            "mode": self.mode,
            "level": float(self.level),
            "pairs": [[int(a), int(b)] for a, b in self.pairs],
            "width": {k: int(v) for k, v in self.width.items()},
            "mean": {k: v.to_dict() for k, v in self.mean.items()},
            "variance": {k: v.to_dict() for k, v in self.variance.items()},
            "correlation": {k: v.to_dict() for k, v in self.correlation.items()},
            "kurtosis": {k: v.to_dict() for k, v in self.kurtosis.items()},
        }


def probe_forward(
    factory: Callable[[int], nn.Module],
    inputs: torch.Tensor,
    layers: Sequence[str | nn.Module],
    seeds: Sequence[int] | int,
    *,
    pairs: Sequence[tuple[int, int]] = ((0, 1),),
    mode: str = "eval",
    level: float = 0.95,
    progress: Callable[[int], None] | None = None,
    n_boot: int = 2000,
) -> ForwardProbe:
    """Forward statistics of ``layers`` over random initialisations, with confidence intervals over seeds.

    ``factory(seed)`` must return a freshly initialised model, deterministic in ``seed`` (e.g. it calls
    ``torch.manual_seed(seed)`` or uses a seeded ``torch.Generator``). ``seeds`` is an integer ``n`` (meaning
    ``range(n)``) or a sequence of distinct non-negative integers; at least 2 are needed. ``layers`` should be
    names from ``named_modules()``: module objects are resolved to names in the first seed's model. Each
    seed's model is probed with :func:`record` (so it is never mutated). ``pairs`` are the input index pairs
    for correlations. ``progress(i)`` is called after each seed with ``i`` the number of seeds done so far.
    ``n_boot`` is the number of bootstrap replicates for the kurtosis interval (fixed bootstrap seed 0).
    See :class:`ForwardProbe` for the statistics.
    """
    if not callable(factory):
        raise SphericalCowError(f"factory={factory!r} is not callable; expected a function seed -> nn.Module")
    x = _check_inputs(inputs)
    n_inputs = int(x.shape[0])
    pair_list = _check_pairs(pairs, n_inputs)
    seed_list = _check_seeds(seeds)
    m = _check_mode(mode)
    lv = _check_level(level)
    nb = check_int("n_boot", n_boot, minimum=10)
    if progress is not None and not callable(progress):
        raise SphericalCowError(f"progress={progress!r} is not callable; expected a function of an int or None")

    pa = np.array([a for a, _ in pair_list], dtype=np.intp)
    pb = np.array([b for _, b in pair_list], dtype=np.intp)
    n_pairs = len(pair_list)
    n_seeds = len(seed_list)

    names: list[str] = []
    width: dict[str, int] = {}
    per_seed: np.ndarray | None = None  # (n_seeds, n_layers, 3 * n_inputs + n_pairs)
    for i, seed in enumerate(seed_list):
        model = _check_model(factory(seed))
        if i == 0:
            try:
                first = resolve_layers(model, layers)
            except SphericalCowError as err:
                given = [layers] if isinstance(layers, str | nn.Module) else list(layers)
                if any(isinstance(item, nn.Module) for item in given):
                    raise SphericalCowError(
                        f"{err} (probe_forward builds a new model per seed: pass layer names)"
                    ) from None
                raise
            names = [name for name, _ in first]
            resolved = first
        else:
            resolved = _resolve_names(model, names)
        outs = _record(model, x, resolved, m)
        if i == 0:
            width = {name: int(outs[name].shape[1]) for name in names}
            per_seed = np.empty((n_seeds, len(names), 3 * n_inputs + n_pairs), dtype=np.float64)
        assert per_seed is not None
        for name in names:
            z = outs[name]
            if z.shape[1] != width[name]:
                raise SphericalCowError(
                    f"layer {name!r} has {z.shape[1]} features for seed {seed} but {width[name]} for seed "
                    f"{seed_list[0]}; expected the factory to build the same architecture for every seed"
                )
        per_seed[i] = _moments([outs[name] for name in names], pa, pb)
        if progress is not None:
            progress(i + 1)

    assert per_seed is not None
    arr = per_seed
    k = n_inputs
    mean_d: dict[str, Estimate] = {}
    var_d: dict[str, Estimate] = {}
    corr_d: dict[str, Estimate] = {}
    kurt_d: dict[str, Estimate] = {}
    # Kurtosis of every layer at once: one bootstrap over seeds of the pooled (m2, m4) of all layers.
    moments = arr[:, :, k : 3 * k].reshape(n_seeds, len(names), 2, k)  # (seeds, layers, [m2, m4], inputs)
    kurt = bootstrap_means_ci(moments, _kurtosis_from_means, n_boot=nb, level=lv, seed=0)
    assert isinstance(kurt.mean, np.ndarray)
    corr_in = np.concatenate([arr[:, :, k : 2 * k], arr[:, :, 3 * k :]], axis=2)  # (seeds, layers, [m2, m_ab])
    corr = bootstrap_means_ci(corr_in, _correlation_from_means(pa, pb, k), n_boot=nb, level=lv, seed=1)
    assert isinstance(corr.mean, np.ndarray)
    for j, name in enumerate(names):
        a = arr[:, j]
        mean_d[name] = mean_ci(a[:, :k], axis=0, level=lv)
        var_d[name] = mean_ci(a[:, k : 2 * k], axis=0, level=lv)
        corr_d[name] = corr[j]
        kurt_d[name] = kurt[j]
    return ForwardProbe(
        layers=names,
        n_seeds=n_seeds,
        width=width,
        mean=mean_d,
        variance=var_d,
        correlation=corr_d,
        kurtosis=kurt_d,
        pairs=pair_list,
        seeds=seed_list,
        mode=m,
        level=lv,
    )


# ------------------------------------------------------------------------------------------ single model


@dataclass
class ModelProbe:
    """Per-layer point estimates from ONE model (no confidence intervals).

    Same statistics as :class:`ForwardProbe` but from a single network, averaged over its neurons only.
    Neurons of one network are not independent draws (they share the previous layer), so an interval over
    neurons would be too narrow; use :func:`probe_forward` for intervals over initialisations. All arrays are
    float64: ``mean`` / ``variance`` / ``kurtosis`` of shape (n_inputs,), ``correlation`` of shape (n_pairs,).
    """

    layers: list[str]
    width: dict[str, int]
    mean: dict[str, np.ndarray]
    variance: dict[str, np.ndarray]
    correlation: dict[str, np.ndarray]
    kurtosis: dict[str, np.ndarray]
    pairs: list[tuple[int, int]]
    mode: str = "eval"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (non-finite numbers become ``None``)."""
        return {
            "layers": list(self.layers),
            "mode": self.mode,
            "pairs": [[int(a), int(b)] for a, b in self.pairs],
            "width": {k: int(v) for k, v in self.width.items()},
            "mean": {k: _jsonable(v) for k, v in self.mean.items()},
            "variance": {k: _jsonable(v) for k, v in self.variance.items()},
            "correlation": {k: _jsonable(v) for k, v in self.correlation.items()},
            "kurtosis": {k: _jsonable(v) for k, v in self.kurtosis.items()},
        }


def probe_model(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: Sequence[str | nn.Module],
    *,
    pairs: Sequence[tuple[int, int]] = ((0, 1),),
    mode: str = "eval",
) -> ModelProbe:
    """Point estimates of the :class:`ForwardProbe` statistics for a single model (e.g. a trained one).

    No confidence intervals: averages over the neurons of one network are not averages of independent
    samples. The kurtosis here is pooled over the neurons of this one network. The model is not mutated.
    """
    _check_model(model)
    x = _check_inputs(inputs)
    k = int(x.shape[0])
    pair_list = _check_pairs(pairs, k)
    m = _check_mode(mode)
    resolved = resolve_layers(model, layers)
    outs = _record(model, x, resolved, m)
    pa = np.array([a for a, _ in pair_list], dtype=np.intp)
    pb = np.array([b for _, b in pair_list], dtype=np.intp)
    allm = _moments([outs[name] for name, _ in resolved], pa, pb)
    res: dict[str, dict[str, np.ndarray]] = {"mean": {}, "variance": {}, "correlation": {}, "kurtosis": {}}
    for (name, _), v in zip(resolved, allm, strict=True):
        res["mean"][name] = v[:k]
        res["variance"][name] = v[k : 2 * k]
        with np.errstate(divide="ignore", invalid="ignore"):
            res["correlation"][name] = _correlation_from_means(pa, pb, k)(np.concatenate([v[k : 2 * k], v[3 * k :]]))
            res["kurtosis"][name] = v[2 * k : 3 * k] / v[k : 2 * k] ** 2 - 3.0
    return ModelProbe(
        layers=[name for name, _ in resolved],
        width={name: int(outs[name].shape[1]) for name, _ in resolved},
        pairs=pair_list,
        mode=m,
        **res,
    )
