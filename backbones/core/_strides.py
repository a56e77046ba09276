"""Stride planning: which stages downsample, and where removed strides turn into dilation.

A family declares its stem stride and the native stride of each stage after the stem. Users ask for
an ``output_stride`` (the LAST downsampling steps are removed first, so the early high-resolution
stages stay as they are) or give ``strides`` per stage directly. A stride can be kept or removed,
never added. With ``dilate=True`` each removed stride becomes dilation of that stage and all later
ones (DeepLab / torchvision semantics: the first layer of a dilated stage keeps the previous dilation).

    >>> plan = plan_strides((4, 4), [(1, 1), (2, 2), (2, 2), (2, 2)], output_stride=16)
    >>> [s.stride for s in plan.stages]
    [(1, 1), (2, 2), (2, 2), (1, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from ._contract import Pair, PairLike
from ._validate import check_bool, check_pair

__all__ = ["StagePlan", "StridePlan", "allowed_output_strides", "plan_strides"]


@dataclass(frozen=True)
class StagePlan:
    """How one stage after the stem is built.

    Attributes:
        stride: ``(sh, sw)`` downsampling done by this stage.
        dilation: dilation of the stage's convolutions after its first layer.
        first_dilation: dilation of the stage's first layer (the previous stage's dilation).
        output_stride: cumulative stride of the stage's output.
    """

    stride: Pair
    dilation: Pair
    first_dilation: Pair
    output_stride: Pair


@dataclass(frozen=True)
class StridePlan:
    stem_stride: Pair
    stages: Tuple[StagePlan, ...]

    @property
    def output_stride(self) -> Pair:
        return self.stages[-1].output_stride if self.stages else self.stem_stride


def _mul(a: Pair, b: Pair) -> Pair:
    return a[0] * b[0], a[1] * b[1]


def allowed_output_strides(stem_stride: Pair, native_strides: Sequence[Pair]) -> Tuple[Tuple[int, ...], ...]:
    """Reachable output strides per dimension, e.g. ``((4, 8, 16, 32), (4, 8, 16, 32))`` for ResNet."""
    per_dim = []
    for dim in range(2):
        reachable = {stem_stride[dim]}
        total = stem_stride[dim]
        for stride in native_strides:
            total *= stride[dim]
            reachable.add(total)
        per_dim.append(tuple(sorted(reachable)))
    return tuple(per_dim)


def _format_allowed(allowed: Tuple[Tuple[int, ...], ...]) -> str:
    if allowed[0] == allowed[1]:
        return f"{', '.join(map(str, allowed[0]))} (or an (sh, sw) tuple of those)"
    return f"(sh, sw) with sh in {allowed[0]} and sw in {allowed[1]}"


def _strides_for_target(stem_stride: Pair, native_strides: Sequence[Pair], output_stride: PairLike) -> list[Pair]:
    target = check_pair(output_stride, "output_stride")
    allowed = allowed_output_strides(stem_stride, native_strides)
    if target[0] not in allowed[0] or target[1] not in allowed[1]:
        raise ValueError(
            f"output_stride must be one of {_format_allowed(allowed)} for this backbone "
            f"(strides can only be removed, last first), got {output_stride!r}"
        )
    chosen: list[list[int]] = [[], []]
    for dim in range(2):
        total = stem_stride[dim]
        for native in native_strides:
            keep = total * native[dim] <= target[dim]
            chosen[dim].append(native[dim] if keep else 1)
            total *= native[dim] if keep else 1
    return list(zip(chosen[0], chosen[1]))


def _validate_strides(strides: object, native_strides: Sequence[Pair]) -> list[Pair]:
    n = len(native_strides)
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or len(strides) != n:
        raise ValueError(
            f"strides must be a sequence of {n} per-stage strides (stages after the stem, "
            f"native {tuple(s[0] if s[0] == s[1] else s for s in native_strides)}), got {strides!r}"
        )
    result = []
    for i, (value, native) in enumerate(zip(strides, native_strides)):
        pair = check_pair(value, f"strides[{i}]")
        for dim in range(2):
            if pair[dim] not in (1, native[dim]):
                options = "1" if native[dim] == 1 else f"1 or {native[dim]}"
                raise ValueError(
                    f"strides[{i}] must be {options} in each dimension (the native stride of that "
                    f"stage is {native if native[0] != native[1] else native[0]}; a stride can be "
                    f"kept or removed, never added), got {value!r}"
                )
        result.append(pair)
    return result


def plan_strides(
    stem_stride: PairLike,
    native_strides: Sequence[PairLike],
    *,
    output_stride: Optional[PairLike] = None,
    strides: Optional[Sequence[Union[int, Sequence[int]]]] = None,
    dilate: bool = False,
) -> StridePlan:
    """Plan per-stage strides and dilations.

    Args:
        stem_stride: fixed stride of the stem, e.g. 4 for conv/2 + maxpool/2.
        native_strides: native stride of each stage after the stem.
        output_stride: wanted total stride (int or ``(sh, sw)``); ``None`` = native.
        strides: explicit per-stage strides (each kept or set to 1); overrides ``output_stride``,
            which must then agree with them.
        dilate: turn every removed stride into dilation.

    Returns:
        A :class:`StridePlan` with one :class:`StagePlan` per stage.
    """
    stem = check_pair(stem_stride, "stem_stride")
    native = [check_pair(s, f"native_strides[{i}]") for i, s in enumerate(native_strides)]
    check_bool(dilate, "dilate")
    if strides is not None:
        chosen = _validate_strides(strides, native)
    elif output_stride is not None:
        chosen = _strides_for_target(stem, native, output_stride)
    else:
        chosen = list(native)

    stages = []
    total, dilation = stem, (1, 1)
    for stride, native_stride in zip(chosen, native):
        first_dilation = dilation
        if dilate:
            removed = (native_stride[0] // stride[0], native_stride[1] // stride[1])
            dilation = _mul(dilation, removed)
        total = _mul(total, stride)
        stages.append(StagePlan(stride, dilation, first_dilation, total))
    plan = StridePlan(stem, tuple(stages))

    if strides is not None and output_stride is not None:
        wanted = check_pair(output_stride, "output_stride")
        if wanted != plan.output_stride:
            raise ValueError(
                f"output_stride={output_stride!r} disagrees with strides={tuple(strides)!r}, which give "
                f"{plan.output_stride}; pass only one of them"
            )
    return plan
