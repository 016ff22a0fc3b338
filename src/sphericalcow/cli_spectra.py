"""The ``cow spectra`` command: per-layer weight spectra of a user's model or checkpoint; :func:`register` adds it.

``MODEL`` is ``module:factory`` / ``file.py:factory`` (the factory is called and its module analysed) or a checkpoint
file read with ``torch.load(..., weights_only=True)`` (no code runs; a pickle that would run code is refused). A bare
state dict is enough: its 2-D ``*weight`` tensors count as dense layers, 3- to 5-D ones as convolutions.
``--factory`` rebuilds the architecture and loads the checkpoint into it (strictly), so layers are recognised by
module type. Bad input raises :class:`~sphericalcow.errors.SphericalCowError` (one line, exit 2, via ``cli.main``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable

from .errors import SphericalCowError

__all__ = ["register", "spectra_cmd"]

_out = Console()

#: Columns shown by the table view (``--json`` and the CSV hold all of them).
SHOWN = ("layer", "kind", "shape", "Q", "spectral_norm", "stable_rank", "mp_sigma2", "n_spikes", "alpha", "alpha_se",
         "xmin", "n_tail", "ks_distance")  # fmt: skip


def _load_model(model: str, factory: str | None):
    import torch

    from .loading import load_checkpoint, load_factory

    path = Path(model)
    if path.is_file():
        sd = load_checkpoint(path)
        if factory is None:
            return sd, f"checkpoint {path}"
        net = load_factory(factory)
        try:
            net.load_state_dict(sd, strict=True)
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()
            detail = " ".join(first[1:3]).strip() if len(first) > 1 else (first[0] if first else "")
            raise SphericalCowError(
                f"checkpoint {str(path)!r} does not fit the model of --factory {factory}: {detail}"
            ) from None
        return net, f"checkpoint {path} in {factory}"
    if factory is not None:
        raise SphericalCowError(f"--factory is for checkpoints, but MODEL={model!r} is not a file")
    if ":" not in model or model.endswith((".pt", ".pth", ".ckpt", ".bin")):
        raise SphericalCowError(f"MODEL={model!r} is neither an existing checkpoint file nor a module:factory spec")
    net = load_factory(model)
    if not isinstance(net, torch.nn.Module):  # load_factory checks this; kept for type narrowing
        raise SphericalCowError(f"{model} did not return a torch.nn.Module")
    return net, model


def _check_out(out: Path) -> tuple[Path, Path]:
    if out.exists() and not out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a file; expected a folder")
    if not out.exists() and not out.parent.exists():
        raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} does not exist")
    csv, png = out / "spectra.csv", out / "spectra.png"
    for f in (csv, png):
        if f.exists():
            raise SphericalCowError(
                f"--out={str(out)!r} already holds {f.name}; choose a new folder (nothing is overwritten)"
            )
    return csv, png


def _publish(write, target: Path) -> None:
    """Write through a temporary file in the same folder and hard-link it into place: never overwrites."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise SphericalCowError(f"{str(target)!r} appeared while computing; nothing was overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:.4g}"
    return str(v)


def spectra_cmd(
    model: Annotated[str, typer.Argument(help="module:factory, file.py:factory, or a checkpoint file (.pt)")],
    factory: Annotated[
        str | None, typer.Option(help="module:factory that rebuilds a checkpoint's architecture (optional)")
    ] = None,
    layers: Annotated[
        list[str] | None, typer.Option("--layers", help="layer names, comma-separated or repeated (default: all)")
    ] = None,
    conv: Annotated[str, typer.Option(help="slices (per kernel position, weightwatcher) or reshape")] = "slices",
    level: Annotated[float, typer.Option(help="1 - false-alarm probability of the spike edge per layer")] = 0.99,
    alpha_se: Annotated[
        str, typer.Option(help="asymptotic (fast; ignores the choice of xmin) or bootstrap (Clauset et al. 3.5)")
    ] = "asymptotic",
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for --alpha-se bootstrap")] = 200,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
    out: Annotated[Path | None, typer.Option(help="folder for spectra.csv and spectra.png (not overwritten)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the per-layer records as JSON")] = False,
) -> None:
    """Per-layer ESDs of W^T W / N: Marchenko-Pastur fit (sigma^2, edge, spikes), power-law tail alpha, stable rank."""
    from .measure.weight_spectra import ALPHA_SE_METHODS, CONV_CONVENTIONS, plot_weight_spectra, weight_spectra

    if conv not in CONV_CONVENTIONS:
        raise SphericalCowError(f"--conv={conv!r} is not allowed; expected one of {', '.join(CONV_CONVENTIONS)}")
    if alpha_se not in ALPHA_SE_METHODS:
        allowed = ", ".join(ALPHA_SE_METHODS)
        raise SphericalCowError(f"--alpha-se={alpha_se!r} is not allowed; expected one of {allowed}")
    if not (0.5 <= level < 1.0):
        raise SphericalCowError(f"--level={level!r} is not allowed; expected 0.5 <= level < 1")
    csv = png = None
    if out is not None:
        csv, png = _check_out(out)
    names = None
    if layers:
        names = [s.strip() for item in layers for s in item.split(",") if s.strip()]
        if not names:
            raise SphericalCowError("--layers is empty; give layer names, e.g. --layers fc1,fc2")
    net, source = _load_model(model, factory)
    t0 = time.perf_counter()
    ws = weight_spectra(net, names, conv=conv, level=level, alpha_se=alpha_se, n_boot=n_boot, seed=seed)
    seconds = time.perf_counter() - t0
    records = ws.records()
    if out is not None:
        out.mkdir(exist_ok=True)
        df = ws.to_frame()
        _publish(lambda p: df.to_csv(p, index=False), csv)
        fig = plot_weight_spectra(ws)
        _publish(lambda p: fig.savefig(p, dpi=110, format="png"), png)
    if as_json:
        from .report.jsonio import to_jsonable

        payload = {"source": source, "conv": conv, "level": level, "seconds": round(seconds, 4), "layers": records}
        if out is not None:
            payload["files"] = [str(csv), str(png)]
        sys.stdout.write(json.dumps(to_jsonable(payload), indent=2, allow_nan=False) + "\n")
        return
    t = RichTable(title=f"weight spectra of {source} (conv={conv})")
    for c in SHOWN:
        t.add_column(c, justify="left" if c in ("layer", "kind", "shape") else "right")
    for r in records:
        t.add_row(*(_fmt(r[c]) for c in SHOWN))
    _out.print(t)
    _out.print(f"{len(records)} layers in {seconds:.2f} s" + (f"; wrote {csv} and {png}" if out is not None else ""))


def register(app: typer.Typer) -> None:
    """Add ``cow spectra`` to ``app``."""
    app.command("spectra")(spectra_cmd)
