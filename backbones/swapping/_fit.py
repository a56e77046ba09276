"""The grid behind what an encoder returned at several input sizes: per axis, a stride and a rounding; for tokens,
the ``h x w`` grid behind their count (and the prefix tokens before it); for a sequence, how its height went."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from ..core import Pair
from ._records import AxisFit, Rounding, SequenceHeight, TokenGrid

__all__ = ["GridError", "determined", "fit_axis", "fit_sequence", "fit_tokens", "token_grids"]

STRIDES = (1, 2, 4, 8, 16, 32, 64)
_ROUNDINGS = (Rounding.CEIL, Rounding.FLOOR, Rounding.FLOOR_PLUS_ONE)
_PREFIXES = range(0, 5)
Axes = Tuple[AxisFit, AxisFit]


class GridError(ValueError):
    """No stride (or no token grid) explains what the module returned across the sizes."""


def fit_axis(pairs: Sequence[Tuple[int, int]], reference: int) -> AxisFit:
    """The stride and rounding that explain every ``(input, output)`` pair of one axis (ceil first, the smallest
    stride first); where none does, the stride at the ``reference`` input size (``ONLY_AT``)."""
    for rounding in _ROUNDINGS:
        for stride in STRIDES:
            fit = AxisFit(stride, rounding)
            if all(fit.cells(n) == m for n, m in pairs):
                return fit
    n, m = reference, dict(pairs).get(reference, 0)
    if m < 1 or n % m:
        raise GridError(f"no stride explains the grid: input -> output sizes {sorted(set(pairs))}")
    return AxisFit(n // m, Rounding.ONLY_AT, n)


def _axis_candidates(pairs: Sequence[Tuple[int, int]]) -> set:
    """Every ``(stride, rounding)`` that explains the pairs (ceil and floor are one at stride 1)."""
    found = set()
    for rounding in _ROUNDINGS:
        for stride in STRIDES:
            if all(AxisFit(stride, rounding).cells(n) == m for n, m in pairs):
                found.add((stride, Rounding.CEIL if stride == 1 and rounding is Rounding.FLOOR else rounding))
    return found


def determined(flat: bool, shapes: Dict[Pair, Sequence[Tuple[int, ...]]]) -> bool:
    """Whether the outputs at these sizes leave one grid (per axis one stride and rounding; for tokens one grid
    behind their count): more sizes would not change the fit."""
    if flat:
        fits = _token_fits({size: outputs[0][1] for size, outputs in shapes.items()})
        return len({(grid.prefix, h, w) for grid, (h, w) in fits}) == 1
    outputs = len(next(iter(shapes.values())))
    for i in range(outputs):
        for axis in (0, 1):
            if len(_axis_candidates([(size[axis], o[i][2 + axis]) for size, o in shapes.items()])) != 1:
                return False
    return True


def _token_fits(lengths: Dict[Pair, int]) -> List[Tuple[TokenGrid, Axes]]:
    """Every (prefix, rounding, strides) that gives each size's token count, the most plausible first: no prefix,
    ceil, then the smallest strides."""
    fits = []
    for prefix in _PREFIXES:
        for rounding in (Rounding.CEIL, Rounding.FLOOR):
            for sh in STRIDES:
                for sw in STRIDES:
                    axes = (AxisFit(sh, rounding), AxisFit(sw, rounding))
                    if all(prefix + axes[0].cells(h) * axes[1].cells(w) == n for (h, w), n in lengths.items()):
                        fits.append((TokenGrid(prefix), axes))
    return fits


def token_grids(fits: Sequence[Tuple[TokenGrid, Axes]], size: Pair) -> List[Tuple[int, int, int]]:
    """The distinct ``(prefix, h, w)`` that ``fits`` give at ``size``."""
    return sorted({(grid.prefix, h.cells(size[0]), w.cells(size[1])) for grid, (h, w) in fits})


def fit_tokens(
    lengths: Dict[Pair, int], given: Optional[Tuple[Pair, int, bool]], reference: Pair
) -> Tuple[TokenGrid, Axes]:
    """The grid behind token counts ``L`` (``lengths`` per input size): ``L = prefix + h * w``.

    Args:
        lengths: the token count at each size the module took.
        given: ``((h, w), prefix, declared)`` at ``reference``, from ``grid=`` or what the module declares.
        reference: the size ``given`` describes (the first size the module took).

    Raises:
        GridError: no grid explains the counts, or several do and nothing says which (the message lists them and
            asks for ``grid=(h, w)``).
    """
    fits = _token_fits(lengths)
    if given is not None:
        (h, w), prefix, declared = given
        fits = [(grid, axes) for grid, axes in fits if token_grids([(grid, axes)], reference) == [(prefix, h, w)]]
        if not fits:
            fits = _at_one_size(reference, (h, w), prefix, lengths)
        fits = [(TokenGrid(grid.prefix, declared), axes) for grid, axes in fits]
    if not fits:
        raise GridError(f"no h x w grid (with up to 4 tokens before it) gives the token counts {_counts(lengths)}")
    grids = token_grids(fits[:1], reference)
    if given is None and token_grids(fits, reference) != grids:
        options = ", ".join(f"{h}x{w}" + (f" + {p}" if p else "") for p, h, w in token_grids(fits, reference)[:6])
        raise GridError(
            f"the token counts {_counts(lengths)} fit several grids at {reference[0]}x{reference[1]} ({options}); "
            f"pass grid=(h, w), the grid behind the tokens at that size"
        )
    return fits[0]


def _at_one_size(size: Pair, grid: Pair, prefix: int, lengths: Dict[Pair, int]) -> List[Tuple[TokenGrid, Axes]]:
    """A grid given for a module probed at one size, where no stride of :data:`STRIDES` divides it evenly."""
    (h, w), (height, width) = grid, size
    if set(lengths) != {size} or lengths[size] != prefix + h * w or height % h or width % w:
        return []
    return [
        (
            TokenGrid(prefix),
            (AxisFit(height // h, Rounding.ONLY_AT, height), AxisFit(width // w, Rounding.ONLY_AT, width)),
        )
    ]


def _counts(lengths: Dict[Pair, int]) -> str:
    return ", ".join(f"{n} at {h}x{w}" for (h, w), n in list(lengths.items())[:6])


def fit_sequence(lengths: Dict[Pair, int]) -> Optional[Tuple[SequenceHeight, Axes]]:
    """A sequence along the width: its length is a stride's rounding of W alone. ``None`` where it is not.

    The height went in one of two ways: the module takes one height only (its map had one row there, squeezed) or
    sequences of any height have the same length (its rows were pooled)."""
    by_width: Dict[int, set] = {}
    for (_, w), n in lengths.items():
        by_width.setdefault(w, set()).add(n)
    heights = {h for h, _ in lengths}
    if any(len(counts) > 1 for counts in by_width.values()) or len(by_width) < 2:
        return None  # the length changes with H (a 2-D grid), or a single width says nothing
    reference = next(iter(lengths))
    try:
        width = fit_axis([(w, n) for (_, w), n in lengths.items()], reference[1])
    except GridError:
        return None
    if width.rounding is Rounding.ONLY_AT:
        return None
    if len(heights) == 1:
        (height,) = heights
        return SequenceHeight.SQUEEZED, (AxisFit(height, Rounding.ONLY_AT, height), width)
    return SequenceHeight.POOLED, (AxisFit(0, Rounding.POOLED), width)
