"""The one exception type for bad user input.

Every validation failure raises :class:`SphericalCowError` with a one-line message that names the bad value
and what is allowed. The CLI turns it into ``error: <message>`` on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations


class SphericalCowError(ValueError):
    """Bad input from a user: the message names the bad value and what is allowed."""


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``float(value)`` if it is finite and > 0 (>= 0 with ``allow_zero``), else raise."""
    if isinstance(value, bool):
        raise SphericalCowError(f"{name}={value!r} is not a number; expected a finite real number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SphericalCowError(f"{name}={value!r} is not a number; expected a finite real number") from None
    bound = ">= 0" if allow_zero else "> 0"
    if v != v or v in (float("inf"), float("-inf")):
        raise SphericalCowError(f"{name}={value!r} is not finite; expected a finite number {bound}")
    if v < 0 or (v == 0 and not allow_zero):
        raise SphericalCowError(f"{name}={value!r} is not allowed; expected a finite number {bound}")
    return v


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int,)):
        try:
            f = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SphericalCowError(f"{name}={value!r} is not an integer; expected an integer >= {minimum}") from None
        if f != int(f) if f == f and abs(f) != float("inf") else True:
            raise SphericalCowError(f"{name}={value!r} is not an integer; expected an integer >= {minimum}")
        value = int(f)
    if value < minimum:
        raise SphericalCowError(f"{name}={value!r} is not allowed; expected an integer >= {minimum}")
    return int(value)
