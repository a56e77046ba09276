"""Feature maps to token sequences (einops patterns state the shapes) and a 2-D sine encoding."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from einops import rearrange
from torch import Tensor, nn

from backbones.core import check_bool, check_float, check_int, check_mask

__all__ = ["SinePositionalEncoding2D", "from_sequence", "to_sequence", "valid_mask"]


def _check_tensor(value: object, name: str, shape: str, rank: int) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(value).__name__}")
    if value.dim() != rank:
        raise ValueError(f"{name} must be {shape}, got shape {list(value.shape)}")
    return value


def valid_mask(mask: Tensor) -> Tensor:
    """Bool ``[N, h, w]``, True = valid, from either convention.

    Args:
        mask: ``[N, h, w]`` bool/long with True/1 = padding (BTTR/CoMER), or ``[N, 1, h, w]`` float
            with 1 = valid (CAN/SAN).

    Returns:
        Bool ``[N, h, w]``, True = valid.

    Raises:
        TypeError, ValueError: ``mask`` is not one of those layouts.
    """
    if check_mask(mask).dim() == 3:
        return ~mask.bool()
    return mask[:, 0] > 0.5


def to_sequence(feature: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """``[N, C, h, w] -> [N, h*w, C]``, and the mask flattened in its own convention.

    Args:
        feature: ``[N, C, h, w]``.
        mask: ``None``, or the feature's mask: bool ``[N, h, w]`` (True = padding) or float ``[N, 1, h, w]``.

    Returns:
        ``(sequence [N, h*w, C], mask [N, h*w] or None)``: a ``[N, h, w]`` mask stays True = padding
        (ready for ``key_padding_mask``); a ``[N, 1, h, w]`` float mask becomes ``[N, h*w]``, 1 = valid.

    Raises:
        TypeError, ValueError: ``feature`` is not ``[N, C, h, w]``, or ``mask`` does not match it.
    """
    _check_tensor(feature, "feature", "[N, C, h, w]", 4)
    sequence = rearrange(feature, "b c h w -> b (h w) c")
    if mask is None:
        return sequence, None
    check_mask(mask, feature, grid="feature")
    if mask.dim() == 4:
        return sequence, rearrange(mask, "b 1 h w -> b (h w)")
    return sequence, rearrange(mask, "b h w -> b (h w)")


def from_sequence(sequence: Tensor, height: int, width: int) -> Tensor:
    """``[N, h*w, C] -> [N, C, h, w]``, the inverse of :func:`to_sequence`.

    Args:
        sequence: ``[N, h*w, C]``, row-major positions.
        height: h.
        width: w.

    Returns:
        ``[N, C, h, w]``.

    Raises:
        TypeError, ValueError: ``sequence`` is not ``[N, h*w, C]`` for these ``height`` and ``width``.
    """
    _check_tensor(sequence, "sequence", "[N, h*w, C]", 3)
    check_int(height, "height", 1)
    check_int(width, "width", 1)
    if sequence.shape[1] != height * width:
        raise ValueError(
            f"sequence must have height * width = {height * width} positions for a {height}x{width} map, got shape "
            f"{list(sequence.shape)}"
        )
    return rearrange(sequence, "b (h w) c -> b c h w", h=height, w=width)


class SinePositionalEncoding2D(nn.Module):
    """Mask-aware 2-D sine positional encoding (DETR / BTTR ``ImgPosEnc`` kind).

    Positions are cumulative sums of the valid mask along H and W, so padding does not shift them;
    with ``normalize`` they are scaled to ``[0, scale]`` per image. Half the channels encode y, half x,
    each as interleaved sin/cos at geometric frequencies.

    Args:
        channels: output channels (a multiple of 4), usually ``d_model``.
        temperature: frequency base, > 1 (positions are divided by its powers).
        normalize: scale positions by each image's valid extent.
        scale: range of normalized positions, > 0.
    """

    def __init__(self, channels: int, temperature: float = 10000.0, normalize: bool = True, scale: float = 2 * math.pi):
        super().__init__()
        if check_int(channels, "channels", 4) % 4:
            raise ValueError(f"channels must be a positive multiple of 4, got {channels!r}")
        self.channels = channels
        self.temperature = check_float(temperature, "temperature", 1.0, math.inf, low_open=True)
        self.normalize = check_bool(normalize, "normalize")
        self.scale = check_float(scale, "scale", 0.0, math.inf, low_open=True)

    def forward(self, feature: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The encoding of each position of ``feature``.

        Args:
            feature: ``[N, C, h, w]`` (only its shape and device are read).
            mask: ``None`` (all valid) or its mask in either convention (see :func:`valid_mask`).

        Returns:
            ``[N, channels, h, w]``, float32.
        """
        n, _, h, w = _check_tensor(feature, "feature", "[N, C, h, w]", 4).shape
        if mask is None:
            valid = torch.ones((n, h, w), dtype=torch.bool, device=feature.device)
        else:
            valid = valid_mask(check_mask(mask, feature, grid="feature"))
        y = valid.cumsum(1, dtype=torch.float32)
        x = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        half = self.channels // 2
        steps = torch.arange(half, dtype=torch.float32, device=feature.device)
        frequencies = self.temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / half)
        pos_x = x[..., None] / frequencies
        pos_y = y[..., None] / frequencies
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return rearrange(torch.cat((pos_y, pos_x), dim=3), "b h w c -> b c h w").to(feature.dtype)
