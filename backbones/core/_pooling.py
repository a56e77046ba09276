"""Ceil-rounding pooling, ``[N, C, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``, that exports with dynamic H and W.

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

from ._contract import Pair
from ._validate import check_choice

__all__ = ["CeilPool2d", "ceil_avg_pool2d", "ceil_max_pool2d", "ceil_pool", "padded_avg_pool2d", "padded_max_pool2d"]


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


class CeilPool2d(nn.Module):
    """Non-overlapping ``"max"`` or ``"avg"`` pooling with ceil rounding; kernel = stride = ``(sh, sw)``.

    ``[N, C, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``.
    """

    def __init__(self, stride: Pair, mode: str = "max") -> None:
        super().__init__()
        self.mode = check_choice(mode, "mode", ("max", "avg"))
        self.stride: List[int] = [int(stride[0]), int(stride[1])]

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "max":
            return ceil_max_pool2d(x, self.stride)
        return ceil_avg_pool2d(x, self.stride)

    def extra_repr(self) -> str:
        return f"stride={tuple(self.stride)}, mode={self.mode!r}"


def ceil_pool(stride: Pair, mode: str) -> nn.Module:
    """A :class:`CeilPool2d` for a kept stride, nothing (``nn.Identity``) for ``(1, 1)``."""
    return CeilPool2d(stride, mode) if stride != (1, 1) else nn.Identity()
