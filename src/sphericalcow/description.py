"""One description of a network, many interpretations.

An :class:`MLP` is described once; the same object builds a ``torch.nn.Module`` (``arch.build(seed)``) and feeds
every theoretical recursion (``sphericalcow.theory``). Conventions follow Roberts & Yaida, *The Principles of
Deep Learning Theory* (2022), §2.3 and §4: ``depth`` counts hidden layers, each a dense layer followed by the
activation; a readout dense layer sits on top, so an MLP of depth L has L+1 weight matrices, all with
Var W = C_W / fan_in and Var b = C_b.

Residual MLP (``residual=True``): z^{(1)} = W^{(1)} x + b^{(1)}, then
z^{(l+1)} = z^{(l)} + W^{(l+1)} sigma(z^{(l)}) + b^{(l+1)} for the hidden-to-hidden layers, and a plain readout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .activations import Activation, activation
from .errors import SphericalCowError, check_int, check_positive

PARAMETRIZATIONS = ("ntk", "standard")


@dataclass(frozen=True, init=False)
class MLP:
    """A fully connected network: ``depth`` hidden layers of ``width`` units and a ``d_out`` readout.

    ``cw=None`` means the critical value for the activation at this ``cb`` (see
    :func:`sphericalcow.critical_init`). ``width`` is an int or a list with one entry per hidden layer.
    ``parametrization`` is ``"ntk"`` (z = sqrt(C_b) beta + sqrt(C_W / fan_in) W x with W, beta ~ N(0, 1)) or
    ``"standard"`` (W ~ N(0, C_W / fan_in), b ~ N(0, C_b) stored directly); both have the same forward
    statistics at initialisation.
    """

    d_in: int
    widths: tuple[int, ...]
    depth: int
    d_out: int
    activation: Activation
    cw: float
    cb: float
    parametrization: str
    residual: bool
    cw_is_critical: bool = field(default=False, compare=False)

    def __init__(
        self,
        d_in: int,
        width: int | Sequence[int],
        depth: int,
        d_out: int = 1,
        activation: str | Activation = "relu",
        cw: float | None = None,
        cb: float = 0.0,
        parametrization: str = "ntk",
        residual: bool = False,
    ) -> None:
        d_in = check_int("d_in", d_in, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        d_out = check_int("d_out", d_out, minimum=1)
        if isinstance(width, (list, tuple)):
            if len(width) != depth:
                raise SphericalCowError(
                    f"width={list(width)!r} has {len(width)} entries; expected one per hidden layer (depth={depth})"
                )
            widths = tuple(check_int(f"width[{i}]", w, minimum=1) for i, w in enumerate(width))
        else:
            widths = (check_int("width", width, minimum=1),) * depth
        act = _resolve_activation(activation)
        cb = check_positive("cb", cb, allow_zero=True)
        if parametrization not in PARAMETRIZATIONS:
            raise SphericalCowError(
                f"parametrization={parametrization!r} is not allowed; expected one of {', '.join(PARAMETRIZATIONS)}"
            )
        if not isinstance(residual, bool):
            raise SphericalCowError(f"residual={residual!r} is not allowed; expected True or False")
        if residual and len(set(widths)) != 1:
            raise SphericalCowError(
                f"residual MLP needs equal hidden widths (z + W sigma(z) adds vectors); got width={list(widths)}"
            )
        is_critical = cw is None
        if cw is None:
            from .theory.criticality import critical_init

            cw, _ = critical_init(act, cb=cb)
        cw = check_positive("cw", cw)
        for name, value in (
            ("d_in", d_in),
            ("widths", widths),
            ("depth", depth),
            ("d_out", d_out),
            ("activation", act),
            ("cw", cw),
            ("cb", cb),
            ("parametrization", parametrization),
            ("residual", bool(residual)),
            ("cw_is_critical", is_critical),
        ):
            object.__setattr__(self, name, value)

    @property
    def width(self) -> int | tuple[int, ...]:
        """The hidden width: an int when all hidden layers agree, else the per-layer tuple."""
        return self.widths[0] if len(set(self.widths)) == 1 else self.widths

    @property
    def aspect_ratio(self) -> float:
        """The finite-width expansion parameter sum_l 1/n_l (= depth/width for a constant width)."""
        return float(sum(1.0 / n for n in self.widths))

    def layer_names(self) -> list[str]:
        """Names (in ``model.named_modules()``) whose outputs are the preactivations z^{(1)}..z^{(L+1)}."""
        return [f"layers.{i}" for i in range(self.depth)] + ["readout"]

    def build(self, seed: int | None = None, *, dtype: Any = None, device: Any = None):
        """Return a freshly initialised ``torch.nn.Module`` for this description (see :mod:`sphericalcow.nets`)."""
        from .nets.mlp import build_mlp

        return build_mlp(self, seed=seed, dtype=dtype, device=device)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict from which :meth:`from_dict` rebuilds an equal description."""
        return {
            "kind": "mlp",
            "d_in": self.d_in,
            "width": list(self.widths),
            "depth": self.depth,
            "d_out": self.d_out,
            "activation": self.activation.spec,
            "cw": self.cw,
            "cb": self.cb,
            "parametrization": self.parametrization,
            "residual": self.residual,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLP:
        """Inverse of :meth:`to_dict`."""
        kw = {k: v for k, v in d.items() if k != "kind"}
        return cls(**kw)

    def __repr__(self) -> str:
        w = self.width
        return (
            f"MLP(d_in={self.d_in}, width={w if isinstance(w, int) else list(w)}, depth={self.depth}, "
            f"d_out={self.d_out}, activation={self.activation.spec!r}, cw={self.cw:.6g}, cb={self.cb:.6g}, "
            f"parametrization={self.parametrization!r}, residual={self.residual})"
        )


def _resolve_activation(a: str | Activation) -> Activation:
    return a if isinstance(a, Activation) else activation(a)
