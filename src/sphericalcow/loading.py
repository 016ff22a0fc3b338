"""Loading a user's model and data for the CLI: ``module:factory`` specs, checkpoints and data files.

A model spec is ``package.module:factory`` (imported) or ``path/to/file.py:factory`` (loaded from the file);
``factory`` is called with no arguments and must return a ``torch.nn.Module``. Checkpoints are read with
``torch.load(..., weights_only=True)``, so loading one never executes code. Data files are ``.npz`` (arrays ``x``
and optionally ``y``), ``.npy`` (inputs only) or ``.pt`` (a tensor or a dict with ``x``/``y``, weights_only).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from .errors import SphericalCowError


def load_factory(spec: str) -> torch.nn.Module:
    """The ``torch.nn.Module`` returned by the factory named by ``spec`` (``module:factory`` or ``file.py:factory``)."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise SphericalCowError(f"model spec {spec!r} is malformed; expected module:factory or path/to/file.py:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SphericalCowError(f"model file {target!r} does not exist")
        mod_name = f"_sphericalcow_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise SphericalCowError(f"model file {target!r} cannot be imported")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # the user's code: report it in one line
            raise SphericalCowError(f"importing {target!r} failed: {type(e).__name__}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise SphericalCowError(f"cannot import module {target!r}: {type(e).__name__}: {e}") from None
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise SphericalCowError(f"{target!r} has no callable {name!r}")
    try:
        model = factory()
    except Exception as e:
        raise SphericalCowError(f"{spec} raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise SphericalCowError(f"{spec} returned {type(model).__name__}; expected a torch.nn.Module")
    return model


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path``, read with ``weights_only=True`` (no code runs). A dict holding a
    ``state_dict``/``model_state_dict``/``model`` entry is unwrapped; non-tensor entries are dropped."""
    p = Path(path)
    if not p.is_file():
        raise SphericalCowError(f"checkpoint {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SphericalCowError(
            f"checkpoint {str(p)!r} cannot be read with weights_only=True ({type(e).__name__}); "
            "save a state_dict with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise SphericalCowError(f"checkpoint {str(p)!r}: tensor {bad[0]!r} holds NaN or inf")
        if tensors:
            return tensors
    raise SphericalCowError(f"checkpoint {str(p)!r} holds no tensors; expected a state_dict")


def load_data(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) from a ``.npz``/``.npy``/``.pt`` file, as float tensors (y keeps integer dtype for labels)."""
    p = Path(path)
    if not p.is_file():
        raise SphericalCowError(f"data file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise SphericalCowError(f"data file {str(p)!r} has no array 'x' (has: {', '.join(z.files)})")
                x, y = z["x"], (z["y"] if "y" in z.files else None)
        elif suffix == ".npy":
            x, y = np.load(p, allow_pickle=False), None
        elif suffix == ".pt":
            try:
                obj = torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:
                raise SphericalCowError(
                    f"data file {str(p)!r} cannot be read with weights_only=True ({type(e).__name__}); "
                    "save plain tensors, e.g. torch.save({'x': x, 'y': y}, path)"
                ) from None
            if isinstance(obj, torch.Tensor):
                x, y = obj, None
            elif isinstance(obj, dict) and "x" in obj:
                x, y = obj["x"], obj.get("y")
            else:
                raise SphericalCowError(f"data file {str(p)!r} must hold a tensor or a dict with 'x' (and 'y')")
        else:
            raise SphericalCowError(f"data file {str(p)!r} has suffix {suffix!r}; allowed: .npz, .npy, .pt")
    except SphericalCowError:
        raise
    except Exception as e:
        raise SphericalCowError(f"data file {str(p)!r} cannot be read: {type(e).__name__}: {e}") from None
    return _as_tensor(x, p, "x", labels=False), (None if y is None else _as_tensor(y, p, "y", labels=True))


def _as_tensor(a, p: Path, name: str, *, labels: bool) -> torch.Tensor:
    """Inputs become floating point (integers are converted); labels keep an integer dtype; NaN/inf are errors."""
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.ndim == 0 or t.shape[0] == 0:
        raise SphericalCowError(f"data file {str(p)!r}: {name!r} is empty or a scalar; expected one row per example")
    if t.is_complex() or t.dtype == torch.bool:
        raise SphericalCowError(f"data file {str(p)!r}: {name!r} has dtype {t.dtype}; expected real numbers")
    if not t.is_floating_point():
        return t.long() if labels else t.to(torch.get_default_dtype())
    if not torch.isfinite(t).all():
        raise SphericalCowError(f"data file {str(p)!r}: {name!r} contains NaN or inf")
    return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.get_default_dtype())
