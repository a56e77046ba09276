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

from ._validate import check_int

__all__ = [
    "RELATIVE_TOLERANCE",
    "FeatureInfo",
    "InputLimits",
    "Pair",
    "ceil_div",
    "check_input",
    "check_input_size",
    "check_mask",
    "crop_to_ceil_grid",
    "downsample_mask",
    "output_size",
    "padding_on_grid",
    "size_problem",
    "slice_mask",
]

Pair = Tuple[int, int]
PairLike = Union[int, Sequence[int]]

RELATIVE_TOLERANCE = 1e-4
"""Two computations of one output agree (a fused model and the unfused one, onnxruntime and PyTorch, in float32)
when their max abs difference is at most this times the output's max abs value: random weights give outputs from
1 to 1e6, so a fixed absolute tolerance would fail on rounding alone."""


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


@dataclass(frozen=True)
class InputLimits:
    """The input sizes a backbone takes, declared by its family and checked by the base's forward.

    Attributes:
        min_size: smallest H and W (1 for every built-in family; some attention layers need more).
        max_size: largest ``(H, W)``, or ``None``: models made for one size (attention sized for timm's
            ``img_size``) pad smaller inputs to it and cannot take larger ones.
        padded_to: the input is zero-padded inside to multiples of ``(sh, sw)`` and the outputs cropped back to the
            ceil grid (``(1, 1)``: no padding); patchify stems and floor pooling need it.
        reason: why there is a maximum, and how to move it (for the error message).
    """

    min_size: int = 1
    max_size: Optional[Pair] = None
    padded_to: Pair = (1, 1)
    reason: str = ""

    def bounds(self) -> List[int]:
        """``[min, max_h, max_w]`` with 0 for no maximum: what :func:`size_problem` reads (TorchScript-friendly)."""
        maximum = self.max_size or (0, 0)
        return [self.min_size, maximum[0], maximum[1]]

    def __str__(self) -> str:
        text = f"input H, W >= {self.min_size}"
        if self.max_size is not None:
            text += f", H <= {self.max_size[0]}, W <= {self.max_size[1]}"
        if self.padded_to != (1, 1):
            text += f"; padded inside to multiples of {self.padded_to[0]}x{self.padded_to[1]}"
        return text


def size_problem(height: int, width: int, bounds: List[int]) -> str:
    """Why an ``height x width`` input breaks ``bounds`` (:meth:`InputLimits.bounds`), or ``""``."""
    if height < bounds[0] or width < bounds[0]:
        return f"input H and W must be >= min_input_size={bounds[0]}"
    if bounds[1] > 0 and (height > bounds[1] or width > bounds[2]):
        return f"input H must be <= {bounds[1]} and W <= {bounds[2]} (max_input_size)"
    return ""


def _autocast_enabled(x: Tensor) -> bool:
    if torch.jit.is_scripting():
        return torch.is_autocast_enabled()
    return torch.is_autocast_enabled(x.device.type)


def check_input(x: Tensor, in_channels: int, weights: Tensor, bounds: List[int], reason: str) -> None:
    """The checks every forward makes on its input, each a clear error with the fix (TorchScript-friendly).

    Args:
        x: the input, ``[N, in_channels, H, W]``.
        in_channels: the channels the model takes.
        weights: a tensor with the weights' dtype and device (the model's ``weights_dtype`` buffer).
        bounds: :meth:`InputLimits.bounds`; reason: what the limits' message adds (``"; ..."`` or ``""``).
    """
    if not torch.jit.is_scripting() and not isinstance(x, torch.Tensor):
        raise TypeError(
            f"input must be a torch.Tensor [N, {in_channels}, H, W], got {type(x).__name__}; convert "
            f"images with torchvision.transforms.functional.to_tensor or torch.as_tensor(...).float() / 255"
        )
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating tensor, got dtype {x.dtype}; for uint8 images use x.float() / 255")
    if x.dtype != weights.dtype and not _autocast_enabled(x):
        raise TypeError(
            f"input dtype {x.dtype} differs from the weights' {weights.dtype}; convert the input "
            f"(x.to({weights.dtype})), the model (encoder.to({x.dtype})), or run under torch.autocast"
        )
    if x.dim() != 4:
        raise ValueError(f"input must be a 4-D tensor [N, {in_channels}, H, W], got shape {list(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"input must have {in_channels} channels ([N, {in_channels}, H, W]), got shape "
            f"{list(x.shape)}; build the backbone with in_channels={x.shape[1]} for such input"
        )
    problem = size_problem(x.shape[2], x.shape[3], bounds)
    if problem != "":
        raise ValueError(f"{problem}, got shape {list(x.shape)}{reason}")
    if x.device != weights.device:
        raise ValueError(
            f"input is on {x.device} but the model is on {weights.device}; move one of them "
            f"(x.to(...) or encoder.to(...)) so that both are on the same device"
        )


def check_input_size(height: object, width: object, limits: InputLimits) -> None:
    """``height`` and ``width`` as an input size: ints within ``limits``, else a TypeError/ValueError naming them."""
    for name, value, axis in (("height", height, 0), ("width", width, 1)):
        size = check_int(value, name, limits.min_size)
        if limits.max_size is not None and size > limits.max_size[axis]:
            raise ValueError(f"{name} must be <= {limits.max_size[axis]} (max_input_size), got {value!r}")


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
        if not torch.jit.is_scripting() and not isinstance(image, torch.Tensor):
            raise TypeError(f"the {grid} must be a torch.Tensor [N, C, H, W], got {type(image).__name__}")
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
