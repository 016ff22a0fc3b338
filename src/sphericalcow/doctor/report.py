"""The doctor's report: verdicts, tables and figures; rendered through :mod:`sphericalcow.report` (a Result)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import SphericalCowError
from ..report.jsonio import atomic_write_text, to_jsonable
from ..report.result import FigureSpec, Result, Table, Verdict
from .diagnose import DEPTH_SCALE_FACTOR, KAPPA_MAX, DoctorVerdict
from .model_map import ModelMap

__all__ = ["DoctorReport"]


@dataclass
class DoctorReport:
    """What :func:`sphericalcow.doctor` found. ``verdicts`` in display order; ``failed`` the keys of failed ones."""

    model_type: str
    input_shape: tuple[int, ...]
    ensemble: str
    n_init: int
    seed: int
    verdicts: list[DoctorVerdict]
    summary: dict[str, Any]
    layers: list[dict[str, Any]]
    extra: dict[str, Any]
    model_map: ModelMap = field(repr=False)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # ----------------------------------------------------------------------------------------------- queries
    @property
    def passed(self) -> bool:
        """True when no verdict failed."""
        return not self.failed

    @property
    def failed(self) -> list[str]:
        """Keys of the failed verdicts (e.g. ``["criticality"]``)."""
        return [v.key for v in self.verdicts if v.passed is False]

    def verdict(self, key: str) -> DoctorVerdict:
        for v in self.verdicts:
            if v.key == key:
                return v
        raise SphericalCowError(
            f"key={key!r} is not a verdict of this report; expected one of {', '.join(v.key for v in self.verdicts)}"
        )

    def fix(self, model: nn.Module, *, seed: int = 0) -> nn.Module:
        """A re-initialised copy of ``model`` (:func:`sphericalcow.doctor_fix`)."""
        from .fix import doctor_fix

        return doctor_fix(model, self, seed=seed)

    # ----------------------------------------------------------------------------------------------- output
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``doctor.json``)."""
        from .fix import fix_plan

        s = {k: v for k, v in self.summary.items() if k != "finite_width"}
        return to_jsonable(
            {
                "model": self.model_type,
                "input_shape": list(self.input_shape),
                "passed": self.passed,
                "failed": self.failed,
                "verdicts": [v.to_dict() for v in self.verdicts],
                "ensemble": self.ensemble,
                "n_init": self.n_init,
                "seed": self.seed,
                "summary": {k: v for k, v in s.items() if not isinstance(v, list)},
                "layers": self.layers,
                "probes": s["probes"],
                "blocks": s["blocks"],
                "kurtosis": s["kurtosis"],
                "gradients": s["gradients"],
                "matched_mlp": None if self.model_map.mlp is None else self.model_map.mlp.to_dict(),
                "data": {k: v for k, v in self.extra.items() if k != "lr"},
                "lr": self.extra.get("lr"),
                "fix_plan": fix_plan(self),
                "thresholds": {"depth_scale_factor": DEPTH_SCALE_FACTOR, "kappa_max": KAPPA_MAX},
                "notes": self.notes,
                "seconds": self.seconds,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def markdown(self) -> str:
        """A short markdown verdict table."""
        lines = ["| verdict | status | finding | fix |", "|---|---|---|---|"]
        for v in self.verdicts:
            lines.append(f"| {v.title} | {v.status.upper()} | {v.message} | {v.fix or '—'} |")
        return "\n".join(lines)

    def to_result(self) -> Result:
        """The report as a :class:`~sphericalcow.report.result.Result` (tables, figures, verdicts)."""
        from .fix import fix_plan

        s = self.summary
        verdicts = [
            Verdict(
                f"{v.title}: {v.message}",
                v.passed,
                " ".join(
                    x for x in (f"Theory: {v.theory}." if v.theory else "", f"Fix: {v.fix}." if v.fix else "") if x
                ),
            )
            for v in self.verdicts
        ]
        plan = fix_plan(self)
        summary = (
            f"Doctor's report for a `{self.model_type}` on inputs of shape {list(self.input_shape)}: "
            f"{'no defects found' if self.passed else 'defects: ' + ', '.join(self.failed)}. "
            f"Ensemble of {self.n_init} initialisations ({self.ensemble}). "
            f"Phase of the plain chain: {s['phase']}; effective aspect ratio sum 1/width = {s['aspect_ratio']:.3g}."
            + (" Fix (`--fix`): " + "; ".join(plan) + "." if plan else "")
            + ("\n\nNotes: " + " ".join(self.notes) if self.notes else "")
        )
        tables = [
            Table(
                "layers",
                [
                    "layer",
                    "kind",
                    "fan_in",
                    "width",
                    "activation",
                    "readout",
                    "cw",
                    "cb",
                    "std",
                    "cw_critical",
                    "std_critical",
                ],
                [{k: r[k] for k in r if k not in ("cb_critical", "no_critical")} for r in self.layers],
                "Weight layers in execution order: effective C_W = fan_in E[W^2], C_b = E[b^2], and the critical "
                "values for the activation on each layer's input (sc.critical_init; empty where the activation has "
                "no critical point or is unknown). The readout is information only.",
            ),
            Table(
                "probes",
                ["probe", "K", "K_lo", "K_hi", "correlation"],
                s["probes"],
                "Second moment K = E[z^2] (95% CI over draws) and the correlation of two inputs at each probe.",
            ),
            Table(
                "blocks",
                [
                    "block",
                    "residual",
                    "chi_perp",
                    "chi_perp_lo",
                    "chi_perp_hi",
                    "chi_par",
                    "chi_par_lo",
                    "chi_par_hi",
                    "gain",
                    "chi_perp_theory",
                    "chi_par_theory",
                ],
                s["blocks"],
                "Measured susceptibilities per block (95% CI over draws), the mean gain K_out / K_in; theory columns "
                "for an MLP-like model.",
            ),
            Table(
                "gradients",
                [
                    "layer",
                    "kind",
                    "fan_in",
                    "readout",
                    "grad_sq",
                    "grad_sq_per_fan_in",
                    "bias_grad_sq",
                    "body_grad_sq_per_fan_in",
                ],
                s["gradients"],
                "Mean squared gradient of u . f(x) per layer over draws (weights; biases separately): an unbiased "
                "estimate of the layer's NTK trace on the batch. The verdict uses body_grad_sq_per_fan_in: the same "
                "backpropagated from the readout's input (u . h(x)), so the readout's scale cancels.",
            ),
            Table(
                "kurtosis",
                ["layer", "r", "kurtosis", "kurtosis_se", "predicted", "weight_term", "source"],
                s["kurtosis"],
                "Excess kurtosis of a unit's preactivation over the ensemble (jackknife SE) vs the leading-order "
                "prediction; r = sum of 1/width before the layer; weight_term = the part of the prediction due to "
                "non-Gaussian weights and biases (PyTorch's default uniform init), included in predicted.",
            ),
        ]
        if "ntk_contributions" in self.extra:
            tables.append(
                Table(
                    "ntk_contributions",
                    ["layer", "ntk_trace"],
                    [{"layer": k, "ntk_trace": v} for k, v in self.extra["ntk_contributions"].items()],
                    "Trace of each layer's NTK block on the example batch (sc.empirical_ntk with params=).",
                )
            )
        return Result(
            study="doctor",
            title=f"Doctor: {self.model_type}",
            summary=summary,
            config={"input_shape": list(self.input_shape), "n_init": self.n_init, "seed": self.seed},
            tables=tables,
            figures=self._figures(),
            verdicts=verdicts,
            data=self.to_dict(),
            meta={"seed": self.seed, "seconds": self.seconds, "ensemble": self.ensemble},
        )

    def _figures(self) -> list[FigureSpec]:
        from matplotlib.figure import Figure

        s = self.summary
        fig = Figure(figsize=(10, 3.6))
        a1, a2, a3 = fig.subplots(1, 3)
        ks = [r["K"] for r in s["probes"]]
        a1.semilogy(range(1, len(ks) + 1), ks, "o-")
        a1.set_xlabel("probe")
        a1.set_ylabel("second moment K")
        a1.set_title("forward signal")
        cp = [r["chi_perp"] for r in s["blocks"]]
        if cp:
            a2.plot(range(1, len(cp) + 1), cp, "o-", label="measured")
            th = [r["chi_perp_theory"] for r in s["blocks"]]
            if all(t is not None for t in th):
                a2.plot(range(1, len(th) + 1), th, "k--", label="theory")
            a2.axhline(1.0, color="gray", lw=0.8)
            pos = [v for v in cp if v is not None and math.isfinite(v) and v > 0]
            if pos and len(pos) == len(cp) and max(max(pos), 1.0) / min(min(pos), 1.0) > 10:
                a2.set_yscale("log")  # far from 1 on either side: show both the values and the critical line
            a2.legend()
        a2.set_xlabel("block")
        a2.set_ylabel("chi_perp")
        a2.set_title("susceptibility")
        g = [r["grad_sq_per_fan_in"] for r in s["gradients"]]
        if g and all(v > 0 and math.isfinite(v) for v in g):
            a3.semilogy(range(1, len(g) + 1), g, "o-")
        a3.set_xlabel("weight layer")
        a3.set_ylabel("|grad|^2 / fan_in")
        a3.set_title("backward signal")
        fig.tight_layout()
        fig2 = Figure(figsize=(5, 3.6))
        ax = fig2.subplots()
        kr = s["kurtosis"]
        ax.errorbar(
            range(1, len(kr) + 1),
            [r["kurtosis"] for r in kr],
            yerr=[2 * r["kurtosis_se"] if math.isfinite(r["kurtosis_se"]) else 0.0 for r in kr],
            fmt="o",
            label="measured",
        )
        if all(r["predicted"] is not None for r in kr):
            ax.plot(range(1, len(kr) + 1), [r["predicted"] for r in kr], "k--", label="predicted (leading order)")
        ax.set_xlabel("weight layer")
        ax.set_ylabel("excess kurtosis")
        ax.legend()
        fig2.tight_layout()
        return [
            FigureSpec("signal", fig, "Forward second moment, chi_perp per block and per-layer gradients."),
            FigureSpec("kurtosis", fig2, "Excess kurtosis over the ensemble vs the finite-width prediction."),
        ]

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write report.md, report.html, PNGs, results.json, config.json and doctor.json into ``out_dir``."""
        from ..report.render import write_run

        out = Path(out_dir)
        paths = write_run(self.to_result(), out)
        paths["doctor.json"] = atomic_write_text(out / "doctor.json", self.to_json() + "\n")
        return paths
