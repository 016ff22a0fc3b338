"""Empirical (finite-width) kernels of any ``torch.nn.Module``: the NTK and the readout NNGP kernel.

:func:`empirical_ntk` computes the empirical neural tangent kernel (Jacot, Gabriel & Hongler 2018, "Neural
Tangent Kernel", NeurIPS, eq. 3; Roberts & Yaida 2022, §7.2, eq. 7.17 with unit learning-rate tensor)

    Theta_ab(x, x') = sum_p  d f_a(x) / d theta_p  *  d f_b(x') / d theta_p ,

the sum running over the trainable parameters theta_p of the network, with torch.func (``functional_call``,
``vmap``, ``jacrev``, ``jvp``), by one of two routes from Novak, Sohl-Dickstein & Schoenholz 2022, "Fast Finite
Width Neural Tangent Kernel", ICML (Table 1; [FP] = cost of one forward pass on one input, N inputs, O outputs,
P trainable parameters):

* ``"jacobian"`` (Jacobian contraction): per-input Jacobians J(x) in R^{O x P} by reverse mode (``vmap(jacrev)``,
  O vector-Jacobian products per input), then Theta = J(x1) J(x2)^T. Time ~ N O [FP] + N^2 O^2 P (full kernel;
  N^2 O P for ``"trace"`` / ``"diagonal"``); memory ~ N O P for the Jacobians, bounded here by chunking.
* ``"jvp"`` (NTK-vector products): for each input x' of x2 and each output b, a vector-Jacobian product gives
  v = J(x')^T e_b (a parameter-shaped vector), and a Jacobian-vector product through the batch f(x1) gives
  J(x1) v = Theta(x1, x')[:, :, b]; all vmapped. No Jacobian of x1 and no O(P) contraction: time
  ~ N^2 O [FP]; memory ~ (inputs per chunk) O (P + activations), independent of N.

Both routes evaluate the same sum in a different order and agree to rounding.

:func:`empirical_nngp` is the kernel of the features feeding the readout, mapped to the readout's output kernel
conditional on those features (the finite-width NNGP kernel, Roberts & Yaida eq. 4.1 / 4.36 at layer L+1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from sphericalcow.errors import SphericalCowError, check_int
from sphericalcow.measure.probes import _check_model, _model_device_dtype, _State, resolve_layers
from sphericalcow.nets.mlp import NTKLinear

__all__ = ["NTK_METHODS", "NTK_OUTPUTS", "empirical_nngp", "empirical_ntk"]

NTK_METHODS = ("auto", "jacobian", "jvp")
"""Routes for :func:`empirical_ntk`: pick by memory, Jacobian contraction, NTK-vector products."""

NTK_OUTPUTS = ("trace", "full", "diagonal")
"""Output modes of :func:`empirical_ntk`: sum_a Theta_aa (N1, N2), Theta_ab (N1, N2, O, O), Theta_aa (N1, N2, O)."""

AUTO_BUDGET_BYTES = 1 << 30
"""``method="auto"`` takes the Jacobian route when the Jacobians of all distinct inputs fit in this many bytes.
It also caps how much of the Jacobian route's per-chunk Jacobians is kept for reuse instead of recomputed."""

CHUNK_BUDGET_BYTES = 512 << 20
"""The default ``chunk_size`` keeps one chunk's Jacobians (or tangents) and activations below this many bytes."""

_Params = dict[str, torch.Tensor]

# --------------------------------------------------------------------------------------------- validation


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SphericalCowError(f"{name}={value!r} is not allowed; expected one of {', '.join(map(repr, allowed))}")
    return value


def _as_input(name: str, x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``x`` (tensor or array-like) as a detached tensor of ``dtype`` on ``device``, with >= 1 input, all finite."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise SphericalCowError(f"{name} of type {type(x).__name__} is not an array or tensor: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise SphericalCowError(
                f"{name} has dtype {arr.dtype} (type {type(x).__name__}); expected a real numeric array or tensor"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise SphericalCowError(f"{name} has complex dtype {t.dtype}; expected real numbers")
    if t.dim() == 0 or t.shape[0] == 0:
        raise SphericalCowError(
            f"{name} has shape {tuple(t.shape)}; expected at least one input along dim 0 (n_inputs, features...)"
        )
    t = t.to(device=device, dtype=dtype)
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        bad = int((~finite).reshape(t.shape[0], -1).any(dim=1).nonzero()[0, 0])
        raise SphericalCowError(f"{name} contains {kind} (first in input {bad}); expected finite values only")
    return t


def _check_per_example(model: nn.Module) -> None:
    """Refuse modules that couple the inputs of a batch or draw random numbers in forward."""
    for name, m in model.named_modules():
        label = f"{type(m).__name__} {name!r}" if name else type(m).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            why = "is in training mode" if m.training else "has track_running_stats=False"
            raise SphericalCowError(
                f"{label} {why}: it normalises with the statistics of the batch, which couples the inputs, so a "
                "per-input kernel is not defined; call model.eval() first (and model.train() afterwards if needed)"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise SphericalCowError(
                f"{label} is in training mode (p={m.p}): the forward pass is random, so the kernel would be too; "
                "call model.eval() first (and model.train() afterwards if needed)"
            )


def _split_params(model: nn.Module, params: str | Sequence[str] | None) -> tuple[_Params, _Params]:
    """Detached copies of the selected trainable parameters, and detached views of all other tensors.

    Returns ``(theta, rest)``: ``theta`` maps names of the selected trainable parameters to detached clones
    (the variables of differentiation); ``rest`` maps every other parameter name to a detached alias and every
    buffer name to a detached clone, so that nothing the forward pass does can reach the model's own tensors.
    """
    named = list(model.named_parameters())  # tied parameters appear once; functional_call re-ties them
    trainable = [n for n, p in named if p.requires_grad]
    if not trainable:
        raise SphericalCowError(
            f"{type(model).__name__} has no trainable parameters (requires_grad=True); the NTK sums over them"
        )
    if params is None:
        chosen = set(trainable)
    else:
        entries = [params] if isinstance(params, str) else params
        try:
            entries = list(entries)
        except TypeError:
            raise SphericalCowError(
                f"params={params!r} is not allowed; expected a parameter name, a module-name prefix, or a list"
            ) from None
        if not entries:
            raise SphericalCowError("params is empty; expected at least one parameter name or module-name prefix")
        chosen = set()
        for e in entries:
            if not isinstance(e, str):
                raise SphericalCowError(f"params entry {e!r} is not a string; expected a parameter name or prefix")
            hit = [n for n in trainable if _matches(n, e)]
            if not hit:
                frozen = [n for n, p in named if not p.requires_grad and _matches(n, e)]
                if frozen:
                    raise SphericalCowError(
                        f"params entry {e!r} matches only frozen parameters ({', '.join(frozen[:4])}); "
                        "expected trainable ones (requires_grad=True)"
                    )
                listing = ", ".join(repr(n) for n in trainable[:6]) + (", ..." if len(trainable) > 6 else "")
                raise SphericalCowError(
                    f"params entry {e!r} matches no trainable parameter of {type(model).__name__}; expected a name "
                    f"or a module prefix of: {listing}"
                )
            chosen.update(hit)
    theta: _Params = {}
    rest: _Params = {}
    for n, p in named:
        if n in chosen:
            if not p.is_floating_point():
                raise SphericalCowError(f"parameter {n!r} has dtype {p.dtype}; expected a real floating dtype")
            theta[n] = p.detach().clone()
        else:
            rest[n] = p.detach()
    for n, b in model.named_buffers():
        rest[n] = b.detach().clone()
    return theta, rest


def _matches(name: str, entry: str) -> bool:
    """``entry`` is the parameter's name, a module prefix of it (at a ``.`` boundary), or ``""`` (everything)."""
    return entry == "" or name == entry or name.startswith(entry + ".")


# ----------------------------------------------------------------------------------------- the forward map


class _Net:
    """The model as pure functions of (theta, x): one input -> (O,), a batch -> (n, O)."""

    def __init__(self, model: nn.Module, rest: _Params) -> None:
        self.model, self.rest = model, rest

    def batch(self, theta: _Params, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, (theta, self.rest), (x,))
        return out.reshape(x.shape[0], -1)

    def single(self, theta: _Params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (theta, self.rest), (x.unsqueeze(0),)).reshape(-1)

    def probe(self, theta: _Params, x: torch.Tensor, name: str) -> tuple[tuple[int, ...], int]:
        """Check the model on ``x``'s first inputs; return the per-input output shape and saved bytes per input.

        Runs the forward pass on one input and on two (the first input twice when there is only one) with
        gradients enabled, counting the bytes autograd saves for backward: their difference estimates the
        activation memory of one input. Errors of the model are re-raised naming ``x`` and its shape.
        """
        live = {k: v.detach().requires_grad_() for k, v in theta.items()}
        sizes: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel() * t.element_size())
            return t

        outs, saved = [], []
        two = x[:2] if x.shape[0] >= 2 else x[[0, 0]]
        try:
            for xb in (x[:1], two):
                sizes.clear()
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    outs.append(functional_call(self.model, (live, self.rest), (xb,)))
                saved.append(sum(sizes))
        except SphericalCowError:
            raise
        except Exception as e:
            raise SphericalCowError(
                f"model failed on {name} of shape {tuple(x.shape)} (input shape {tuple(x.shape[1:])} per example): "
                f"{type(e).__name__}: {e}"
            ) from e
        for k, out in zip((1, 2), outs, strict=True):
            if not isinstance(out, torch.Tensor):
                raise SphericalCowError(
                    f"model returned {type(out).__name__} on {name}; expected a single tensor of shape (n_inputs, ...)"
                )
            if not out.is_floating_point():
                raise SphericalCowError(f"model returned dtype {out.dtype} on {name}; expected a floating tensor")
            if out.dim() == 0 or out.shape[0] != k:
                raise SphericalCowError(
                    f"model output has shape {tuple(out.shape)} for {k} input(s) of {name}; expected the inputs "
                    "along dim 0, i.e. shape (n_inputs,) or (n_inputs, *out_shape)"
                )
        shape = tuple(outs[1].shape[1:])
        if tuple(outs[0].shape[1:]) != shape or math.prod(shape) == 0:
            raise SphericalCowError(
                f"model output per input has shape {shape} on {name}; expected a fixed, non-empty output shape"
            )
        return shape, max(saved[1] - saved[0], 0)


def _chunks(n: int, size: int) -> list[slice]:
    """Split range(n) into ceil(n / size) near-equal slices of at most ``size`` (equal blocks balance the work)."""
    k = -(-n // size)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


def _wrap_transform_errors(method: str) -> Callable[[Exception], Exception]:
    def wrap(e: Exception) -> Exception:
        msg = str(e)
        if "randomness" in msg:
            return SphericalCowError(
                f"the model draws random numbers in forward (e.g. dropout), which has no per-input kernel: {msg}; "
                "call model.eval() first"
            )
        if method == "jvp" and ("forward AD" in msg or "forward-mode" in msg or "jvp" in msg):
            return SphericalCowError(
                f"an operation of the model does not support forward-mode AD ({type(e).__name__}: {msg}); "
                "use method='jacobian'"
            )
        return e

    return wrap


# ------------------------------------------------------------------------------------------- contraction


def _contract(j1: list[torch.Tensor], j2: list[torch.Tensor], outputs: str) -> torch.Tensor:
    """sum over parameter tensors of J1 J2^T, with per-tensor Jacobians of shapes (n1, O, P_k) and (n2, O, P_k).

    Returns (n1, n2) for ``"trace"``, (n1, n2, O) for ``"diagonal"`` and (n1, n2, O, O) for ``"full"``.
    """
    n1, n_out = j1[0].shape[:2]
    n2 = j2[0].shape[0]
    acc: torch.Tensor | None = None
    for a, b in zip(j1, j2, strict=True):
        if outputs == "trace":  # sum_a sum_p J1[i,a,p] J2[j,a,p]
            blk = a.reshape(n1, -1) @ b.reshape(n2, -1).T
        elif outputs == "diagonal":  # per output a: (n1, P) @ (P, n2)
            blk = torch.bmm(a.transpose(0, 1), b.permute(1, 2, 0))
        else:  # (n1 O, P) @ (P, n2 O)
            blk = a.reshape(n1 * n_out, -1) @ b.reshape(n2 * n_out, -1).T
        acc = blk if acc is None else acc.add_(blk)
    assert acc is not None
    if outputs == "diagonal":
        return acc.permute(1, 2, 0)
    if outputs == "full":
        return acc.reshape(n1, n_out, n2, n_out).permute(0, 2, 1, 3)
    return acc


def _swap(block: torch.Tensor, outputs: str) -> torch.Tensor:
    """Theta(x2, x1) from Theta(x1, x2): swap the input axes (and, for ``"full"``, the output axes)."""
    return block.permute(1, 0, 3, 2) if outputs == "full" else block.transpose(0, 1)


def _symmetrize(k: torch.Tensor, outputs: str) -> torch.Tensor:
    return (k + _swap(k, outputs)) / 2


def _from_full(blk: torch.Tensor, outputs: str) -> torch.Tensor:
    """Reduce a (n1, n2, O, O) block to the requested output mode."""
    if outputs == "full":
        return blk
    d = blk.diagonal(dim1=2, dim2=3)  # (n1, n2, O)
    return d.sum(-1) if outputs == "trace" else d


def _result_shape(n1: int, n2: int, n_out: int, outputs: str) -> tuple[int, ...]:
    return {"trace": (n1, n2), "diagonal": (n1, n2, n_out), "full": (n1, n2, n_out, n_out)}[outputs]


def _ntk_jacobian(
    net: _Net,
    theta: _Params,
    a: torch.Tensor,
    b: torch.Tensor | None,
    n_out: int,
    outputs: str,
    chunks: tuple[int, int],
) -> torch.Tensor:
    """Jacobian contraction over chunks of (k1, k2) inputs of x1 and x2.

    ``b=None`` means b = a: one partition for both, only blocks on and above the diagonal are contracted and
    the others mirrored. Column-chunk Jacobians are kept for reuse while the kept ones total at most
    :data:`AUTO_BUDGET_BYTES`; the others are recomputed for each row chunk. Jacobians held at once: one row
    chunk, one column chunk and the kept ones.
    """
    jac_fn = vmap(jacrev(net.single), in_dims=(None, 0))

    def jac(x: torch.Tensor) -> list[torch.Tensor]:
        j = jac_fn(theta, x)
        return [j[k].reshape(x.shape[0], n_out, -1) for k in theta]

    sym = b is None
    xb = a if b is None else b
    rows, cols = _chunks(a.shape[0], chunks[0]), _chunks(xb.shape[0], chunks[0] if sym else chunks[1])
    cache: dict[int, list[torch.Tensor]] = {}  # column-chunk Jacobians kept for reuse, <= AUTO_BUDGET_BYTES
    cached = 0

    def nbytes(j: list[torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in j)

    result = torch.empty(_result_shape(a.shape[0], xb.shape[0], n_out, outputs), dtype=a.dtype, device=a.device)
    for ci, rs in enumerate(rows):
        # symmetric case: column chunk ci is needed again only in this row (as j1), so it leaves the cache
        j1 = cache.pop(ci, None) if sym else None
        if j1 is None:
            j1 = jac(a[rs])
        else:
            cached -= nbytes(j1)
        for di in range(ci if sym else 0, len(cols)):
            cs = cols[di]
            if sym and di == ci:
                j2 = j1
            elif di in cache:
                j2 = cache[di]
            else:
                j2 = jac(xb[cs])
                if cached + nbytes(j2) <= AUTO_BUDGET_BYTES:
                    cache[di] = j2
                    cached += nbytes(j2)
            blk = _contract(j1, j2, outputs)
            result[rs, cs] = blk
            if sym and di != ci:
                result[cs, rs] = _swap(blk, outputs)
            del j2
    return result


def _ntk_jvp(
    net: _Net,
    theta: _Params,
    a: torch.Tensor,
    b: torch.Tensor | None,
    n_out: int,
    outputs: str,
    chunks: tuple[int, int],
) -> torch.Tensor:
    """NTK-vector products: J(x2)^T e_b by reverse mode, then J(x1) (J(x2)^T e_b) by forward mode, vmapped.

    ``chunks = (k1, k2)``: k2 inputs of x2 give the k2 O tangents vmapped at once, pushed forward through
    batches of k1 inputs of x1. For ``b=None`` only rows up to the end of each column chunk are computed (the
    upper triangle and the diagonal blocks) and the rest is mirrored.
    """
    k1, k2 = chunks
    vjps = vmap(jacrev(net.single), in_dims=(None, 0))  # (k2, O, *p): row (j, b) is J(x2_j)^T e_b
    sym = b is None
    xb = a if b is None else b
    result = torch.empty(_result_shape(a.shape[0], xb.shape[0], n_out, outputs), dtype=a.dtype, device=a.device)
    for cs in _chunks(xb.shape[0], k2):
        x2 = xb[cs]
        n2 = x2.shape[0]
        tangents = {k: v.reshape(n2 * n_out, *v.shape[2:]) for k, v in vjps(theta, x2).items()}
        for rs in _chunks(cs.stop if sym else a.shape[0], k1):
            x1 = a[rs]

            def ntk_vp(t: _Params, x1: torch.Tensor = x1) -> torch.Tensor:
                return jvp(lambda p: net.batch(p, x1), (theta,), (t,))[1]  # J(x1) t: (k1, O)

            cols = vmap(ntk_vp)(tangents)  # (n2 O_b, k1, O_a)
            full = cols.reshape(n2, n_out, x1.shape[0], n_out).permute(2, 0, 3, 1)  # (k1, n2, O_a, O_b)
            result[rs, cs] = _from_full(full, outputs)
        del tangents
    if sym:  # entries below the computed region: Theta(x_i, x_j) = Theta(x_j, x_i)^T
        n = a.shape[0]
        lower = torch.ones(n, n, dtype=torch.bool, device=a.device).tril_(-1)
        result[lower] = _swap(result, outputs)[lower]
    return result


def _default_chunks(
    method: str, n1: int, n2: int, n_out: int, n_par: int, itemsize: int, act_bytes: int
) -> tuple[int, int]:
    """Inputs per vmap chunk ``(k1, k2)`` for x1 and x2, each between 1 and N, from :data:`CHUNK_BUDGET_BYTES`.

    Jacobian route (k1 = k2), per input: O P itemsize for its Jacobian plus O act_bytes for the backward pass
    through O cotangents. NTK-vector-product route: k2 O P itemsize for the tangents of k2 inputs of x2 (twice,
    for the scaled copies made in the forward pass) within the budget, then k2 O k1 act_bytes for the
    forward-mode activations of k1 inputs of x1 within the budget.
    """
    budget = CHUNK_BUDGET_BYTES
    if method == "jacobian":
        per = n_out * (n_par * itemsize + act_bytes)
        k = max(budget // max(per, 1), 1)
        return min(k, n1), min(k, n2)
    k2 = min(max(budget // max(2 * n_out * n_par * itemsize, 1), 1), n2)
    k1 = min(max(budget // max(k2 * n_out * act_bytes, 1), 1), n1)
    return int(k1), int(k2)


# --------------------------------------------------------------------------------------------------- NTK


def empirical_ntk(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    method: str = "auto",
    outputs: str = "trace",
    chunk_size: int | None = None,
    params: str | Sequence[str] | None = None,
) -> torch.Tensor:
    r"""The empirical neural tangent kernel of ``model`` between the inputs ``x1`` and ``x2``.

    .. math:: \Theta_{ab}(x, x') = \sum_p \frac{\partial f_a(x)}{\partial\theta_p}
              \frac{\partial f_b(x')}{\partial\theta_p}

    over the trainable parameters theta_p (``requires_grad=True``; Jacot et al. 2018, eq. 3; Roberts & Yaida
    2022, eq. 7.17 with unit learning rates). ``f(x)`` is the model output for one input, flattened: models
    returning shape (N,), (N, O) or (N, *out_shape) have O = 1, O, prod(out_shape) outputs.

    Args:
        model: any module whose forward maps a batch (N, ...) to (N, ...), with no coupling between inputs.
        x1, x2: inputs of shape (N1, ...) and (N2, ...), tensors or numpy arrays; converted to the dtype and device
            of the model's (first selected) parameter. ``x2=None`` means x2 = x1 (and exploits the symmetry:
            only blocks on and above the diagonal are computed, and the result is exactly symmetric).
        method: ``"jacobian"`` (Jacobian contraction), ``"jvp"`` (NTK-vector products; Novak et al. 2022) or
            ``"auto"``: ``"jacobian"`` when the Jacobians of all distinct inputs fit in
            :data:`AUTO_BUDGET_BYTES` (1 GiB), i.e. P (N1 + N2) O itemsize <= 1 GiB with N2 = 0 for
            ``x2=None``, else ``"jvp"``. Costs ([FP] = one forward pass on one input; Novak et al. 2022, Table 1):
            Jacobian contraction takes time ~ (N1 + N2) O [FP] + N1 N2 O P (times O for ``"full"``) and memory
            ~ chunk O P; NTK-vector products take time ~ N1 N2 O [FP] (reverse mode for each (x2, output) pair,
            forward mode through the x1 batch) and memory ~ chunk O (P + chunk activations), with no P-sized
            contraction. By FLOPs the jvp route should win for many outputs with ``"full"`` and cheap forward
            passes (MLPs); in practice (PyTorch eager, CPU, benchmarks/bench_empirical_ntk.py) the Jacobian route
            was faster in every case measured (1.3-4x for an MLP of width 512, d_out 1 or 10, trace or full),
            so the jvp route is for Jacobians that do not fit in memory, which is what ``"auto"`` encodes.
        outputs: ``"full"``: Theta_ab, shape (N1, N2, O, O); ``"diagonal"``: Theta_aa, shape (N1, N2, O);
            ``"trace"``: sum_a Theta_aa, shape (N1, N2). The trace is a sum, not a mean: neural-tangents'
            ``trace_axes=(-1,)`` (its default) returns the mean over outputs, i.e. this divided by O. To compare
            with an infinite-width kernel per output (Theta_ab -> Theta delta_ab), divide the trace by O.
        chunk_size: inputs per vmap chunk (bounds memory; results do not depend on it beyond rounding). Default:
            the largest chunk whose Jacobians (or tangents) and activations stay below
            :data:`CHUNK_BUDGET_BYTES` (512 MiB), estimated from the bytes autograd saves in a forward pass.
            In the Jacobian route, column-chunk Jacobians are kept for reuse up to 1 GiB in total
            (:data:`AUTO_BUDGET_BYTES`) and recomputed per row chunk beyond that. In the jvp route,
            ``chunk_size`` is both the number of x2 inputs whose O tangents are vmapped together and the number
            of x1 inputs per forward-mode batch (the default picks them separately).
        params: restrict the sum to some trainable parameters: a name or a list of names, each either a
            parameter name (``"readout.weight"``) or a module prefix (``"layers.1"`` selects
            ``layers.1.*``, not ``layers.10.*``). Default: all trainable parameters.

    Returns:
        A tensor in the dtype of the model's parameters (float64 for a float64 model), on their device.

    The model is never mutated: the kernel is computed with ``functional_call`` on detached copies of the
    parameters and buffers, so parameters, buffers, ``requires_grad``, hooks and ``training`` flags are as before,
    also when an error is raised. The forward pass runs in the model's current train/eval mode; call
    ``model.eval()`` yourself for models with dropout or batch norm. BatchNorm in training mode (or without
    running statistics) couples the inputs of a batch, so per-input kernels are undefined and it raises
    :class:`SphericalCowError`, as does active dropout. Forward hooks registered on the model do run.

    Raises:
        SphericalCowError: unknown ``method``/``outputs``, bad ``chunk_size``/``params``, NaN/inf or non-numeric
            inputs, a model that fails on the inputs (message names the argument and its shape), a model
            without trainable parameters, batch-coupling or random modules.
    """
    model = _check_model(model)
    method = _check_choice("method", method, NTK_METHODS)
    outputs = _check_choice("outputs", outputs, NTK_OUTPUTS)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    _check_per_example(model)
    theta, rest = _split_params(model, params)
    first = next(iter(theta.values()))
    dtype, device = first.dtype, first.device
    a = _as_input("x1", x1, dtype, device)
    b = None if x2 is None else _as_input("x2", x2, dtype, device)

    net = _Net(model, rest)
    shape, act1 = net.probe(theta, a, "x1")
    act = act1
    if b is not None:
        shape2, act2 = net.probe(theta, b, "x2")
        if shape2 != shape:
            raise SphericalCowError(
                f"model output per input has shape {shape} on x1 but {shape2} on x2; expected the same shape"
            )
        act = max(act1, act2)
    n_out = math.prod(shape)
    n_par = sum(t.numel() for t in theta.values())
    itemsize = first.element_size()
    if method == "auto":
        n_distinct = a.shape[0] + (0 if b is None else b.shape[0])
        method = "jacobian" if n_par * n_distinct * n_out * itemsize <= AUTO_BUDGET_BYTES else "jvp"
    n1, n2 = a.shape[0], a.shape[0] if b is None else b.shape[0]
    if chunk_size is not None:
        k1, k2 = min(chunk_size, n1), min(chunk_size, n2)
    else:
        k1, k2 = _default_chunks(method, n1, n2, n_out, n_par, itemsize, act)

    wrap = _wrap_transform_errors(method)
    try:
        if method == "jacobian":
            k = _ntk_jacobian(net, theta, a, b, n_out, outputs, (k1, k2))
        else:
            k = _ntk_jvp(net, theta, a, b, n_out, outputs, (k1, k2))
    except SphericalCowError:
        raise
    except (RuntimeError, NotImplementedError) as e:
        w = wrap(e)
        if w is e:
            raise
        raise w from e
    return _symmetrize(k, outputs) if b is None else k


# -------------------------------------------------------------------------------------------------- NNGP


def _last_readout(model: nn.Module) -> tuple[str, nn.Module]:
    found: tuple[str, nn.Module] | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear | NTKLinear):
            found = (name, m)
    if found is None:
        raise SphericalCowError(
            f"{type(model).__name__} has no nn.Linear or NTKLinear module to read out from; "
            "pass layer='<submodule name>' for the raw feature kernel of that submodule's output"
        )
    return found


def _capture(model: nn.Module, x: torch.Tensor, name: str, mod: nn.Module, arg: str, what: str) -> torch.Tensor:
    """One forward pass of ``model`` on ``x``; the input (``what="input"``) or output of ``mod``, as (N, ...)."""
    got: list[Any] = []

    def pre_hook(_m: nn.Module, args: Any) -> None:
        got.append(args[0].detach().clone() if args and isinstance(args[0], torch.Tensor) else args)

    def hook(_m: nn.Module, _args: Any, out: Any) -> None:
        got.append(out.detach().clone() if isinstance(out, torch.Tensor) else out)

    state = _State(model)
    handle = mod.register_forward_pre_hook(pre_hook) if what == "input" else mod.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    except SphericalCowError:
        raise
    except Exception as e:
        raise SphericalCowError(
            f"model failed on {arg} of shape {tuple(x.shape)} (input shape {tuple(x.shape[1:])} per example): "
            f"{type(e).__name__}: {e}"
        ) from e
    finally:
        handle.remove()
        state.restore()
    label = f"{what} of {type(mod).__name__} {name!r}"
    if len(got) != 1:
        ran = "did not run" if not got else f"ran {len(got)} times"
        raise SphericalCowError(f"{type(mod).__name__} {name!r} {ran} in one forward pass; expected exactly once")
    phi = got[0]
    if not isinstance(phi, torch.Tensor):
        raise SphericalCowError(f"the {label} is {type(phi).__name__}, not a tensor")
    if phi.dim() == 0 or phi.shape[0] != x.shape[0]:
        raise SphericalCowError(
            f"the {label} has shape {tuple(phi.shape)} for {arg}; expected its {x.shape[0]} inputs along dim 0"
        )
    return phi


def empirical_nngp(model: nn.Module, x1: Any, x2: Any = None, *, layer: str | nn.Module | None = None) -> torch.Tensor:
    r"""The empirical NNGP kernel of ``model``: the readout's output kernel given its input features, (N1, N2).

    Default (``layer=None``): phi(x) is the input of the readout, the last ``nn.Linear`` or
    :class:`~sphericalcow.nets.mlp.NTKLinear` in ``model.modules()`` order (captured with a forward pre-hook,
    removed afterwards; it must run exactly once and see inputs of shape (N, n)). The returned kernel is the
    covariance of one readout output over the readout's initialisation distribution, conditional on phi
    (Roberts & Yaida 2022, eq. 4.36 / 2.19: K^{(L+1)} = C_b + C_W <phi phi'>_n with <.>_n the mean over
    the n features):

    * ``NTKLinear`` readout, y = b_scale beta + w_scale W phi with W, beta ~ N(0, 1): exact,
      K(x, x') = b_scale^2 + w_scale^2 phi(x).phi(x') = C_b + C_W phi(x).phi(x') / n.
    * plain ``nn.Linear`` readout: the init variances are unknown, so the weights' own mean squares estimate
      them, K(x, x') = mean(W^2) phi(x).phi(x') + mean(b^2) (mean(b^2) = 0 without bias). For a freshly
      initialised W ~ N(0, C_W / n), b ~ N(0, C_b) this estimates C_W phi.phi'/n + C_b with relative error
      ~ sqrt(2 / (n d_out)); after training it is merely the kernel of a Gaussian readout of the same scale.

    With ``layer="name"`` (a name from ``model.named_modules()``, or the submodule itself) phi is the output of
    that submodule, flattened to (N, n_features), and the raw feature kernel phi(x).phi(x') / n_features is
    returned, with no readout mapping.

    The forward pass runs without gradients in the model's current train/eval mode (BatchNorm in training mode
    and active dropout raise :class:`SphericalCowError`; call ``model.eval()``). The model is not mutated: the
    hook is removed and the module state restored even if the forward pass raises. Returns a tensor in the
    dtype and on the device of the model's parameters; ``x2=None`` means x2 = x1.
    """
    model = _check_model(model)
    _check_per_example(model)
    device, dtype = _model_device_dtype(model)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = device or torch.device("cpu")
    a = _as_input("x1", x1, dtype, device)
    b = None if x2 is None else _as_input("x2", x2, dtype, device)

    if layer is None:
        name, mod = _last_readout(model)
        what = "input"
    else:
        if not isinstance(layer, str | nn.Module):
            raise SphericalCowError(
                f"layer={layer!r} of type {type(layer).__name__} is not allowed; expected a submodule name or module"
            )
        ((name, mod),) = resolve_layers(model, [layer])
        what = "output"
    phi1 = _capture(model, a, name, mod, "x1", what)
    phi2 = phi1 if b is None else _capture(model, b, name, mod, "x2", what)

    if layer is not None:
        f1, f2 = phi1.reshape(phi1.shape[0], -1), phi2.reshape(phi2.shape[0], -1)
        if f1.shape[1] != f2.shape[1]:
            raise SphericalCowError(
                f"layer {name!r} gives {f1.shape[1]} features per input on x1 but {f2.shape[1]} on x2; expected equal"
            )
        k = (f1 @ f2.T) / f1.shape[1]
    else:
        for p, arg in ((phi1, "x1"), (phi2, "x2")):
            if p.dim() != 2:
                raise SphericalCowError(
                    f"the input of the readout {type(mod).__name__} {name!r} has shape {tuple(p.shape)} for {arg}; "
                    "expected (n_inputs, features): pass layer='<name>' for the raw kernel of other features"
                )
        gram = phi1 @ phi2.T
        with torch.no_grad():
            if isinstance(mod, NTKLinear):
                wvar, bvar = mod.w_scale**2, mod.b_scale**2
            else:
                assert isinstance(mod, nn.Linear)
                wvar = float(mod.weight.detach().double().square().mean())
                bvar = 0.0 if mod.bias is None else float(mod.bias.detach().double().square().mean())
        k = wvar * gram + bvar
    if b is None:
        k = (k + k.T) / 2
    return k.to(dtype=dtype)
