"""Find the parts of an arbitrary ``torch.nn.Module`` that the theory talks about.

One traced forward pass (forward pre-hooks on every submodule) gives the execution order. From it:

* **weight layers**: modules that own a floating parameter with two or more dimensions (``nn.Linear``, ``nn.ConvNd``,
  ``nn.MultiheadAttention``, ``nn.Embedding``, sphericalcow's ``NTKLinear``, ...), with fan-in, width (output
  features) and the effective C_W = fan_in * E[W_eff^2] and C_b = E[b_eff^2] of the book's convention
  Var W = C_W / fan_in, Var b = C_b (Roberts & Yaida 2022, PDLT eq. 2.19); ``W_eff`` includes a ``w_scale``
  multiplier where the module has one (NTK parametrization).
* **activations**: ``nn.ReLU``, ``nn.Tanh``, ``nn.GELU``, ``nn.SiLU``, ``nn.LeakyReLU``, ``nn.Sigmoid``,
  ``nn.Softplus`` (beta=1), sphericalcow's ``ActivationModule``, and the functional ``activation`` attribute of
  ``nn.TransformerEncoderLayer``/``DecoderLayer`` (applied between ``linear1`` and ``linear2``), and activation
  *functions* called inside ``forward`` (``F.relu``, ``torch.tanh``, ``x.relu()``, ``F.gelu``, ``F.silu``,
  ``torch.sigmoid``, ``F.softplus``, ``F.leaky_relu``), recorded by a :class:`torch.overrides.TorchFunctionMode`
  during the traced pass (calls made inside an activation module are not counted twice). Other nonlinear functions
  (``F.elu``, ``F.hardtanh``, ``F.mish``, ...) and unrecognised activation modules mark the next layer's input
  activation as *unknown*: no critical C_W is claimed for it (rather than the "linear" C_W = 1). A weight layer's
  *input activation* is the last activation that ran after the previous weight layer; the critical C_W of a layer
  is set by that activation (PDLT §5: chi_perp = C_W <sigma'^2> for W acting on sigma(z)). The first layer takes the
  activation that follows it (the book's convention of one C_W for every layer).
* **readout**: the last weight layer, when its output is the model's output (up to identity/flatten/dropout); it is
  not a depth block (its susceptibility, ~ C_W / 2 for one output, says nothing about depth) and its scale is
  information only: zero or small readouts are healthy practice.
* **blocks** whose input-output Jacobians are measured: for a *repeated stack* (an ``nn.ModuleList``/``nn.Sequential``
  with at least two composite children of one class that hold weight layers: residual blocks, transformer layers),
  the stack's children; otherwise the chain of weight-layer outputs (preactivations z^{(l)}), block l mapping
  z^{(l)} to z^{(l+1)} (the activation and the next weight layer), the readout excluded.
* **residual blocks**: a block has an identity path if, with every parameter of its weight layers set to zero, its
  output is still aligned with its input (cosine > 0.9; a LayerNorm after the sum keeps the direction up to the
  removed mean, cosine ~ 0.97 for 16 features): z + f(z) with f = 0 returns z. A residual block whose last module
  to run is a normalisation layer is *post-norm* (LayerNorm(z + f(z))): its output scale is reset each block.
* **MLP-like** models (a chain of dense layers with one activation between them and nothing else that holds
  parameters) are matched to a :class:`sphericalcow.MLP` so the finite-width and learning-rate theory applies.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..activations import Activation, ActivationModule, activation
from ..errors import SphericalCowError

__all__ = ["Block", "Layer", "ModelMap", "activation_of", "map_model"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_PASSIVE = (nn.Dropout, nn.Flatten, nn.Identity, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_NORM = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
#: torch activation functions the registry knows (by ``__name__``; in-place variants end in ``_``).
_FUNC_ACTS = {"relu", "tanh", "gelu", "silu", "sigmoid", "softplus", "leaky_relu"}
#: Nonlinear activation functions outside the registry: the next layer's input activation is unknown.
_FUNC_UNKNOWN = {
    "elu",
    "selu",
    "celu",
    "mish",
    "hardtanh",
    "relu6",
    "hardswish",
    "hardsigmoid",
    "softsign",
    "tanhshrink",
    "logsigmoid",
    "glu",
    "prelu",
    "rrelu",
    "threshold",
    "hardshrink",
    "softshrink",
}
#: Activation modules outside the registry (their input-output map is nonlinear but has no critical theory here).
_UNKNOWN_ACT_MODULES = (
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Mish,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.GLU,
    nn.PReLU,
    nn.RReLU,
    nn.Threshold,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Softplus,
)
#: Cosine between a block's input and its output with its weight layers zeroed above which it has an identity path.
RESIDUAL_COSINE = 0.9


def activation_of(obj: Any) -> Activation | None:
    """The registry activation of a torch activation module or function, or ``None`` if it is not one."""
    if isinstance(obj, ActivationModule):
        return obj.activation
    if isinstance(obj, nn.ReLU) or obj in (F.relu, torch.relu):
        return activation("relu")
    if isinstance(obj, nn.Tanh) or obj in (torch.tanh, F.tanh):
        return activation("tanh")
    if isinstance(obj, nn.GELU) or obj is F.gelu:
        return activation("gelu")
    if isinstance(obj, nn.SiLU) or obj is F.silu:
        return activation("silu")
    if isinstance(obj, nn.LeakyReLU):
        return activation("leaky_relu", slope=float(obj.negative_slope))
    if isinstance(obj, nn.Sigmoid) or obj in (torch.sigmoid, F.sigmoid):
        return activation("sigmoid")
    if isinstance(obj, nn.Softplus) and float(obj.beta) == 1.0:
        return activation("softplus")
    return None


def _function_activation(func: Any, args: tuple, kwargs: dict) -> Activation | str | None:
    """A torch function call as an activation: the registry activation, the function's name if it is a nonlinearity
    outside the registry (unknown), or ``None`` if it is not an activation function."""
    name = getattr(func, "__name__", "")
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    if base in _FUNC_ACTS:
        if base == "leaky_relu":
            slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
            return activation("leaky_relu", slope=float(slope))
        if base == "softplus":
            beta = args[1] if len(args) > 1 else kwargs.get("beta", 1.0)
            return activation("softplus") if float(beta) == 1.0 else f"softplus(beta={beta})"
        return activation(base)
    if base in _FUNC_UNKNOWN:
        return base
    return None


class _ActivationCalls(TorchFunctionMode):
    """Records activation-function calls into ``events`` unless made inside an activation module (``depth`` > 0)."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events
        self.depth = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth == 0:
            act = _function_activation(func, args, kwargs)
            if act is not None:
                self.events.append(("function", act))
        return func(*args, **kwargs)


def _weight_param(mod: nn.Module) -> tuple[str, torch.Tensor] | None:
    for name, p in mod.named_parameters(recurse=False):
        if p.is_floating_point() and p.dim() >= 2:
            return name, p
    return None


def weight_of(mod: nn.Module) -> torch.Tensor:
    """The weight tensor the doctor reads for a weight layer (its first floating parameter of dimension >= 2)."""
    w = _weight_param(mod)
    if w is None:
        raise SphericalCowError(f"{type(mod).__name__} has no weight matrix")
    return w[1]


def _kind(mod: nn.Module) -> str:
    if isinstance(mod, _CONV):
        return "conv"
    if isinstance(mod, nn.MultiheadAttention):
        return "attention"
    if isinstance(mod, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    w = _weight_param(mod)
    if w is not None and w[1].dim() == 2 and hasattr(mod, "in_features") and hasattr(mod, "out_features"):
        return "linear"
    return "other"


def _fan_in_width(mod: nn.Module, kind: str, w: torch.Tensor) -> tuple[int, int]:
    if kind == "conv":
        k = math.prod(mod.kernel_size)
        if isinstance(mod, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            return (mod.out_channels // mod.groups) * k, mod.out_channels
        return (mod.in_channels // mod.groups) * k, mod.out_channels
    if kind == "attention":
        return mod.embed_dim, mod.embed_dim
    if kind == "embedding":
        return 1, w.shape[1]
    if kind == "linear":
        return int(mod.in_features), int(mod.out_features)
    return int(math.prod(w.shape[1:])), int(w.shape[0])


@dataclass
class Layer:
    """One weight layer: ``cw``/``cb`` are fan_in E[W_eff^2] and E[b_eff^2]; ``in_act`` the activation on its input."""

    name: str
    kind: str
    fan_in: int
    width: int
    cw: float
    cb: float
    w_scale: float
    b_scale: float
    in_act: Activation | None = None
    out_act: Activation | None = None
    calls: int = 1
    first: bool = False
    unknown_act: str | None = None
    readout: bool = False
    out_unknown: str | None = None
    #: The kind ("layer", "rms", "batch" as in :func:`sphericalcow.theory.finite_width.normalized_kurtosis_slope`,
    #: or "other"; :func:`_norm_kind`) of a normalisation that ran between the previous weight layer and this one,
    #: else ``None``; ``act_after_norm``: an activation ran after it (the layer reads phi(Norm(z))) rather than before
    #: it or not at all (Norm(...)).
    norm_in: str | None = None
    act_after_norm: bool = False
    #: a nonlinearity outside the registry ran after that normalisation (the layer reads f(Norm(z)) with f unknown)
    unknown_after_norm: bool = False
    #: the module's class name (``Linear``, ``Conv2d``, ``EmbeddingBag``, ...)
    module_type: str = ""

    @property
    def init_act(self) -> Activation | None:
        """The activation whose critical C_W this layer should have: its input activation (none: linear, C_W = 1);
        the first layer takes the activation that follows it (PDLT's single C_W for all layers). ``None`` when the
        input passes through a nonlinearity the doctor cannot identify (``unknown_act``)."""
        if self.unknown_act is not None:
            return None
        if self.first and self.in_act is None and self.out_act is None and self.out_unknown is not None:
            return None
        if self.in_act is not None:
            return self.in_act
        if self.first and self.out_act is not None:
            return self.out_act
        return activation("linear")


@dataclass
class Block:
    """A measured block: from probe ``src`` to probe ``dst`` (each ``(module name, "in" | "out")``)."""

    name: str
    src: tuple[str, str]
    dst: tuple[str, str]
    residual: bool = False
    layers: list[str] = field(default_factory=list)
    post_norm: bool = False


@dataclass
class ModelMap:
    """What :func:`map_model` found; ``mlp`` is the matched :class:`sphericalcow.MLP` or ``None``."""

    layers: list[Layer]
    blocks: list[Block]
    probes: list[tuple[str, str]]
    stack: str | None
    mlp: Any
    mlp_layers: list[str]
    activations: list[str]
    notes: list[str]
    readout: str | None = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def dominant_activation(self) -> Activation | None:
        """The most common input activation of the hidden weight layers (ties: the first seen)."""
        acts = [la.in_act for la in self.layers if la.in_act is not None and la.in_act.spec != "linear"]
        if not acts:
            return None
        specs = [a.spec for a in acts]
        best = max(dict.fromkeys(specs), key=specs.count)
        return next(a for a in acts if a.spec == best)

    @property
    def residual(self) -> bool:
        return any(b.residual for b in self.blocks)


def _trace(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[str], dict[str, int], Any, list[tuple[str, Any]], dict[str, Any]]:
    """One forward pass: execution order of modules (first calls), call counts, the output, the event sequence
    (``("module", name)`` at each first call, ``("function", activation | name)`` for activation-function calls)
    and each module's first output."""
    order: list[str] = []
    calls: dict[str, int] = {}
    events: list[tuple[str, Any]] = []
    outputs: dict[str, Any] = {}
    handles = []
    mode = _ActivationCalls(events)
    for name, mod in model.named_modules():
        is_act = activation_of(mod) is not None or isinstance(mod, _UNKNOWN_ACT_MODULES)

        def pre(_m, _a, name=name, is_act=is_act):
            if name not in calls:
                order.append(name)
                calls[name] = 0
                events.append(("module", name))
            calls[name] += 1
            if is_act:
                mode.depth += 1

        def post(_m, _a, out, name=name, is_act=is_act):
            if is_act:
                mode.depth -= 1
            if name not in outputs:
                outputs[name] = out

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    try:
        with torch.enable_grad(), mode:  # grad mode keeps PyTorch's fused fast paths (which skip hooks) off
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return order, calls, out, events, outputs


def _find_stack(model: nn.Module, weight_names: set[str], executed: set[str]) -> tuple[str, list[str]] | None:
    best: tuple[str, list[str]] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList | nn.Sequential):
            continue
        prefix = f"{name}." if name else ""
        kids = [(f"{prefix}{k}", c) for k, c in mod.named_children()]
        by_cls: dict[type, list[str]] = {}
        for kname, c in kids:
            composite = any(True for _ in c.children())
            holds = any(w == kname or w.startswith(kname + ".") for w in weight_names)
            if composite and holds and kname in executed:
                by_cls.setdefault(type(c), []).append(kname)
        for names in by_cls.values():
            if len(names) >= 2 and (best is None or len(names) > len(best[1])):
                best = (name, names)
    return best


def _is_residual(block: nn.Module, x_in: Any, weight_names: list[str]) -> bool:
    if not isinstance(x_in, torch.Tensor):
        return False
    b = copy.deepcopy(block)
    with torch.no_grad():
        for name, mod in b.named_modules():
            if name in weight_names:
                for p in mod.parameters():
                    p.zero_()
        try:
            with torch.enable_grad():
                out = b(x_in)
        except Exception:  # the block needs more than one argument: no verdict on its identity path
            return False
    out = out[0] if isinstance(out, tuple) else out
    if not isinstance(out, torch.Tensor) or out.shape != x_in.shape:
        return False
    a, c = x_in.detach().reshape(-1).double(), out.detach().reshape(-1).double()
    denom = float(a.norm() * c.norm())
    return denom > 0 and float(a @ c) / denom > RESIDUAL_COSINE


def select_output(out: Any) -> tuple[Any, str | None]:
    """The tensor the doctor analyses: ``out`` itself, else the first tensor of a tuple/list or (in insertion order)
    of a dict; returns it and a description of the choice (``None`` for a plain tensor)."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, tuple | list):
        for i, t in enumerate(out):
            if isinstance(t, torch.Tensor):
                return t, f"the model returns a {type(out).__name__}; the doctor analyses its element {i}"
    if isinstance(out, dict):
        for k, t in out.items():
            if isinstance(t, torch.Tensor):
                return t, f"the model returns a dict; the doctor analyses its first tensor, key {k!r}"
    return out, None


def _norm_kind(mod: nn.Module) -> str:
    """ "batch" for batch norm (standardises each unit over the batch); "rms" for RMSNorm; "layer" for LayerNorm and
    GroupNorm with one group (centre and scale over the units of one example); else "other" (InstanceNorm, GroupNorm
    with several groups: statistics over parts of an example). :func:`map_model` also labels "other" a layer or RMS
    norm whose statistic does not cover exactly the fan-in of the linear layer that reads it."""
    if isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
        return "batch"
    if isinstance(mod, nn.GroupNorm):
        return "layer" if mod.num_groups == 1 else "other"
    if hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm):
        return "rms"
    return "layer" if isinstance(mod, nn.LayerNorm) else "other"


def _norm_size(mod: nn.Module, out: Any) -> int | None:
    """How many units one normalisation statistic covers: prod(normalized_shape) for LayerNorm/RMSNorm, the
    per-example size of the output for GroupNorm with one group; ``None`` otherwise."""
    shape = getattr(mod, "normalized_shape", None)
    if shape is not None:
        return int(math.prod(shape))
    if isinstance(mod, nn.GroupNorm) and mod.num_groups == 1 and isinstance(out, torch.Tensor) and out.dim() >= 1:
        return int(out[0].numel())
    return None


def map_model(model: nn.Module, x: torch.Tensor) -> tuple[ModelMap, Any]:
    """Trace ``model`` (float64 eval-mode copy expected) on ``x``; returns the map and the output."""
    order, calls, out, events, outputs = _trace(model, x)
    mods = dict(model.named_modules())
    layers: list[Layer] = []
    last_act: Activation | None = None
    unknown: str | None = None
    acts_seen: list[str] = []
    unknown_seen: list[str] = []
    leaves_ok = True
    norm_in: str | None = None
    norm_size: int | None = None
    act_after_norm = unknown_after_norm = False
    for kind_ev, item in events:
        if kind_ev == "function":
            if isinstance(item, str):
                if layers and layers[-1].out_act is None and layers[-1].out_unknown is None:
                    layers[-1].out_unknown = item
                unknown, last_act, leaves_ok = item, None, False
                unknown_after_norm = unknown_after_norm or norm_in is not None
                unknown_seen.append(item)
                continue
            acts_seen.append(item.spec)
            if layers and layers[-1].out_act is None:
                layers[-1].out_act = item
            last_act, unknown, act_after_norm = item, None, norm_in
            continue
        name = item
        mod = mods[name]
        act = activation_of(mod)
        if act is not None:
            acts_seen.append(act.spec)
            if layers and layers[-1].out_act is None:
                layers[-1].out_act = act
            last_act, unknown, act_after_norm = act, None, norm_in
            continue
        if isinstance(mod, _NORM):
            norm_in, act_after_norm, unknown_after_norm = _norm_kind(mod), False, False
            norm_size = _norm_size(mod, outputs.get(name))
        if isinstance(mod, _UNKNOWN_ACT_MODULES):
            if layers and layers[-1].out_act is None and layers[-1].out_unknown is None:
                layers[-1].out_unknown = type(mod).__name__
            unknown, last_act, leaves_ok = type(mod).__name__, None, False
            unknown_after_norm = unknown_after_norm or norm_in is not None
            unknown_seen.append(type(mod).__name__)
            continue
        w = _weight_param(mod)
        if w is None:
            own = any(True for _ in mod.parameters(recurse=False))
            leaf = not any(True for _ in mod.children())
            if own or (leaf and not isinstance(mod, _PASSIVE)):
                leaves_ok = False
            continue
        kind = _kind(mod)
        fan_in, width = _fan_in_width(mod, kind, w[1])
        ws = float(getattr(mod, "w_scale", 1.0))
        bs = float(getattr(mod, "b_scale", 1.0))
        bias = getattr(mod, "bias", None)
        cw = float(fan_in * (w[1].detach().double() * ws).pow(2).mean())
        cb = float((bias.detach().double() * bs).pow(2).mean()) if isinstance(bias, torch.Tensor) else 0.0
        la = Layer(name, kind, fan_in, width, cw, cb, ws, bs, in_act=last_act, calls=calls[name], unknown_act=unknown)
        if norm_in in ("layer", "rms") and (kind != "linear" or norm_size != fan_in):
            norm_in = "other"  # normalised over other units than this layer's fan-in
        la.norm_in, la.act_after_norm, la.unknown_after_norm = norm_in, act_after_norm, unknown_after_norm
        la.module_type = type(mod).__name__
        layers.append(la)
        last_act, unknown, norm_in, act_after_norm, unknown_after_norm = None, None, None, False, False
        if kind not in ("linear",) or calls[name] != 1:
            leaves_ok = False
    # functional activations of transformer layers (fallback if the call was not recorded): between linear1, linear2
    for name, mod in mods.items():
        if isinstance(mod, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            act = activation_of(getattr(mod, "activation", None))
            prefix = f"{name}." if name else ""
            for la in layers:
                if la.name == f"{prefix}linear2" and la.in_act is None and act is not None:
                    la.in_act = act
                    acts_seen.append(act.spec)
                if la.name == f"{prefix}linear1" and la.out_act is None and act is not None:
                    la.out_act = act
    if not layers:
        raise SphericalCowError(
            f"{type(model).__name__} has no weight layers that run in forward (nn.Linear, nn.ConvNd, attention, ...)"
        )
    layers[0].first = True
    notes: list[str] = []
    if unknown_seen:
        notes.append(
            f"nonlinearities outside the activation registry ({', '.join(dict.fromkeys(unknown_seen))}): the layers "
            "that read them get no critical C_W and are not re-initialised by the fix"
        )
    shared = [la.name for la in layers if la.calls > 1]
    if shared:
        notes.append(f"layers called more than once (weight sharing) are probed at their first call: {shared[:3]}")
    readout = _readout(layers, outputs, out)
    if readout is not None:
        readout.readout = True
    weight_names = [la.name for la in layers]
    stack = _find_stack(model, set(weight_names), set(order))
    blocks: list[Block] = []
    probes: list[tuple[str, str]]
    mlp, mlp_layers = _match_mlp(layers, x) if leaves_ok else (None, [])
    if stack is not None and mlp is None:
        stack_name, kids = stack
        kids = sorted(kids, key=order.index)
        probes = [(kids[0], "in")] + [(k, "out") for k in kids]
        captured = _capture_inputs(model, x, kids)
        for i, k in enumerate(kids):
            inner = [w for w in weight_names if w.startswith(k + ".")]
            res = _is_residual(mods[k], captured.get(k), [w[len(k) + 1 :] for w in inner])
            ran = [n for n in order if n.startswith(k + ".")]
            post = res and bool(ran) and isinstance(mods[ran[-1]], _NORM)
            blocks.append(Block(k, probes[i], probes[i + 1], residual=res, layers=inner, post_norm=post))
    else:
        stack_name = None
        chain = [la for la in layers if la.kind != "embedding"]
        probes = [(la.name, "out") for la in chain]
        for i in range(1, len(chain)):
            if chain[i].readout:
                continue
            blocks.append(Block(chain[i].name, probes[i - 1], probes[i], layers=[chain[i].name]))
    return (
        ModelMap(
            layers,
            blocks,
            probes,
            stack_name,
            mlp,
            mlp_layers,
            list(dict.fromkeys(acts_seen)),
            notes,
            readout.name if readout is not None else None,
        ),
        out,
    )


def _readout(layers: list[Layer], outputs: dict[str, Any], out: Any) -> Layer | None:
    """The last weight layer if the model's output is its output (same tensor, or equal values and shape: passive
    modules such as Flatten, Identity or eval-mode Dropout in between), else ``None``."""
    if len(layers) < 2:
        return None
    last = layers[-1]
    o, _ = select_output(out)
    r, _ = select_output(outputs.get(last.name))
    if not isinstance(o, torch.Tensor) or not isinstance(r, torch.Tensor):
        return None
    if o is r or (o.shape == r.shape and torch.equal(o, r)):
        return last
    if o.numel() == r.numel() and o.shape[:1] == r.shape[:1] and torch.equal(o.reshape(-1), r.reshape(-1)):
        return last
    return None


def _capture_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    handles = []
    mods = dict(model.named_modules())
    for n in names:

        def pre(_m, args, n=n):
            if n not in got and args:
                got[n] = args[0].detach().clone() if isinstance(args[0], torch.Tensor) else None

        handles.append(mods[n].register_forward_pre_hook(pre))
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return got


def _match_mlp(layers: list[Layer], x: torch.Tensor) -> tuple[Any, list[str]]:
    """A :class:`sphericalcow.MLP` (standard parametrization) with the model's widths, activation and pooled
    C_W, C_b, if the model is a plain chain of dense layers with one hidden activation, one C_W (each layer within
    10% + 4 sampling SDs, sqrt(2 / numel), of the pooled value) and one C_b (the same, or within 1% of C_W)."""
    from ..description import MLP

    if len(layers) < 2 or any(la.kind != "linear" for la in layers):
        return None, []
    for a, b in itertools.pairwise(layers):
        if a.width != b.fan_in:
            return None, []
    hidden_acts = {la.in_act.spec if la.in_act else None for la in layers[1:]}
    if len(hidden_acts) != 1 or None in hidden_acts or layers[-1].out_act is not None:
        return None, []
    if x.dim() < 2 or math.prod(x.shape[1:]) != layers[0].fan_in:
        return None, []
    sizes = [la.fan_in * la.width for la in layers]
    cw = sum(la.cw * s for la, s in zip(layers, sizes, strict=True)) / sum(sizes)
    cb = sum(la.cb * la.width for la in layers) / sum(la.width for la in layers)
    if any(abs(la.cw / cw - 1) > 0.1 + 4.0 * math.sqrt(2.0 / (la.fan_in * la.width)) for la in layers):
        return None, []
    # one C_b too (PyTorch's default 1 / (3 fan_in) differs where the input's width differs from the hidden one: the
    # pooled value put 3x the bias into the deeper layers and predicted half the measured kurtosis there); a mismatch
    # below 1% of C_W is immaterial
    if any(abs(la.cb - cb) > (0.1 + 4.0 * math.sqrt(2.0 / la.width)) * cb + 0.01 * cw for la in layers):
        return None, []
    act = layers[1].in_act
    widths = [la.width for la in layers[:-1]]
    try:
        arch = MLP(
            d_in=layers[0].fan_in,
            width=widths,
            depth=len(widths),
            d_out=layers[-1].width,
            activation=act,
            cw=cw,
            cb=cb,
            parametrization="standard",
        )
    except SphericalCowError:
        return None, []
    return arch, [la.name for la in layers]
