"""How a timm body meets the ceil grid, probed on the meta device once at build time.

A body either rounds up at every level already (it runs unpadded), or its input must be padded to the deepest
stride's multiples (patchify stems, floor pooling), or, for a model made for one input size (attention biases or
windows sized for timm's ``img_size``), to that size; some attention layers also need a few cells at the
deepest level (the smallest input), and some cannot run above the size they were made for (the largest).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

from torch import Tensor

from ...core import ceil_div

__all__ = ["GridFit", "fit_grid"]

Run = Callable[[int, int, List[int]], List[Tensor]]
"""``run(height, width, align)``: the body's levels, on the meta device, for an input padded to ``align``."""

_FAILURES = (RuntimeError, AssertionError, ValueError)


class GridFit(NamedTuple):
    """``align``: pad the input's H and W to multiples of it (``[1, 1]``: unpadded); ``min_input_size``: the
    smallest side that runs; ``max_input_size``: the largest ``[H, W]``, or ``None`` when there is none."""

    align: List[int]
    min_input_size: int
    max_input_size: Optional[List[int]]


def fit_grid(
    run: Run,
    level_strides: Sequence[Sequence[int]],
    channels: Sequence[int],
    made_for: Optional[List[int]],
    name: str,
) -> GridFit:
    """Probe ``run`` for the alignment, then the smallest and largest input. Every probe checks each level's
    channels and ceil grid, so a fit also verifies the levels timm declares.

    Args:
        run: see :data:`Run`.
        level_strides: each level's ``[sh, sw]``; channels: each level's channels.
        made_for: the input size the model was made for (timm's ``img_size``), if any.
        name: the model, for messages.

    Raises:
        ValueError: no alignment gives the ceil grid (names the model, the size and what went wrong).
    """
    deepest = [max(s[0] for s in level_strides), max(s[1] for s in level_strides)]
    base = (4 * deepest[0], 4 * deepest[1])
    sizes = [(base[0] + 1, base[1] + deepest[1] - 1), (base[0] + deepest[0] // 2 + 1, base[1] + deepest[1] // 2), base]
    problem = ""
    for align in ([1, 1], deepest):  # the first that fits; the deepest stride's problem is the one reported
        problem = _grid_problem(run, level_strides, channels, align, sizes)
        if not problem:
            return GridFit(align, _min_size(run, level_strides, align), None)
    if made_for is not None:
        height, width = made_for
        fitting = [(height - 3, width - 5), (height // 2 + 1, width // 3 + 1), (height, width)]
        if not _grid_problem(run, level_strides, channels, made_for, fitting):
            larger = _grid_problem(run, level_strides, channels, made_for, [(height + 1, width + 1)])
            return GridFit(made_for, _min_size(run, level_strides, made_for), made_for if larger else None)
    padded = f" (nor padded to its img_size, {made_for[0]}x{made_for[1]})" if made_for is not None else ""
    raise ValueError(f"timm:{name} does not give the ceil(H/sh) x ceil(W/sw) grid{padded}: {problem}")


def _grid_problem(
    run: Run,
    level_strides: Sequence[Sequence[int]],
    channels: Sequence[int],
    align: List[int],
    sizes: List[Tuple[int, int]],
) -> str:
    """Why the body padded to ``align`` misses the declared channels or the ceil grid at one of ``sizes`` (``""``:
    it does not)."""
    for height, width in sizes:
        try:
            outputs = run(height, width, align)
        except _FAILURES as error:
            return f"at {height}x{width}: {type(error).__name__}: {str(error)[:200]}"
        for level, (output, stride, width_of) in enumerate(zip(outputs, level_strides, channels)):
            wanted = (width_of, ceil_div(height, stride[0]), ceil_div(width, stride[1]))
            if tuple(output.shape[1:]) != wanted:
                return f"level {level} gives {tuple(output.shape[1:])} for {height}x{width}, not {wanted}"
    return ""


def _min_size(run: Run, level_strides: Sequence[Sequence[int]], align: List[int]) -> int:
    """The smallest side (1, then multiples of the deepest stride) at which the body runs: some attention layers
    (PVT's spatial reduction) need a few cells at the deepest level."""
    deepest = max(max(stride) for stride in level_strides)
    for size in sorted({1, 2, 4, 8, 16, deepest // 2 or 1, deepest, 2 * deepest, 4 * deepest}):
        try:
            for height, width in ((size, size), (size + 1, size + 3)):
                run(height, width, align)
            return size
        except _FAILURES:
            continue
    return 4 * deepest
