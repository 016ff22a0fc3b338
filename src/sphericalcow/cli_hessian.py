"""The ``cow hessian`` command: curvature of a user's model (top/bottom eigenvalues, trace, spectral density).

The model comes from a ``module:factory`` or ``file.py:factory`` spec, optionally with a checkpoint read with
``weights_only=True`` (no code runs from checkpoints); data from ``.npz``/``.npy``/``.pt`` (:mod:`.loading`).
Bad input raises :class:`~sphericalcow.errors.SphericalCowError` (``cli.main`` prints it as one line, exit 2).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from .errors import SphericalCowError

__all__ = ["hessian_cmd", "register"]

_out = Console()
OUT_FILES = ("hessian.json", "density.png")


def _select(model: Any, wanted: list[str] | None) -> list[str] | None:
    """``--params`` values: exact parameter names, or regular expressions matched with re.search; their union."""
    if not wanted:
        return None
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for w in wanted:
        if w in names:
            chosen.add(w)
            continue
        try:
            pat = re.compile(w)
        except re.error:
            raise SphericalCowError(
                f"--params {w!r} is neither a parameter name nor a regular expression; names: {', '.join(names[:8])}"
            ) from None
        hits = [n for n in names if pat.search(n)]
        if not hits:
            raise SphericalCowError(f"--params {w!r} matches no parameter; names: {', '.join(names[:8])}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a file; expected a folder")
    taken = [f for f in OUT_FILES if (out / f).exists()]
    if taken:
        raise SphericalCowError(
            f"--out={str(out)!r} already holds {taken[0]}; choose a new folder (nothing overwritten)"
        )


def hessian_cmd(
    model_spec: Annotated[str, typer.Argument(help="module:factory or path/to/file.py:factory returning an nn.Module")],
    data: Annotated[Path, typer.Option(help="data file: .npz with x and y, or .pt with a dict {x, y}")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="state_dict file, read with torch.load(weights_only=True)")
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="mse or cross_entropy (default: cross_entropy for integer y, else mse)")
    ] = None,
    params: Annotated[
        list[str] | None, typer.Option("--params", help="parameter name or regex (repeat for several); default all")
    ] = None,
    top: Annotated[int, typer.Option(help="largest eigenvalues to compute")] = 10,
    bottom: Annotated[int, typer.Option(help="smallest (most negative) eigenvalues to compute")] = 0,
    trace: Annotated[bool, typer.Option("--trace", help="trace (Hutch++) with a 95% CI")] = False,
    density: Annotated[
        bool, typer.Option("--density", help="spectral density (stochastic Lanczos quadrature) and saddle index")
    ] = False,
    mode: Annotated[str, typer.Option(help="eval or train behaviour of BatchNorm/dropout")] = "eval",
    gauss_newton: Annotated[bool, typer.Option("--gauss-newton", help="Gauss-Newton matrix instead")] = False,
    batch_size: Annotated[
        int | None, typer.Option(help="accumulate over batches of this many examples (default: one batch)")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float64 or float32 (default: the model's)")] = "auto",
    max_iter: Annotated[int | None, typer.Option(help="Lanczos steps limit (default max(6k, 120))")] = None,
    probes: Annotated[int, typer.Option(help="matrix-vector products for --trace (Hutch++)")] = 99,
    seed: Annotated[int, typer.Option(help="random start vectors and probes; dropout masks in train mode")] = 0,
    out: Annotated[Path | None, typer.Option(help="folder for hessian.json (and density.png)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars on stderr")] = True,
) -> None:
    """Top/bottom Hessian eigenvalues (Lanczos), trace (Hutch++) and spectral density (SLQ) of a model's loss."""
    import torch

    from .errors import check_int
    from .loading import load_checkpoint, load_data, load_factory
    from .measure.hessian import HessianOperator, hutchpp, lanczos, spectral_density
    from .report.jsonio import to_jsonable

    check_int("--top", top, minimum=0)
    check_int("--bottom", bottom, minimum=0)
    check_int("--seed", seed, minimum=0)
    check_int("--probes", probes, minimum=6)
    if top == 0 and bottom == 0 and not trace and not density:
        raise SphericalCowError("nothing to compute; give --top K, --bottom K, --trace or --density")
    if loss is not None and loss not in ("mse", "cross_entropy"):
        raise SphericalCowError(f"--loss={loss!r} is not allowed; expected mse or cross_entropy")
    if mode not in ("eval", "train"):
        raise SphericalCowError(f"--mode={mode!r} is not allowed; expected eval or train")
    if dtype not in ("auto", "float32", "float64"):
        raise SphericalCowError(f"--dtype={dtype!r} is not allowed; expected float32, float64 or auto")
    if out is not None:
        _check_out(out)
    model = load_factory(model_spec)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            detail = " ".join(first[1:2]).strip() if len(first) > 1 else first[0] if first else ""
            raise SphericalCowError(f"checkpoint {str(checkpoint)!r} does not fit the model: {detail}") from None
    x, y = load_data(data)
    if y is None:
        raise SphericalCowError(f"data file {str(data)!r} has no targets 'y'; the loss needs them")
    if x.shape[0] != y.shape[0]:
        raise SphericalCowError(f"data file {str(data)!r}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    loss_name = loss or ("mse" if y.is_floating_point() else "cross_entropy")
    if loss_name == "cross_entropy" and y.is_floating_point():
        raise SphericalCowError("--loss cross_entropy needs integer class labels y; got floating-point y")
    if batch_size is not None:
        bs = check_int("--batch-size", batch_size, minimum=1)
        batches: Any = list(zip(torch.split(x, bs), torch.split(y, bs), strict=True))
    else:
        batches = (x, y)
    names = _select(model, params)
    dt = None if dtype == "auto" else getattr(torch, dtype)
    t0 = time.perf_counter()
    if sum(p.numel() for p in model.parameters()) < 1_000_000:
        torch.set_num_threads(1)  # small models: intra-op threading costs more than it saves (and collapses under load)
    try:
        op = HessianOperator(
            model, loss_name, batches, params=names, mode=mode, gauss_newton=gauss_newton, dtype=dt, seed=seed
        )
        base_loss = op.loss()
        if not math.isfinite(float(base_loss)):
            raise SphericalCowError(
                f"the loss on {str(data)!r} is {base_loss} (not finite): the model's weights or outputs overflow or "
                "hold NaN; the Hessian is undefined there"
            )
    except SphericalCowError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as e:  # shape/dtype mismatch between model and data
        msg = " ".join(str(e).split())[:200]
        raise SphericalCowError(f"evaluating the model on {str(data)!r} failed: {type(e).__name__}: {msg}") from None
    k = max(top, bottom)
    result: dict[str, Any] = {
        "model": model_spec,
        "matrix": "gauss_newton" if gauss_newton else "hessian",
        "n_params": op.size,
        "params": op.param_names,
        "loss_fn": loss_name,
        "loss": base_loss,
        "mode": mode,
        "dtype": str(op.dtype).removeprefix("torch."),
        "n_examples": int(x.shape[0]),
        "seed": seed,
    }
    if k > 0:
        if k > op.size:
            raise SphericalCowError(f"--top/--bottom {k} is more than the {op.size} selected parameters")
        which = "both" if top and bottom else ("top" if top else "bottom")
        eig = lanczos(op, k, which=which, max_iter=max_iter, seed=seed, progress=progress)
        result["eigen"] = {
            "top": eig.top[:top].tolist(),
            "top_residuals": eig.top_residuals[:top].tolist(),
            "bottom": eig.bottom[:bottom].tolist(),
            "bottom_residuals": eig.bottom_residuals[:bottom].tolist(),
            "converged": eig.converged,
            "iterations": eig.iterations,
        }
    if trace:
        tr = hutchpp(op, probes, seed=seed, progress=progress)
        result["trace"] = tr.to_dict()
    sd = None
    if density:
        sd = spectral_density(op, n_probes=10, n_iter=min(80, op.size), seed=seed, progress=progress)
        idx = sd.saddle_index()
        result["density"] = {
            "sigma": sd.sigma,
            "iterations": sd.iterations,
            "n_probes": int(sd.nodes.shape[0]),
            "saddle_index": {"estimate": idx.mean, "lo": idx.lo, "hi": idx.hi},
            "negative_fraction": idx.mean / op.size,
            "grid": sd.grid.tolist(),
            "density": sd.density.tolist(),
        }
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["n_matvec"] = op.n_matvec
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "hessian.json").write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
        if sd is not None:
            _density_figure(sd, result).savefig(out / "density.png", dpi=120)
    if as_json:
        typer.echo(json.dumps(to_jsonable(result), indent=2, allow_nan=False))
        return
    _print_summary(result, out)


def _density_figure(sd: Any, result: dict) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    ax.semilogy(sd.grid, sd.density + 1e-12)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (SLQ)")
    ax.set_title(f"{result['matrix']} spectrum, {result['n_params']} parameters (sigma={sd.sigma:.2g})")
    fig.tight_layout()
    return fig


def _print_summary(result: dict, out: Path | None) -> None:
    _out.print(
        f"[bold]{result['matrix']}[/bold] of {result['loss_fn']} loss {result['loss']:.6g} over "
        f"{result['n_examples']} examples, {result['n_params']} parameters ({result['mode']} mode, {result['dtype']})"
    )
    if "eigen" in result:
        e = result["eigen"]
        t = RichTable("rank", "top eigenvalue", "residual", "bottom eigenvalue", "residual")
        for i in range(max(len(e["top"]), len(e["bottom"]))):
            row = [str(i + 1)]
            for key in ("top", "bottom"):
                if i < len(e[key]):
                    row += [f"{e[key][i]:.6g}", f"{e[key + '_residuals'][i]:.1e}"]
                else:
                    row += ["", ""]
            t.add_row(*row)
        _out.print(t)
        state = "converged" if e["converged"] else "NOT converged (raise --max-iter)"
        _out.print(f"Lanczos: {e['iterations']} iterations, {state}")
    if "trace" in result:
        tr = result["trace"]
        _out.print(
            f"trace (Hutch++, {tr['n_matvec']} products): {tr['estimate']:.6g}  95% CI [{tr['lo']:.6g}, {tr['hi']:.6g}]"
        )
    if "density" in result:
        d = result["density"]["saddle_index"]
        _out.print(
            f"saddle index (SLQ): {d['estimate']:.1f}  95% CI [{d['lo']:.1f}, {d['hi']:.1f}] negative directions "
            f"of {result['n_params']}"
        )
    _out.print(f"{result['n_matvec']} matrix-vector products in {result['seconds']:.2f} s")
    if out is not None:
        _out.print(f"Written: {out / 'hessian.json'}" + (f", {out / 'density.png'}" if "density" in result else ""))


def register(app: typer.Typer) -> None:
    """Add ``hessian`` to ``app`` (idempotent)."""
    if "hessian" not in {c.name for c in app.registered_commands}:
        app.command("hessian")(hessian_cmd)
