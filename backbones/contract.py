"""The contract arithmetic, in one place.

Every registered backbone maps an image ``[N, C, H, W]`` to ``[N, C_out, ceil(H / sh), ceil(W / sw)]``
for all ``H, W >= min_input_size``, where ``(sh, sw)`` is its output stride. The helpers here compute
that size, validate user input, and downsample padding masks so that they land on the same grid::

    >>> output_size(128, 316, (16, 16))
    (8, 20)
    >>> output_size(32, 100, (32, 4))
    (1, 25)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "FeatureInfo",
    "Pair",
    "as_pair",
    "ceil_div",
    "check_mask",
    "crop_to_ceil_grid",
    "downsample_mask",
    "output_size",
    "slice_mask",
]

Pair = Tuple[int, int]
PairLike = Union[int, Sequence[int]]


@dataclass(frozen=True)
class FeatureInfo:
    """What one stage (or one output) of a backbone produces.

    Attributes:
        name: stage name, e.g. ``"stem"``, ``"layer3"``, ``"denseblock2"``.
        index: stage index; 0 is the stem, then 1, 2, ... for the stages after it.
        channels: channels of the feature map.
        stride: ``(sh, sw)``, the total downsampling from the input image.
        dilation: ``(dh, dw)`` dilation of the stage's 3x3 convolutions (1 unless ``dilate=True``).
        modules: names of the submodules (or parameters) that make up the stage (for freezing and weight mapping).
    """

    name: str
    index: int
    channels: int
    stride: Pair
    dilation: Pair = (1, 1)
    modules: Tuple[str, ...] = ()


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative ints, exact (no floats)."""
    return -(-a // b)


def output_size(height: int, width: int, stride: Pair) -> Pair:
    """Output grid ``(ceil(H / sh), ceil(W / sw))`` for an input of ``height x width``."""
    return ceil_div(height, stride[0]), ceil_div(width, stride[1])


def as_pair(value: object, name: str, *, minimum: int = 1) -> Pair:
    """Normalize an int or a 2-sequence of ints to ``(a, b)``, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
        raise TypeError(f"{name} must be an int or a (h, w) tuple of ints, got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise TypeError(f"{name} must be an int or a (h, w) tuple of two ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_mask(mask: Tensor, image: Optional[Tensor] = None, grid: str = "image") -> Tensor:
    """Validate a padding mask and return it: bool/int ``[N, H, W]`` or float ``[N, 1, H, W]``.

    Args:
        mask: the mask to check.
        image: when given, ``[N, C, H, W]`` whose batch and size the mask must match.
        grid: how messages name ``image`` (``"image"``, ``"feature"``).
    """
    if not torch.jit.is_scripting() and not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor [N, H, W] or [N, 1, H, W], got {type(mask).__name__}")
    if mask.dim() not in (3, 4) or (mask.dim() == 4 and mask.shape[1] != 1):
        raise ValueError(f"mask must be [N, H, W] or [N, 1, H, W], got shape {list(mask.shape)}")
    if mask.is_complex():
        raise TypeError(f"mask must be bool, integer or floating, got dtype {mask.dtype}")
    if image is not None:
        if image.dim() != 4:
            raise ValueError(f"the {grid} must be a 4-D tensor [N, C, H, W], got shape {list(image.shape)}")
        if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"mask must match the {grid}'s batch and size, got mask shape {list(mask.shape)} for {grid} "
                f"shape {list(image.shape)} (a mask is [N, H, W] or [N, 1, H, W] with the {grid}'s N, H, W)"
            )
    return mask


def slice_mask(mask: Tensor, stride: List[int]) -> Tensor:
    """``mask[..., ::sh, ::sw]`` for a checked mask (TorchScript-friendly: ``stride`` is a list)."""
    if mask.dim() == 3:
        return mask[:, :: stride[0], :: stride[1]]
    return mask[:, :, :: stride[0], :: stride[1]]


def padding_on_grid(mask: Tensor, stride: List[int]) -> Tensor:
    """A checked mask in either convention as bool ``[N, ceil(H/sh), ceil(W/sw)]``, True = padding (the cells of
    ``mask[..., ::sh, ::sw]``)."""
    grid = slice_mask(mask, stride)
    if grid.dim() == 4:
        return grid[:, 0] < 0.5  # float, 1 = valid
    return grid != 0


def crop_to_ceil_grid(x: Tensor, height: int, width: int, stride: List[int]) -> Tensor:
    """``x [N, C, h, w]`` cropped to the ceil grid ``[N, C, ceil(H/sh), ceil(W/sw)]`` of an ``height x width``
    input (layers that pad past it, as CRNN's pools or a padded timm input, leave extra rows and columns)."""
    return x[:, :, : (height + stride[0] - 1) // stride[0], : (width + stride[1] - 1) // stride[1]]


def downsample_mask(mask: Tensor, stride: Pair) -> Tensor:
    """Padding mask on the output grid: exactly ``mask[..., ::sh, ::sw]`` (dtype and layout kept).

    Args:
        mask: bool/long ``[N, H, W]`` (True = padding, BTTR/CoMER) or float ``[N, 1, H, W]``
            (1 = valid, CAN/SAN).
        stride: ``(sh, sw)``.

    Returns:
        The mask at ``[N, ceil(H / sh), ceil(W / sw)]`` (or ``[N, 1, ...]``).
    """
    return slice_mask(check_mask(mask), [stride[0], stride[1]])
