"""The ``cow doctor`` command: theory-guided diagnosis of a user's model (:func:`sphericalcow.doctor`).

The model comes from a ``module:factory`` or ``file.py:factory`` spec (:func:`sphericalcow.loading.load_factory`);
the factory is also called (under fixed seeds) for the ensemble of initialisations. Inputs are random normal of
``--input-shape`` or the ``x`` of a ``--data`` file (with ``y``, also the data-dependent checks). Bad input raises
:class:`~sphericalcow.errors.SphericalCowError` (``cli.main`` prints it as one line, exit 2). A diagnosis that finds
defects still exits 0: the verdicts are the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from .errors import SphericalCowError

__all__ = ["doctor_cmd", "register"]

_out = Console()
#: Rows of a --data file used for the NTK spectrum, weight spectra and Hessian (the example batch: --batch rows).
MAX_DATA_ROWS = 256


def _parse_shape(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise SphericalCowError(
            f"--input-shape={text!r} is not allowed; expected comma-separated positive integers, e.g. 3,32,32"
        ) from None
    if not dims or any(d < 1 for d in dims):
        raise SphericalCowError(
            f"--input-shape={text!r} is not allowed; expected comma-separated positive integers, e.g. 3,32,32"
        )
    return dims


def doctor_cmd(
    model_spec: Annotated[str, typer.Argument(help="module:factory or path/to/file.py:factory returning an nn.Module")],
    input_shape: Annotated[
        str | None, typer.Option(help="shape of one example, e.g. 3,32,32 (inputs: standard normal)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="data file (.npz/.npy/.pt): x (and y for the NTK/Hessian/spectra checks)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate: sharpness vs 2/lr, per-layer rates")] = None,
    loss: Annotated[str | None, typer.Option(help="mse or cross_entropy (default: from y's dtype)")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default runs/<UTC timestamp>-doctor/)")] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="write fixed.pt (re-initialised state_dict) and re-check it")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    seed: Annotated[int, typer.Option(help="seed of the inputs and of the ensemble of initialisations")] = 0,
    n_init: Annotated[int, typer.Option(help="initialisations in the ensemble (the model + factory draws)")] = 12,
    batch: Annotated[int, typer.Option(help="examples in the probe batch")] = 16,
    progress: Annotated[bool, typer.Option(help="progress bars on stderr")] = True,
) -> None:
    """Diagnose a model at initialisation: criticality, gradients, residual scaling, aspect ratio; with data, NTK,
    sharpness and weight spectra. Writes report.md/report.html/PNGs/doctor.json; --fix writes a fixed copy."""
    import torch

    from .doctor import doctor, fixed_factory
    from .errors import check_int, check_positive
    from .loading import load_data, load_factory
    from .report.render import new_run_dir

    check_int("--seed", seed, minimum=0)
    check_int("--n-init", n_init, minimum=3)
    check_int("--batch", batch, minimum=2)
    if lr is not None:
        check_positive("--lr", lr)
    if loss is not None and loss not in ("mse", "cross_entropy"):
        raise SphericalCowError(f"--loss={loss!r} is not allowed; expected mse or cross_entropy")
    if (input_shape is None) == (data is None):
        raise SphericalCowError("give exactly one of --input-shape (e.g. 3,32,32) or --data FILE")
    if out is not None and out.exists() and not out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a file; expected a folder")
    if out is not None and (out / "doctor.json").exists():
        raise SphericalCowError(
            f"--out={str(out)!r} already holds doctor.json; choose a new folder (nothing overwritten)"
        )
    model = load_factory(model_spec)

    def factory() -> Any:
        return load_factory(model_spec)

    xy = None
    if input_shape is not None:
        shape = _parse_shape(input_shape)
        x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    else:
        xd, yd = load_data(data)
        if xd.shape[0] < 2:
            raise SphericalCowError(f"data file {str(data)!r} has {xd.shape[0]} row; the doctor needs at least 2")
        x = xd[:batch]
        if yd is not None:
            if yd.shape[0] != xd.shape[0]:
                raise SphericalCowError(f"data file {str(data)!r}: x has {xd.shape[0]} rows but y has {yd.shape[0]}")
            xy = (xd[:MAX_DATA_ROWS], yd[:MAX_DATA_ROWS])
        elif lr is not None:
            raise SphericalCowError(f"--lr needs targets: data file {str(data)!r} has no 'y'")
    if sum(p.numel() for p in model.parameters()) < 1_000_000:
        torch.set_num_threads(1)  # small models: intra-op threading costs more than it saves
    kw = {"data": xy, "lr": lr, "loss": loss, "n_init": n_init, "seed": seed, "progress": progress}
    report = doctor(model, x, factory=factory, **kw)
    run_dir = out if out is not None else new_run_dir("runs", "doctor")
    report.write(run_dir)
    result: dict[str, Any] = report.to_dict()
    result["out"] = str(run_dir)
    recheck = None
    if fix:
        fixed = report.fix(model, seed=seed)
        recheck = doctor(fixed, x, factory=fixed_factory(factory, report), **kw)
        torch.save(fixed.state_dict(), run_dir / "fixed.pt")
        recheck.write(run_dir / "fixed")
        result["fix"] = {
            "state_dict": str(run_dir / "fixed.pt"),
            "report": str(run_dir / "fixed"),
            "recheck": recheck.to_dict(),
        }
    if as_json:
        typer.echo(json.dumps(result, indent=2, allow_nan=False))
        return
    _print(report, "model")
    if recheck is not None:
        _print(recheck, "after --fix")
    _out.print(f"Report: {run_dir / 'report.html'}  ({run_dir / 'doctor.json'})", soft_wrap=True)
    if recheck is not None:
        _out.print(
            f"Fixed weights: {run_dir / 'fixed.pt'}; re-check: {run_dir / 'fixed' / 'report.html'}", soft_wrap=True
        )


def _print(report: Any, label: str) -> None:
    t = RichTable(title=f"doctor: {report.model_type} ({label})")
    t.add_column("check")
    t.add_column("status")
    t.add_column("finding")
    t.add_column("fix")
    style = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "info": "info"}
    for v in report.verdicts:
        t.add_row(v.title, style[v.status], v.message, v.fix or "")
    _out.print(t)


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to ``app`` (idempotent)."""
    if "doctor" not in {c.name for c in app.registered_commands}:
        app.command("doctor")(doctor_cmd)
