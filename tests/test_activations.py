"""Activation registry: lookup, specs, NumPy/torch agreement, derivatives, registration, errors."""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest
import torch

import sphericalcow.activations as acts
from sphericalcow.activations import (
    CLOSED_FORM_KINDS,
    Activation,
    activation,
    available_activations,
    register_activation,
)
from sphericalcow.errors import SphericalCowError

BUILTINS = [
    "abs",
    "erf",
    "gelu",
    "leaky_relu",
    "linear",
    "relu",
    "sigmoid",
    "silu",
    "sin",
    "softplus",
    "tanh",
]
CLOSED = {"relu", "leaky_relu", "linear", "abs", "erf", "sin"}
X = np.concatenate([np.linspace(-30.0, 30.0, 601), [-1e-3, 1e-3, -700.0, 700.0], np.linspace(-3, 3, 61)])
X_NOZERO = X[X != 0.0]


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers into a private copy of the registry."""
    monkeypatch.setattr(acts, "_REGISTRY", dict(acts._REGISTRY))
    monkeypatch.setattr(acts, "_ALIASES", dict(acts._ALIASES))


def all_builtins() -> list[Activation]:
    extra = [activation("leaky_relu", slope=0.2), activation("leaky_relu:slope=-1.5")]
    return [activation(n) for n in BUILTINS] + extra


# -- registry and specs ------------------------------------------------------------------------------------


def test_available_lists_builtins_sorted_without_aliases() -> None:
    names = available_activations()
    assert names == sorted(names)
    assert set(BUILTINS) <= set(names)
    assert "swish" not in names
    assert activation("swish") == activation("silu")
    assert activation("swish").name == "silu"


@pytest.mark.parametrize("act", all_builtins(), ids=lambda a: a.spec)
def test_spec_and_label_round_trip(act: Activation) -> None:
    assert activation(act.spec) == act
    assert activation(act.label) == act
    assert hash(activation(act.spec)) == hash(act)
    assert activation(act) is act
    assert pickle.loads(pickle.dumps(act)) == act
    assert copy.deepcopy(act) is act


def test_leaky_relu_forms_are_equal_and_params_are_copies() -> None:
    a = activation("leaky_relu", slope=0.1)
    assert a == activation("leaky_relu:slope=0.1") == activation("Leaky-ReLU(slope=0.1)")
    assert a.spec == "leaky_relu:slope=0.1"
    assert a.label == "leaky_relu(slope=0.1)"
    assert a.params == {"slope": 0.1}
    a.params["slope"] = 5.0
    assert a.params == {"slope": 0.1}
    assert activation("leaky_relu").params == {"slope": 0.01}
    assert activation("tanh").params == {} and activation("tanh").spec == "tanh" == activation("tanh").label
    assert activation(a, slope=0.3) == activation("leaky_relu:slope=0.3")
    assert a != activation("leaky_relu", slope=0.2)
    assert len({a, activation("leaky_relu:slope=0.1"), activation("relu")}) == 2
    with pytest.raises(dataclasses_frozen_error()):
        a.name = "relu"  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def _one_line(exc: pytest.ExceptionInfo[SphericalCowError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert isinstance(exc.value, ValueError)
    return msg


def test_unknown_name_message() -> None:
    with pytest.raises(SphericalCowError) as exc:
        activation("relu2")
    msg = _one_line(exc)
    assert "'relu2'" in msg and "allowed: abs, erf, gelu" in msg


@pytest.mark.parametrize(
    ("spec", "kwargs", "needle"),
    [
        ("leaky_relu", {"alpha": 0.1}, "unknown parameter 'alpha'"),
        ("relu", {"slope": 0.1}, "allowed: none"),
        ("leaky_relu:alpha=0.1", {}, "unknown parameter 'alpha'"),
        ("leaky_relu", {"slope": float("nan")}, "not finite"),
        ("leaky_relu", {"slope": float("inf")}, "not finite"),
        ("leaky_relu", {"slope": "abc"}, "not a number"),
        ("leaky_relu", {"slope": True}, "not a number"),
        ("leaky_relu:slope=abc", {}, "not a number"),
        ("leaky_relu:slope", {}, "key=value"),
        ("leaky_relu:slope=1,slope=2", {}, "given twice"),
        ("leaky_relu:slope=0.1", {"slope": 0.2}, "give it once"),
    ],
)
def test_bad_parameters(spec: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(SphericalCowError) as exc:
        activation(spec, **kwargs)
    assert needle in _one_line(exc)


def test_non_string_name() -> None:
    with pytest.raises(SphericalCowError) as exc:
        activation(3)  # type: ignore[arg-type]
    assert "3" in _one_line(exc)


# -- metadata ----------------------------------------------------------------------------------------------


def test_metadata() -> None:
    relu, leaky, lin, ab = (activation(n) for n in ("relu", "leaky_relu:slope=0.2", "linear", "abs"))
    assert relu.kinks == (0.0,) and leaky.kinks == (0.0,) and ab.kinks == (0.0,) and lin.kinks == ()
    assert relu.scale_invariant == (1.0, 0.0)
    assert leaky.scale_invariant == (1.0, 0.2)
    assert lin.scale_invariant == (1.0, 1.0)
    assert ab.scale_invariant == (1.0, -1.0)
    assert relu.sigma1 is None and ab.sigma1 is None and lin.sigma1 == 1.0
    for n in ("tanh", "erf", "sigmoid", "softplus", "gelu", "silu", "sin"):
        a = activation(n)
        assert a.kinks == () and a.scale_invariant is None
    assert activation("tanh").sigma0 == 0.0 and activation("tanh").sigma1 == 1.0
    assert activation("sigmoid").sigma0 == 0.5 and activation("sigmoid").sigma1 == 0.25
    assert activation("softplus").sigma0 == pytest.approx(math.log(2), rel=1e-15)
    assert activation("erf").sigma1 == pytest.approx(2 / math.sqrt(math.pi), rel=1e-15)
    assert activation("gelu").sigma1 == 0.5 and activation("silu").sigma1 == 0.5
    assert activation("leaky_relu:slope=1").kinks == ()


@pytest.mark.parametrize("act", all_builtins(), ids=lambda a: a.spec)
def test_closed_form_flags(act: Activation) -> None:
    for kind in CLOSED_FORM_KINDS:
        assert act.has_closed_form(kind) == (act.name in CLOSED)
        assert (act.closed_form(kind) is not None) == (act.name in CLOSED)


def test_unknown_kind() -> None:
    with pytest.raises(SphericalCowError) as exc:
        activation("relu").has_closed_form("cube")
    assert "'cube'" in _one_line(exc) and "sq" in str(exc.value)


# -- forward and derivative --------------------------------------------------------------------------------


@pytest.mark.parametrize("act", all_builtins(), ids=lambda a: a.spec)
def test_torch_forward_equals_numpy(act: Activation) -> None:
    y_np = act(X)
    assert y_np.dtype == np.float64 and y_np.shape == X.shape
    y_t = act.torch(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(y_t, y_np, rtol=1e-13, atol=1e-15)
    y_m = act.module()(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(y_m, y_t)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        t = act.torch(torch.linspace(-4, 4, 17, dtype=dtype))
        assert t.dtype == dtype
        np.testing.assert_allclose(t.double().numpy(), act(np.linspace(-4, 4, 17)), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("act", all_builtins(), ids=lambda a: a.spec)
def test_autograd_equals_derivative(act: Activation) -> None:
    x = torch.from_numpy(X.copy()).requires_grad_(True)
    (g,) = torch.autograd.grad(act.torch(x).sum(), x)
    # kinks included: .derivative follows torch's convention at the kink itself
    np.testing.assert_allclose(act.derivative(X), g.numpy(), rtol=1e-13, atol=1e-15)
    # and it is the derivative: central differences away from kinks
    xs = np.linspace(-5, 5, 41) + 0.0123
    h = 1e-6
    fd = (act(xs + h) - act(xs - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(xs), fd, rtol=1e-7, atol=1e-8)


def test_derivative_convention_at_kinks() -> None:
    assert activation("relu").derivative(0.0) == 0.0
    assert activation("abs").derivative(0.0) == 0.0
    assert activation("leaky_relu:slope=0.3").derivative(0.0) == 0.3


def test_numpy_outputs_are_writable_float64() -> None:
    y = activation("relu")([1, -2, 3])
    y[0] = 7.0
    assert y.dtype == np.float64
    assert activation("linear").derivative(np.zeros((2, 3))).shape == (2, 3)


def test_module_pickles_and_copies() -> None:
    mod = activation("leaky_relu:slope=0.25").module()
    buf = io.BytesIO()
    torch.save(mod, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back.activation == mod.activation
    assert "leaky_relu(slope=0.25)" in repr(back)
    x = torch.randn(5, dtype=torch.float64)
    assert torch.equal(copy.deepcopy(mod)(x), mod(x))
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), activation("tanh").module())
    assert pickle.loads(pickle.dumps(net))(torch.zeros(1, 3)).shape == (1, 4)


def test_softplus_is_exact_beyond_torch_threshold() -> None:
    x = np.array([19.0, 21.0, 25.0, 40.0, -40.0])
    exact = np.logaddexp(0.0, x)
    np.testing.assert_allclose(activation("softplus").torch(torch.from_numpy(x)).numpy(), exact, rtol=1e-15)


# -- user registration -------------------------------------------------------------------------------------


def test_register_user_activation() -> None:
    a = register_activation("myrelu", lambda t: torch.clamp(t, min=0.0), kinks=(0.0,))
    assert a.name == "myrelu" and a.spec == "myrelu" and a.kinks == (0.0,) and not a.builtin
    assert "myrelu" in available_activations()
    assert activation("myrelu") == a and activation("MyReLU") == a
    np.testing.assert_array_equal(a(X), activation("relu")(X))
    np.testing.assert_array_equal(a.derivative(X_NOZERO), activation("relu").derivative(X_NOZERO))
    assert a.scale_invariant is None and not a.has_closed_form("sq") and a.closed_form("cross") is None
    assert a.sigma0 == 0.0 and a.sigma1 is None
    assert pickle.loads(pickle.dumps(a)) == a
    x = torch.linspace(-1, 1, 5, requires_grad=True)
    a.module()(x).sum().backward()


def test_register_with_explicit_derivative_and_constant() -> None:
    cube = register_activation("cube", lambda t: t**3, derivative=lambda t: 3 * t**2)
    np.testing.assert_allclose(cube.derivative(X), 3 * X**2, rtol=1e-15)
    auto = register_activation("cube_auto", lambda t: t**3)
    np.testing.assert_allclose(auto.derivative(X), 3 * X**2, rtol=1e-15)
    assert cube.sigma1 == 0.0
    const = register_activation("const", lambda t: torch.ones_like(t))
    assert np.all(const(np.zeros((2, 2))) == 1.0) and np.all(const.derivative(np.ones(3)) == 0.0)


def test_register_errors() -> None:
    register_activation("foo", torch.tanh)
    with pytest.raises(SphericalCowError) as exc:
        register_activation("foo", torch.sin)
    assert "overwrite=True" in _one_line(exc)
    b = register_activation("foo", torch.sin, overwrite=True)
    np.testing.assert_allclose(b(X), np.sin(X))
    for name in ("relu", "swish"):
        with pytest.raises(SphericalCowError):
            register_activation(name, torch.tanh)
    with pytest.raises(SphericalCowError) as exc:
        register_activation("bar", 3.0)  # type: ignore[arg-type]
    assert "not callable" in _one_line(exc)
    with pytest.raises(SphericalCowError) as exc:
        register_activation("bar", torch.tanh, derivative="x")  # type: ignore[arg-type]
    assert "not callable" in _one_line(exc)
    for bad in ("", "1abc", "a:b", "a b", 5):
        with pytest.raises(SphericalCowError):
            register_activation(bad, torch.tanh)  # type: ignore[arg-type]
    with pytest.raises(SphericalCowError) as exc:
        register_activation("bar", torch.tanh, kinks=(float("nan"),))
    assert "finite" in _one_line(exc)
    with pytest.raises(SphericalCowError):
        register_activation("bar", torch.tanh, kinks=("x",))
    with pytest.raises(SphericalCowError) as exc:
        register_activation("bar", lambda t: t.sum())
    assert "elementwise" in _one_line(exc)
    with pytest.raises(SphericalCowError) as exc:
        register_activation("bar", lambda t: t.undefined_method())
    assert "failed" in _one_line(exc)
    assert "bar" not in available_activations()


def test_overwriting_alias_replaces_it() -> None:
    sw = register_activation("swish", lambda t: t * torch.sigmoid(2 * t), overwrite=True)
    assert activation("swish") == sw and activation("silu").name == "silu"
