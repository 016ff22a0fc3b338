"""``cow finite-width``: per-layer four-point vertex, kurtosis and NTK fluctuations of an MLP (theory only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table as RichTable


def register(app: typer.Typer) -> None:
    @app.command("finite-width")
    def finite_width_cmd(
        activation: Annotated[str, typer.Option(help="activation name or spec, e.g. tanh or leaky_relu:slope=0.1")],
        depth: Annotated[int, typer.Option(help="number of hidden layers L (>= 1)")],
        width: Annotated[int, typer.Option(help="hidden width n (>= 1)")],
        cw: Annotated[float | None, typer.Option(help="C_W (> 0); omitted: the critical value at this C_b")] = None,
        cb: Annotated[float, typer.Option(help="C_b (>= 0)")] = 0.0,
        d_in: Annotated[int, typer.Option(help="input dimension n_0")] = 1,
        q0: Annotated[float, typer.Option(help="|x|^2/n_0 of the input")] = 1.0,
        base_lr: Annotated[
            float | None, typer.Option(help="also print per-layer learning rates for this base rate")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    ) -> None:
        """Leading 1/n theory per layer: K, vertex V, kurtosis (and the exact value where one exists), NTK variance."""
        import math

        from .cli import _print_json, out_console
        from .description import MLP
        from .errors import SphericalCowError, check_positive
        from .theory.criticality import critical_init
        from .theory.finite_width import finite_width, ntk_velocity, universal_kurtosis_slope
        from .theory.learning_rates import learning_rates

        for name, v in (("--depth", depth), ("--width", width), ("--d-in", d_in)):
            if v < 1:
                raise SphericalCowError(f"{name}={v} is not allowed; expected an integer >= 1")
        q0 = check_positive("--q0", q0)
        cb = check_positive("--cb", cb, allow_zero=True)
        if cw is None:
            cw, cb = critical_init(activation, cb)
        else:
            cw = check_positive("--cw", cw)
        arch = MLP(d_in, width, depth, activation=activation, cw=cw, cb=cb)
        x = [math.sqrt(q0)] * d_in
        fw = finite_width(arch, x)
        try:
            cls, slope = universal_kurtosis_slope(arch.activation)
        except SphericalCowError:
            cls, slope = "other", None
        out = {
            "activation": arch.activation.label,
            "cw": cw,
            "cb": cb,
            "depth": depth,
            "width": width,
            "aspect_ratio": fw.aspect_ratio,
            "universality": cls,
            "universal_kurtosis_slope": slope,
            "layers": fw.as_rows(),
        }
        v = ntk_velocity(arch, x)
        out["ntk_velocity"] = {"rate": v.rate, "relative": v.relative, "coefficient": v.coefficient, "theta": v.theta}
        if base_lr is not None:
            lr = learning_rates(arch, base_lr, x)
            out["learning_rates"] = [
                {"layer": n, "weight_lr": float(w), "bias_lr": float(b)}
                for n, w, b in zip(lr.names, lr.weight_lr, lr.bias_lr, strict=True)
            ]
        if as_json:
            _print_json(out)
            return
        t = RichTable(title=f"finite width: {arch.activation.label}, L={depth}, n={width}, C_W={cw:.6g}, C_b={cb:.6g}")
        cols = ["layer", "r", "K", "V", "kurtosis", "kurtosis_exact", "theta", "ntk_variance"]
        for c in cols:
            t.add_column(c, justify="right")
        for row in out["layers"]:
            t.add_row(*("—" if row.get(c) is None else f"{row[c]:.6g}" for c in cols))
        out_console.print(t)
        note = f"aspect ratio r = depth/width = {fw.aspect_ratio:.4g}; class {cls}"
        if slope is not None:
            note += f": at criticality kurtosis ~ {slope:g} l/n at large depth"
        out_console.print(note)
        out_console.print(
            f"NTK change at the start of training (gradient flow, one input): mean dTheta/dt = {v.rate:.6g}, "
            f"relative {v.relative:.4g} per unit Theta t = {v.coefficient:.4g}/n"
        )
        if fw.aspect_ratio > 0.3:
            out_console.print("note: r > 0.3: the leading 1/n expansion is unreliable here (r of order one)")
        if base_lr is not None:
            lt = RichTable(title=f"per-layer learning rates (base {base_lr:g}, {arch.parametrization} parametrization)")
            for c in ("layer", "weight_lr", "bias_lr"):
                lt.add_column(c, justify="right")
            for row in out["learning_rates"]:
                lt.add_row(row["layer"], f"{row['weight_lr']:.6g}", f"{row['bias_lr']:.6g}")
            out_console.print(lt)
