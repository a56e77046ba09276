"""``probe_contract``: call an encoder at several sizes (``_probe``) and infer its typed contract (``_fit``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core import MetaCaller, Pair, check_pair
from ._fit import Axes, GridError, determined, fit_axis, fit_sequence, fit_tokens
from ._probe import PROBE_SIZES, _calls, _input_channels, _lock_call, _reason, declared, observe
from ._reading import shapes_text
from ._records import CallStyle, EncoderContract, Observation, OutputKind, SequenceHeight, TokenGrid

__all__ = ["probe_contract"]


def _is_example(example: Any) -> bool:
    if isinstance(example, Tensor):
        return example.dim() == 4
    return isinstance(example, tuple) and len(example) == 2 and all(isinstance(e, Tensor) for e in example)


def _sizes(module: nn.Module, example: Any, sizes: Optional[Sequence[Pair]]) -> List[Pair]:
    """What to probe, in order: the size the module declares, the example's, then ``sizes`` (or the defaults)."""
    made_for, _ = declared(module)
    x = example[0] if isinstance(example, tuple) else example
    given = [(int(x.shape[-2]), int(x.shape[-1]))] if isinstance(x, Tensor) else []
    return list(dict.fromkeys(([made_for] if made_for else []) + given + list(sizes or PROBE_SIZES)))


Observed = Tuple[Dict[Pair, Observation], Dict[Pair, str]]


def _observe_all(
    caller: MetaCaller, sizes: List[Pair], args: Tuple[Any, ...], first: Tuple[Pair, Observation], early: bool
) -> Observed:
    """The observations with the locked call, from the size it was locked at on (with ``early``, until they determine
    the grid); sizes the module refuses, or where it returns another structure than at the first size it takes (an
    output whose rank follows the input's height), are skipped."""
    start, reference = first
    observations: Dict[Pair, Observation] = {start: reference}
    skipped: Dict[Pair, str] = {}
    flat = reference.kind is OutputKind.TOKENS
    for size in sizes[sizes.index(start) + 1 :]:
        if early and len(observations) >= 2 and determined(flat, {s: o.shapes for s, o in observations.items()}):
            break
        try:
            found = observe(caller, size, *args)
        except Exception as error:  # sizes the module refuses are skipped, not fatal
            skipped[size] = _reason(error)
            continue
        if found.structure != reference.structure or len(found.shapes[0]) != len(reference.shapes[0]):
            at = f"{start[0]}x{start[1]}"
            skipped[size] = f"returns {found.kind} {shapes_text(found.shapes)}, not the structure it returns at {at}"
            continue
        observations[size] = found
    return observations, skipped


def _map_axes(observations: Dict[Pair, Observation]) -> Tuple[Axes, ...]:
    reference = next(iter(observations))
    outputs = len(next(iter(observations.values())).shapes)
    return tuple(
        (
            fit_axis([(size[0], o.shapes[i][-2]) for size, o in observations.items()], reference[0]),
            fit_axis([(size[1], o.shapes[i][-1]) for size, o in observations.items()], reference[1]),
        )
        for i in range(outputs)
    )


def _token_contract(
    module: nn.Module, observations: Dict[Pair, Observation], grid: Optional[Pair]
) -> Tuple[OutputKind, Axes, Optional[TokenGrid], Optional[SequenceHeight]]:
    """Tokens of a 2-D grid or a sequence along the width, from how their count follows the input size."""
    first = next(iter(observations.values()))
    if first.shapes[0][0] != 2:
        raise GridError(f"returns {shapes_text(first.shapes)} for a batch of 2: not batch-first [N, L, C]")
    lengths = {size: o.shapes[0][1] for size, o in observations.items()}
    reference = next(iter(observations))
    made_for, made_grid = declared(module)
    given: Optional[Tuple[Pair, int, bool]] = None
    if grid is not None:
        given = (grid, lengths[reference] - grid[0] * grid[1], False)
    elif made_grid is not None and made_for == reference and lengths[reference] >= made_grid[0] * made_grid[1]:
        given = (made_grid, lengths[reference] - made_grid[0] * made_grid[1], True)
    sequence = fit_sequence(lengths) if given is None else None
    if sequence is not None and sequence[0] is SequenceHeight.SQUEEZED:
        return OutputKind.SEQUENCE, sequence[1], None, sequence[0]
    try:
        tokens, axes = fit_tokens(lengths, given, reference)
    except GridError:
        if sequence is None:
            raise
        return OutputKind.SEQUENCE, sequence[1], None, sequence[0]
    if sequence is not None and all(axes[0].cells(h) == 1 for h, _ in lengths):
        return OutputKind.SEQUENCE, sequence[1], None, sequence[0]  # one row at every height: rows pooled
    return OutputKind.TOKENS, axes, tokens, None


def probe_contract(
    module: nn.Module,
    path: str,
    *,
    example: Any = None,
    sizes: Optional[Sequence[Pair]] = None,
    grid: Optional[Pair] = None,
) -> EncoderContract:
    """Call ``module`` at each size and infer its contract (see ``_probe``'s docstring).

    Args:
        module: the encoder; path: its path in the model (for messages).
        example: a tensor or an ``(x, mask)`` tuple of its arguments: its convention, channels, mask layout and size.
        sizes: ``(H, W)`` probe sizes, each probed (default: :data:`PROBE_SIZES`, until they determine the grid);
            those the module refuses are skipped.
        grid: for tokens, the ``(h, w)`` grid behind them at the first size the module takes (where the probes
            cannot tell).

    Raises:
        ValueError: nothing can be inferred (no conv to read the input channels from and no ``example``, no
            convention that gives a readable output, no stride or grid that explains the outputs); says why.
    """
    if example is not None and not _is_example(example):
        raise TypeError(
            f"example must be a tensor [N, C, H, W] or a (tensor, mask) tuple of the module's arguments, got "
            f"{type(example).__name__}"
        )
    grid = check_pair(grid, "grid") if grid is not None else None
    in_channels = _input_channels(module, example)
    if in_channels is None:
        raise ValueError(f"{path} has no Conv2d to read its input channels from; pass example=torch.zeros(...)")
    parameter = next(iter(module.parameters()), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    wanted = _sizes(module, example, sizes)
    try:
        caller = MetaCaller(module)
        call, size, found, refused = _lock_call(caller, wanted, in_channels, _calls(module, example), dtype)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    observations, skipped = _observe_all(caller, wanted, (in_channels, call, dtype), (size, found), sizes is None)
    skipped = {**refused, **skipped}
    return _contract(module, path, call, in_channels, observations, skipped, grid)


def _contract(
    module: nn.Module,
    path: str,
    call: Any,
    in_channels: int,
    observations: Dict[Pair, Observation],
    skipped: Dict[Pair, str],
    grid: Optional[Pair],
) -> EncoderContract:
    first = next(iter(observations.values()))
    kind, tokens, sequence = first.kind, None, None
    try:
        if kind is OutputKind.TOKENS:
            kind, axes, tokens, sequence = _token_contract(module, observations, grid)
            all_axes: Tuple[Axes, ...] = (axes,)
        else:
            all_axes = _map_axes(observations)
    except GridError as error:
        raise ValueError(f"{path} {error}") from None
    if first.model_output is not None:
        call = type(call)(CallStyle.KEYWORD, call.input_name, call.mask, call.mask_dtype)
    channels = tuple(
        shape[-1] if kind in (OutputKind.TOKENS, OutputKind.SEQUENCE) else shape[1] for shape in first.shapes
    )
    return EncoderContract(
        path, call, kind, in_channels, channels, all_axes, observations, skipped, tokens, sequence,
        first.model_output, first.fields,
    )  # fmt: skip
