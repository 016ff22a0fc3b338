"""``cow advise``: design advice for an MLP on a task or a data file at a parameter budget (:mod:`sphericalcow.advise`).

Bad input raises :class:`~sphericalcow.errors.SphericalCowError` (``cli.main`` prints it as one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable


def register(app: typer.Typer) -> None:
    @app.command("advise")
    def advise_cmd(
        budget: Annotated[int, typer.Option(help="parameter budget of the MLP (weights and biases)")],
        task: Annotated[
            str | None,
            typer.Option(
                help="a built-in task: teacher, multi-index, committee, polynomial, parity, manifold, mixture, "
                "digits, hierarchy"
            ),
        ] = None,
        data: Annotated[
            Path | None, typer.Option(help="data file with x and y: .npz (arrays x, y) or .pt (dict with x, y)")
        ] = None,
        loss: Annotated[
            str | None, typer.Option(help="mse or cross_entropy (default: cross_entropy for integer labels)")
        ] = None,
        d_out: Annotated[int | None, typer.Option(help="network outputs (default: from y)")] = None,
        activation: Annotated[
            str | None, typer.Option(help="force an activation (K*=0 or scale-invariant class); default: advised")
        ] = None,
        seed: Annotated[int, typer.Option(help="seed of the network whose NTK sets the rate, and of the data")] = 0,
        verify: Annotated[
            bool, typer.Option("--verify", help="train a short sweep around the recommendation and compare")
        ] = False,
        seeds: Annotated[int, typer.Option(help="--verify: initialisations per variant (>= 2)")] = 3,
        steps: Annotated[int, typer.Option(help="--verify: full-batch gradient-descent steps")] = 300,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
        out: Annotated[
            Path | None, typer.Option(help="also write a report folder (report.md/html, results.json)")
        ] = None,
        progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    ) -> None:
        """Recommend activation, initialisation, depth x width, parametrization and learning rates for an MLP,
        each with the theory it rests on; --verify trains a short sweep around it and says whether it was best."""
        from .advise import advice_result, advise
        from .cli import _print_json, out_console
        from .errors import SphericalCowError, check_int

        if (task is None) == (data is None):
            raise SphericalCowError("give exactly one of --task NAME or --data FILE")
        budget = check_int("--budget", budget, minimum=1)
        seed = check_int("--seed", seed, minimum=0)
        if verify:
            check_int("--seeds", seeds, minimum=2)
            check_int("--steps", steps, minimum=1)
        if out is not None and out.exists() and not out.is_dir():
            raise SphericalCowError(f"--out={str(out)!r} is a file; expected a folder")
        xy = None
        if data is not None:
            from .loading import load_data

            x, y = load_data(data)
            if y is None:
                raise SphericalCowError(f"--data={str(data)!r} has no targets 'y'; the advice needs (x, y)")
            xy = (x, y)
        advice = advise(xy, task, budget, d_out=d_out, loss=loss, seed=seed, activation=activation, progress=progress)
        if verify:
            advice.verify(n_seeds=seeds, steps=steps, progress=progress)
        paths = None
        if out is not None:
            from .report import write_run

            paths = write_run(advice_result(advice), out)
        if as_json:
            d = advice.to_dict()
            d["report"] = str(paths["report.html"]) if paths else None
            _print_json(d)
            return
        _print_advice(advice, out_console)
        if paths:
            out_console.print(f"report: {paths['report.html']}", markup=False, highlight=False)


def _print_advice(advice, console) -> None:
    t = RichTable(
        title=f"advice: {advice.task_description}, budget {advice.budget} parameters, loss {advice.loss}",
        show_lines=True,
    )
    t.add_column("field", no_wrap=True)
    t.add_column("advice")
    t.add_column("theory (numbers)")
    t.add_column("source")
    for item in advice.items:
        t.add_row(item.field, item.value, item.theory, item.source)
    console.print(t)
    lt = RichTable(title="per layer (init as std; learning rates, NTK and equivalent standard parametrization)")
    cols = ("layer", "fan_in", "fan_out", "weight_std", "bias_std", "weight_lr", "bias_lr", "weight_lr_standard")
    for c in cols:
        lt.add_column(c, justify="right")
    for row in advice.layers():
        lt.add_row(*(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    console.print(lt)
    for n in advice.notes:
        console.print(f"note: {n}", markup=False, highlight=False)
    v = advice.verification
    if v is None:
        return
    vt = RichTable(title=f"verify: {v.n_seeds} seeds x {v.steps} full-batch GD steps ({v.seconds:.0f} s)")
    vcols = ("variant", "depth", "width", "params", "nu_r", "base_lr", "train_loss", "test_loss", "test_loss_ci")
    for c in (*vcols, "accuracy", "diverged"):
        vt.add_column(c, justify="right")
    for row in v.rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in vcols]
        acc = row["accuracy"]
        vt.add_row(*cells, "—" if acc is None else f"{acc:.3f}", row["diverged"])
    console.print(vt)
    mark = {"best": "[green]best[/green]", "tied": "[yellow]tied[/yellow]", "beaten": "[red]beaten[/red]"}[v.outcome]
    console.print(f"verify: {mark}: ", end="")
    console.print(v.message, markup=False, highlight=False)
