"""Strict JSON for study outputs: conversion of numpy/torch/dataclass values, atomic writes.

Non-finite numbers
------------------
JSON (RFC 8259) has no NaN or Infinity. Python's ``json`` module writes them as the bare tokens ``NaN`` /
``Infinity`` by default, which most other JSON parsers (browsers, ``jq``, pydantic in strict mode) reject.
So in the default *strict* mode :func:`to_jsonable` maps every non-finite float (nan, +inf, -inf; Python,
numpy or torch) to ``None``, i.e. JSON ``null`` -- the same choice JavaScript's ``JSON.stringify`` makes.
This keeps numeric columns numeric-or-null, at the cost of no longer telling nan from inf in the file; keep
a separate flag in ``data`` if that distinction matters. ``strict=False`` leaves non-finite floats as Python
floats (for in-process use; such output cannot be written by :func:`dump_json`).

Everything written to disk goes through :func:`atomic_write_bytes`: a temporary file in the same folder,
flushed and fsynced, then ``os.replace``-d over the target, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "dump_json", "dumps_json", "load_json", "to_jsonable"]


def _float(x: float, strict: bool) -> float | None:
    return x if (not strict or math.isfinite(x)) else None


def _key(k: Any, path: str, strict: bool) -> str:
    if isinstance(k, str):
        return k
    v = _convert(k, path, strict, set())
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float | str):
        return str(v)
    raise TypeError(f"cannot use {type(k).__name__} {k!r} as a JSON object key at {path}")


def _ndarray(a: np.ndarray, path: str, strict: bool, seen: set[int]) -> Any:
    kind = a.dtype.kind
    if kind in "biu":
        return a.tolist()
    if kind == "f":
        if strict and not np.isfinite(a).all():
            return np.where(np.isfinite(a), a, None).tolist()
        return a.tolist()
    # complex, strings, bytes, datetimes, objects: convert element by element
    return _convert(a.tolist(), path, strict, seen)


def _torch_tensor(obj: Any) -> Any | None:
    """``obj`` as a numpy array / Python scalar if it is a torch tensor, else ``None``.

    torch is only consulted if it is already imported: if it is not, ``obj`` cannot be a tensor.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(obj, torch.Tensor):
        return None
    t = obj.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu().resolve_conj().resolve_neg()
    if t.dtype in (torch.bfloat16, torch.float16) or str(t.dtype).startswith("torch.float8"):
        t = t.float()
    return t.numpy()


def _convert(obj: Any, path: str, strict: bool, seen: set[int]) -> Any:
    # Order matters: bool before int, numpy scalars (np.float64 subclasses float) before float.
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, np.generic):
        return _convert(obj.item(), path, strict, seen)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj), strict)
    if isinstance(obj, complex):
        return {"real": _float(obj.real, strict), "imag": _float(obj.imag, strict)}
    if isinstance(obj, np.ndarray):
        return _ndarray(obj, path, strict, seen)
    t = _torch_tensor(obj)
    if t is not None:
        return _convert(t, path, strict, seen)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return _convert(obj.value, path, strict, seen)
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, np.dtype) or (type(obj).__module__ == "torch" and type(obj).__name__ in ("dtype", "device")):
        return str(obj)

    # containers: guard against reference cycles
    oid = id(obj)
    if oid in seen:
        raise ValueError(f"circular reference at {path}")
    seen.add(oid)
    try:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            to_dict = getattr(obj, "to_dict", None)
            if callable(to_dict):
                return _convert(to_dict(), path, strict, seen)
            return {
                f.name: _convert(getattr(obj, f.name), f"{path}.{f.name}", strict, seen)
                for f in dataclasses.fields(obj)
            }
        model_dump = getattr(obj, "model_dump", None)  # pydantic v2 models
        if callable(model_dump) and not isinstance(obj, type):
            return _convert(model_dump(mode="json"), path, strict, seen)
        if isinstance(obj, Mapping):
            out: dict[str, Any] = {}
            for k, v in obj.items():
                key = _key(k, path, strict)
                if key in out:
                    raise ValueError(f"JSON key collision: two keys map to {key!r} at {path}")
                out[key] = _convert(v, f"{path}[{key!r}]", strict, seen)
            return out
        if isinstance(obj, list | tuple):
            return [_convert(v, f"{path}[{i}]", strict, seen) for i, v in enumerate(obj)]
        if isinstance(obj, set | frozenset):
            items = [_convert(v, f"{path}{{}}", strict, seen) for v in obj]
            try:
                return sorted(items)
            except TypeError:
                return items
    finally:
        seen.discard(oid)
    raise TypeError(f"cannot convert {type(obj).__module__}.{type(obj).__qualname__} at {path} to JSON")


def to_jsonable(obj: Any, *, strict: bool = True) -> Any:
    """Recursively convert ``obj`` to plain JSON types (str-keyed dict, list, str, int, float, bool, None).

    Handles numpy scalars and arrays, torch tensors (detached, moved to CPU), dataclasses (their ``to_dict()``
    if they have one, else their fields), pydantic models (``model_dump(mode="json")``), mappings (non-str
    keys are stringified), tuples/lists/sets (sets sorted when possible), paths (``str``), enums (their
    value), datetimes (ISO 8601), timedeltas (seconds), complex numbers (``{"real", "imag"}``) and dtypes.

    With ``strict=True`` (default) nan/inf become ``None`` -- see the module docstring for why.

    Raises:
        TypeError: for an object of any other type; the message names where it sits, e.g. ``$['a'][2]``.
        ValueError: for a reference cycle or two keys that stringify to the same key.
    """
    return _convert(obj, "$", strict, set())


def dumps_json(obj: Any, *, sort_keys: bool = True) -> str:
    """Strict JSON text of ``to_jsonable(obj)``: indent 2, UTF-8 characters kept, trailing newline."""
    text = json.dumps(to_jsonable(obj), allow_nan=False, indent=2, sort_keys=sort_keys, ensure_ascii=False)
    return text + "\n"


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write. On error the temp
    file is removed and the target is left as it was. The file gets default permissions (0666 & ~umask).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dump_json(obj: Any, path: Path | str, *, sort_keys: bool = True) -> Path:
    """Write ``obj`` as strict JSON (no NaN/Infinity tokens, indent 2) to ``path`` atomically.

    ``sort_keys=False`` keeps insertion order, e.g. where column order in records is meaningful.
    Returns the path written.
    """
    return atomic_write_text(path, dumps_json(obj, sort_keys=sort_keys))


def load_json(path: Path | str) -> Any:
    """Read a JSON file (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
