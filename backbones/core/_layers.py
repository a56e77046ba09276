"""The layers the core and every family share: ceil-rounding pooling that exports with dynamic H and W, the 1x1
projection adapter, weight initialisation, and the stride and dilation helpers.

Pooling.

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

from collections import OrderedDict
from typing import List, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._contract import Pair
from ._validate import check_choice, check_int

__all__ = [
    "ADAPTER_KINDS",
    "CeilPool2d",
    "Projection",
    "ceil_avg_pool2d",
    "ceil_max_pool2d",
    "ceil_pool",
    "dilate_3x3_convs",
    "init_conv_weights",
    "padded_avg_pool2d",
    "padded_max_pool2d",
    "stride_of",
]


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


def init_conv_weights(model: nn.Module, mode: Literal["fan_in", "fan_out"] = "fan_out") -> None:
    """He initialisation of every conv of ``model``: ``fan_out`` as torchvision's ResNets (and the OCR and HMER
    projects), ``fan_in`` as its DenseNets. BatchNorms keep their construction values (weight 1, bias 0). Meta
    weights (``build_on_meta``) have no values to set."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")


def stride_of(*modules: nn.Module) -> Pair:
    """Total ``(sh, sw)`` downsampling of ``modules`` run one after the other (their convs and pools)."""
    total = (1, 1)
    for module in modules:
        stride = module.stride if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, CeilPool2d)) else 1
        pair = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
        total = (total[0] * pair[0], total[1] * pair[1])
    return total


def dilate_3x3_convs(module: nn.Module, dilation: Pair) -> None:
    """Dilate every 3x3 stride-1 conv inside ``module`` in place, keeping its output size."""
    if dilation == (1, 1):
        return
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1):
            conv.dilation = dilation
            conv.padding = dilation


ADAPTER_KINDS = ("conv", "conv_bn", "conv_bn_relu")


class Projection(nn.Sequential):
    """The 1x1 adapter ``[N, in_channels, H, W] -> [N, out_channels, H, W]`` that ``out_channels=`` attaches.

    Args:
        in_channels: channels of the incoming feature map.
        out_channels: channels wanted.
        kind: ``"conv"`` (1x1 conv with bias), ``"conv_bn"`` (conv without bias, then BatchNorm;
            the default, what the seeds added after ResNet-50) or ``"conv_bn_relu"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "conv_bn") -> None:
        check_choice(kind, "adapter", ADAPTER_KINDS)
        check_int(in_channels, "in_channels", 1)
        check_int(out_channels, "out_channels", 1)
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=kind == "conv")
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
        if kind != "conv":
            layers["bn"] = nn.BatchNorm2d(out_channels)
        if kind == "conv_bn_relu":
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = kind
