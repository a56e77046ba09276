"""Pooling that rounds up (ceil mode) and still exports with dynamic H and W.

``F.avg_pool2d(x, 2, ceil_mode=True)`` is what the HMER encoders use, but ``torch.export`` with
dynamic H, W rejects ceil-mode pooling. These layers pad the far edges by ``stride - 1`` and pool in
floor mode: ``(n + s - 1 - s) // s + 1 = ceil(n / s)`` windows, each holding at least one real
element, so the numbers equal ceil mode: max pooling pads with ``-inf``; average pooling divides each
window by its count of real elements. The padding is a constant, not ``(-n) % s``: symbolic-shape
tracing (``torch.compile(dynamic=True)``) simplifies nested modulo sizes very slowly.
Kernel size equals stride (non-overlapping windows). Eager and TorchScript code calls PyTorch's ceil-mode
kernels directly (one kernel instead of pad + pool + divide: about 30 % less time in these layers); the
padded form runs only while ``torch.compile`` / ``torch.export`` trace.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract import Pair

__all__ = ["CeilAvgPool2d", "CeilMaxPool2d", "ceil_avg_pool2d", "ceil_max_pool2d", "dilate_convs"]


def _edge_padding(stride: List[int]) -> List[int]:
    return [0, stride[1] - 1, 0, stride[0] - 1]


def _tracing() -> bool:
    if torch.jit.is_scripting():
        return False
    return torch.compiler.is_compiling()


def ceil_max_pool2d(x: Tensor, stride: List[int]) -> Tensor:
    """``[N, C, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``, equal to ``max_pool2d(x, s, ceil_mode=True)``."""
    if not _tracing():
        return F.max_pool2d(x, stride, stride, ceil_mode=True)
    return padded_max_pool2d(x, stride)


def ceil_avg_pool2d(x: Tensor, stride: List[int]) -> Tensor:
    """``[N, C, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``, equal to ``avg_pool2d(x, s, ceil_mode=True)``."""
    if not _tracing():
        return F.avg_pool2d(x, stride, stride, ceil_mode=True)
    return padded_avg_pool2d(x, stride)


def padded_max_pool2d(x: Tensor, stride: List[int]) -> Tensor:
    """Ceil-mode max pooling as ``-inf`` edge padding + floor-mode pooling (exports with dynamic H, W)."""
    x = F.pad(x, _edge_padding(stride), value=float("-inf"))
    return F.max_pool2d(x, stride, stride)


def padded_avg_pool2d(x: Tensor, stride: List[int]) -> Tensor:
    """Ceil-mode average pooling as zero edge padding + floor-mode pooling / the windows' real fraction."""
    padding = _edge_padding(stride)
    pooled = F.avg_pool2d(F.pad(x, padding), stride, stride)
    valid = x.new_ones((1, 1, x.shape[-2], x.shape[-1]))
    valid_fraction = F.avg_pool2d(F.pad(valid, padding), stride, stride)
    return pooled / valid_fraction


class CeilMaxPool2d(nn.Module):
    """Non-overlapping max pooling with ceil rounding; kernel = stride = ``(sh, sw)``."""

    def __init__(self, stride: Pair) -> None:
        super().__init__()
        self.stride: List[int] = [int(stride[0]), int(stride[1])]

    def forward(self, x: Tensor) -> Tensor:
        return ceil_max_pool2d(x, self.stride)

    def extra_repr(self) -> str:
        return f"stride={tuple(self.stride)}"


class CeilAvgPool2d(nn.Module):
    """Non-overlapping average pooling with ceil rounding; kernel = stride = ``(sh, sw)``."""

    def __init__(self, stride: Pair) -> None:
        super().__init__()
        self.stride: List[int] = [int(stride[0]), int(stride[1])]

    def forward(self, x: Tensor) -> Tensor:
        return ceil_avg_pool2d(x, self.stride)

    def extra_repr(self) -> str:
        return f"stride={tuple(self.stride)}"


def dilate_convs(module: nn.Module, dilation: Pair) -> None:
    """Dilate every 3x3 stride-1 conv inside ``module`` in place, keeping its output size."""
    if dilation == (1, 1):
        return
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1):
            conv.dilation = dilation
            conv.padding = dilation
