"""The ``cow`` command line: a thin layer over the library.

Bad input raises :class:`~sphericalcow.errors.SphericalCowError`; :func:`main` prints it as one line on stderr and
exits with code 2, with no traceback (usage errors from typer/click exit 2 the same way).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table as RichTable
from typer.exceptions import TyperException

from . import cli_advise, cli_doctor, cli_finite_width, cli_hessian, cli_ode, cli_spectra, cli_sweep
from .errors import SphericalCowError

app = typer.Typer(
    name="cow",
    help="sphericalcow: first-principles theory of neural networks next to PyTorch measurements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out_console = Console()
err_console = Console(stderr=True)


def _print_json(obj) -> None:
    from .report.jsonio import to_jsonable

    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _run_and_report(study: str, overrides: list[str] | None, out: Path | None, progress: bool) -> None:
    from .studies import parse_overrides, run_study

    result, paths = run_study(study, parse_overrides(overrides), out=out, progress=progress)
    n_ok = sum(bool(v.passed) for v in result.verdicts if v.passed is not None)
    n_graded = sum(v.passed is not None for v in result.verdicts)
    run_dir = paths["report.md"].parent
    out_console.print(f"[bold]{result.title}[/bold]")
    for v in result.verdicts:
        mark = "[green]agrees[/green]" if v.passed else ("[red]disagrees[/red]" if v.passed is False else "info")
        out_console.print(f"  {mark}  {v.claim}")
    out_console.print(f"{n_ok}/{n_graded} verdicts agree. Report: {paths['report.html']}")
    out_console.print(f"Run folder: {run_dir}")


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<UTC timestamp>-criticality/)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run the criticality study with its defaults (under a minute) and write its report."""
    _run_and_report("criticality", None, out, progress)


@app.command()
def run(
    study: Annotated[str, typer.Argument(help="study name, e.g. criticality")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="config override key=value (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/<UTC timestamp>-<study>/)")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run a study, e.g. `cow run criticality --set depth=100 --set width=1024`."""
    _run_and_report(study, set_, out, progress)


@app.command("criticality")
def criticality_cmd(
    activation: Annotated[str, typer.Option(help="activation name or spec, e.g. tanh or leaky_relu:slope=0.1")],
    cw: Annotated[float | None, typer.Option(help="C_W (> 0); omitted: the critical value at this C_b")] = None,
    cb: Annotated[float, typer.Option(help="C_b (>= 0)")] = 0.0,
    q0: Annotated[float, typer.Option(help="|x|^2/n_0 of the input; the recursion starts at C_b + C_W q0")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Fixed point K*, susceptibilities, depth scales and phase; with no --cw the critical initialisation."""
    from .errors import check_positive
    from .theory.criticality import critical_init, criticality

    q0 = check_positive("--q0", q0)
    cb = check_positive("--cb", cb, allow_zero=True)
    if cw is not None:
        cw = check_positive("--cw", cw)
    critical_asked = cw is None
    if critical_asked:
        cw, cb = critical_init(activation, cb)
    c = criticality(activation, cw, cb, K0=cb + cw * q0)
    d = c.to_dict()
    d["critical_init"] = critical_asked
    if as_json:
        _print_json(d)
        return
    t = RichTable(title=f"criticality of {c.activation}" + (" (critical initialisation)" if critical_asked else ""))
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for key in ("cw", "cb", "K_star", "chi_par", "chi_perp", "xi_par", "xi_perp", "phase", "universality"):
        v = d[key]
        t.add_row(key, f"{v:.10g}" if isinstance(v, float) else str(v))
    for k, v in c.class_constants.items():
        t.add_row(f"  {k}", f"{v:.10g}")
    out_console.print(t)
    for n in c.notes:
        out_console.print(f"note: {n}")


@app.command("phase-diagram")
def phase_diagram_cmd(
    activation: Annotated[str, typer.Option(help="activation name or spec")],
    out: Annotated[Path, typer.Option(help="PNG file to write")],
    n: Annotated[int, typer.Option(help="grid points per axis (>= 2)")] = 41,
    cw_max: Annotated[float | None, typer.Option(help="largest C_W on the grid")] = None,
    cb_max: Annotated[float | None, typer.Option(help="largest C_b on the grid")] = None,
    q0: Annotated[float, typer.Option(help="|x|^2/n_0 of the input")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="also print the grid as JSON")] = False,
) -> None:
    """Order-chaos phase diagram over (C_W, C_b) with the depth-scale map, written as a PNG."""
    import numpy as np

    from .activations import activation as get_activation
    from .errors import check_int, check_positive
    from .theory.phase import default_ranges, phase_diagram, plot_phase_diagram

    act = get_activation(activation)
    n = check_int("--n", n, minimum=2)
    if n > 1001:
        raise SphericalCowError(f"--n={n} is not allowed; expected 2 <= n <= 1001 grid points per axis")
    if out.suffix.lower() != ".png":
        raise SphericalCowError(f"--out={str(out)!r} must end in .png")
    if out.is_dir():
        raise SphericalCowError(f"--out={str(out)!r} is a folder; expected a .png file name")
    if not out.parent.exists():
        raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} does not exist")
    dcw, dcb = default_ranges(act)
    cw_hi = check_positive("--cw-max", cw_max) if cw_max is not None else dcw
    cb_hi = check_positive("--cb-max", cb_max) if cb_max is not None else dcb
    from .progress import progress_bar

    with progress_bar(1, f"phase diagram of {act.spec}", enabled=sys.stderr.isatty()) as adv:
        pd = phase_diagram(act, np.linspace(cw_hi / n, cw_hi, n), np.linspace(0.0, cb_hi, n), q0=q0)
        adv(1)
    fig = plot_phase_diagram(pd)
    tmp = out.with_name(out.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    if as_json:
        _print_json(pd.to_dict())
    else:
        out_console.print(f"wrote {out}")


_ARCH_KEYS = ("d_in", "width", "depth", "d_out", "activation", "cw", "cb", "parametrization", "residual")


def _load_points(path: Path, option: str):
    """A finite (N, d) float array from a .npy file (no pickles), or a one-line error naming the option."""
    import numpy as np

    if not path.is_file():
        raise SphericalCowError(f"{option}={str(path)!r} does not exist or is not a file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SphericalCowError(f"{option}={str(path)!r} is not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise SphericalCowError(f"{option}={str(path)!r} holds several arrays; expected one .npy array of shape (N, d)")
    if arr.dtype.kind not in "fiu" or arr.ndim != 2 or 0 in arr.shape:
        raise SphericalCowError(
            f"{option}={str(path)!r} has shape {arr.shape} and dtype {arr.dtype}; expected a numeric (N, d) array"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        row = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise SphericalCowError(f"{option}={str(path)!r} contains NaN or inf (first in row {row}); expected finite")
    return arr


def _arch_from_options(arch_file: Path | None, d_in: int, options: dict):
    import tomllib

    from .description import MLP

    if arch_file is None:
        kw = {k: v for k, v in options.items() if v is not None}
        return MLP(d_in=d_in, **kw)
    given = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is not None and k != "d_out"]
    if given:
        raise SphericalCowError(f"--arch and {given[0]} both describe the network; give one or the other")
    try:
        spec = tomllib.loads(arch_file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SphericalCowError(f"--arch={str(arch_file)!r} is not valid TOML ({e})") from None
    spec = spec.get("mlp", spec)
    if not isinstance(spec, dict):
        raise SphericalCowError(f"--arch={str(arch_file)!r}: [mlp] must be a table of keys, got {spec!r}")
    unknown = sorted(set(spec) - set(_ARCH_KEYS) - {"kind"})
    if unknown:
        raise SphericalCowError(f"--arch: unknown key {unknown[0]!r}; allowed: {', '.join(_ARCH_KEYS)}")
    spec.setdefault("d_in", d_in)
    if spec["d_in"] != d_in or isinstance(spec["d_in"], bool):
        raise SphericalCowError(f"--arch says d_in={spec['d_in']!r} but --x has {d_in} features")
    if "depth" not in spec:
        raise SphericalCowError("--arch must give depth")
    if "width" not in spec:
        if spec.get("parametrization") == "standard":
            raise SphericalCowError('--arch must give width with parametrization = "standard" (its NTK grows with it)')
        spec["width"] = 1  # does not enter NTK-parametrization kernels
    return MLP.from_dict(spec)


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _publish_npz(out: Path, arrays: dict, **extra) -> None:
    """Write to a unique temporary file beside ``out`` and hard-link it into place: never overwrites a file that
    appeared meanwhile (error instead), never touches other files."""
    import os
    import tempfile

    import numpy as np

    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **extra)
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise SphericalCowError(f"--out={str(out)!r} appeared while computing; nothing was overwritten") from None
    finally:
        tmp.unlink(missing_ok=True)


@app.command("kernel")
def kernel_cmd(
    x: Annotated[Path, typer.Option("--x", help="inputs, a .npy array of shape (N1, d)")],
    out: Annotated[Path | None, typer.Option(help=".npz file for the kernels (not overwritten)")] = None,
    x2: Annotated[Path | None, typer.Option("--x2", help="second inputs (N2, d); default: --x")] = None,
    arch: Annotated[Path | None, typer.Option("--arch", help="TOML file with the MLP description")] = None,
    depth: Annotated[int | None, typer.Option(help="hidden layers")] = None,
    width: Annotated[int | None, typer.Option(help="hidden width (enters only the standard parametrization)")] = None,
    activation: Annotated[
        str | None, typer.Option(help="activation name or spec, e.g. relu, leaky_relu:slope=0.1")
    ] = None,
    cw: Annotated[float | None, typer.Option(help="C_W; omitted: critical for the activation at this C_b")] = None,
    cb: Annotated[float | None, typer.Option(help="C_b (default 0)")] = None,
    parametrization: Annotated[str | None, typer.Option(help="ntk (default) or standard")] = None,
    residual: Annotated[bool | None, typer.Option("--residual/--no-residual", help="residual MLP")] = None,
    get: Annotated[str, typer.Option(help="comma-separated: nngp, ntk")] = "nngp,ntk",
    dtype: Annotated[str, typer.Option(help="float64 or float32 (outputs; computed in float64)")] = "float64",
    method: Annotated[str, typer.Option(help="auto, closed, interpolation or quadrature")] = "auto",
    block_size: Annotated[int, typer.Option(help="block edge for the blocked computation")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bar")] = None,
) -> None:
    """Infinite-width NNGP/NTK of an MLP between the rows of --x (and --x2), saved as .npz (keys nngp, ntk)."""
    import time

    import numpy as np

    from .theory.kernels import kernels

    if out is None and not as_json:
        raise SphericalCowError("give --out FILE.npz to save the kernels, or --json for a summary")
    if out is not None:
        if out.suffix.lower() != ".npz":
            raise SphericalCowError(f"--out={str(out)!r} must end in .npz")
        if out.exists():
            raise SphericalCowError(f"--out={str(out)!r} already exists; choose a new file (nothing is overwritten)")
        if not out.parent.exists():
            raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} does not exist")
        import os

        if not os.access(out.parent, os.W_OK):
            raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} is not writable")
    a = _load_points(x, "--x")
    b = None if x2 is None else _load_points(x2, "--x2")
    n2 = a.shape[0] if b is None else b.shape[0]
    items = tuple(g.strip() for g in get.split(",") if g.strip())
    need = a.shape[0] * n2 * (4 if dtype == "float32" else 8) * max(1, len(items))
    avail = _available_memory()
    if avail is not None and need > avail:
        raise SphericalCowError(
            f"the kernels of {a.shape[0]} x {n2} inputs need {need / 2**30:.1f} GiB; {avail / 2**30:.1f} GiB are "
            "available (use --dtype float32, fewer inputs, or --get one kernel)"
        )
    if b is not None and b.shape[1] != a.shape[1]:
        raise SphericalCowError(f"--x2 has {b.shape[1]} features but --x has {a.shape[1]}; they must match")
    options = {
        "depth": depth,
        "width": width,
        "activation": activation,
        "cw": cw,
        "cb": cb,
        "parametrization": parametrization,
        "residual": residual,
    }
    if arch is None:
        if depth is None or activation is None:
            raise SphericalCowError("describe the network with --arch FILE.toml, or --depth and --activation")
        if width is None and parametrization == "standard":
            raise SphericalCowError("--width is required with --parametrization standard (its NTK grows with width)")
        options["width"] = width if width is not None else 1  # does not enter NTK-parametrization kernels
    description = _arch_from_options(arch, a.shape[1], options)
    t0 = time.perf_counter()
    res = kernels(
        description,
        a,
        b,
        get=items,
        dtype=dtype,
        method=method,
        block_size=block_size,
        progress=progress if progress is not None else None,
    )
    seconds = time.perf_counter() - t0
    arrays = {g: res[g].numpy() for g in items}
    if out is not None:
        _publish_npz(out, arrays, x_shape=np.array(a.shape), x2_shape=np.array((b if b is not None else a).shape))
    summary = {
        "arch": {
            **description.to_dict(),
            "width": list(description.widths) if description.parametrization == "standard" else None,
        },
        "shape": [a.shape[0], (b if b is not None else a).shape[0]],
        "dtype": dtype,
        "seconds": round(seconds, 4),
        "out": str(out) if out is not None else None,
        "kernels": {
            g: {
                "min": float(v.min()),
                "max": float(v.max()),
                "mean": float(v.mean()),
                "mean_diagonal": float(np.diagonal(v).mean()) if b is None else None,
            }
            for g, v in arrays.items()
        },
    }
    if as_json:
        _print_json(summary)
        return
    d = description
    widths = f"widths {list(d.widths)}" if d.parametrization == "standard" else "infinite width"
    out_console.print(
        f"MLP depth {d.depth}, {d.activation.spec}, C_W={d.cw:.6g}, C_b={d.cb:.6g}, "
        f"{d.parametrization} parametrization{', residual' if d.residual else ''}, {widths}"
    )
    for g, st in summary["kernels"].items():
        out_console.print(
            f"  {g}: {summary['shape'][0]} x {summary['shape'][1]}, min {st['min']:.6g}, "
            f"max {st['max']:.6g}, mean {st['mean']:.6g}"
        )
    out_console.print(f"wrote {out} in {seconds:.2f} s")


@app.command("activations")
def activations_cmd() -> None:
    """List the registered activations and their universality class."""
    from .activations import activation as get_activation
    from .activations import available_activations
    from .theory.criticality import universality

    t = RichTable(title="activations")
    t.add_column("name")
    t.add_column("class")
    t.add_column("closed-form Gaussian expectations")
    for name in available_activations():
        act = get_activation(name)
        kinds = [k for k in ("sq", "dsq", "zssd", "cross", "dcross") if act.has_closed_form(k)]
        t.add_row(name, universality(act)[0], ", ".join(kinds) or "— (quadrature)")
    out_console.print(t)


@app.command()
def version() -> None:
    """Print the package version."""
    from . import __version__

    out_console.print(__version__)


cli_sweep.register(app)
cli_doctor.register(app)
cli_advise.register(app)
cli_hessian.register(app)
cli_ode.register(app)
cli_spectra.register(app)
cli_finite_width.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cow`` console script: errors become one line on stderr and exit code 2."""
    try:
        code = app(args=argv, prog_name="cow", standalone_mode=False)
    except TyperException as e:  # usage errors from the (vendored) click parser
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `cow`: help, as if --help
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(0)
        cmd = getattr(ctx, "info_name", None)
        hint = f" (see 'cow {cmd} --help')" if cmd and cmd != "cow" else " (see 'cow --help')"
        _one_line(e.format_message() + hint)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _one_line("aborted")
        sys.exit(130)
    except SphericalCowError as e:
        _one_line(str(e))
        sys.exit(2)
    except OSError as e:  # unwritable or occupied paths: a bad --out, not a bug
        _one_line(f"{e.strerror or e}: {e.filename!s}" if e.filename else str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        _one_line("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(message: str) -> None:
    err_console.print("error: " + " ".join(message.split()), markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":  # pragma: no cover
    main()
