"""The validators every user-facing value goes through: one wording for ints, bools, floats, pairs and choices.

Each returns the value (normalised where it says so) or raises a ``TypeError`` (wrong kind) / ``ValueError``
(wrong value) that names the parameter, what is allowed and what was given::

    >>> check_int(3, "in_channels", minimum=1)
    3
    >>> check_pair(16, "output_stride")
    (16, 16)
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, TypeVar

__all__ = ["check_bool", "check_choice", "check_float", "check_int", "check_ints", "check_pair", "check_sizes"]

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int, maximum: Optional[int] = None) -> int:
    """``value`` if it is an int in ``[minimum, maximum]`` (bools refused)."""
    allowed = f"an int >= {minimum}" if maximum is None else f"an int in {minimum}..{maximum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 1, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")
    return value


def check_float(
    value: object, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a float if it is a real number in the interval (bools and strings refused)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in {interval}, got {value!r}")
    inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not inside:
        raise ValueError(f"{name} must be a float in {interval}, got {value!r}")
    return float(value)


def check_pair(value: object, name: str, *, minimum: int = 1) -> Tuple[int, int]:
    """An int or a 2-sequence of ints, as ``(a, b)``, each at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
        raise TypeError(f"{name} must be an int or a (h, w) tuple of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a (h, w) tuple of two ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_ints(value: object, name: str, minimum: int = 1) -> Tuple[int, ...]:
    """A non-empty tuple or list of ints >= ``minimum``, as a tuple."""
    allowed = f"a non-empty tuple of ints >= {minimum}"
    if not isinstance(value, (tuple, list)) or not all(_is_int(v) for v in value):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if not value or min(value) < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return tuple(value)


def check_sizes(value: object, name: str) -> List[Tuple[int, int]]:
    """A non-empty sequence of ``(H, W)`` sizes (each an int or a pair of ints >= 1), as a list of pairs."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of (H, W) pairs, got {value!r}")
    return [check_pair(size, f"each of {name}") for size in value]


def check_choice(value: T, name: str, choices: Sequence[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value
