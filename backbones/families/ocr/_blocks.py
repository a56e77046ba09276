"""The blocks that the classic OCR families share (mmocr's ResNet-31, deep-text-recognition-benchmark's FAN, CRNN's
VGG): a 3x3 conv + BN + ReLU, the basic residual block, the 2x2 convs and the column-padded pool of the line
encoders."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ...core import Pair

__all__ = ["ColumnPaddedMaxPool2d", "OCRBasicBlock", "conv_bn_relu", "two_by_two"]


class ColumnPaddedMaxPool2d(nn.MaxPool2d):
    """CRNN's and FAN's 2x2 max pool at stride ``(sh, 1)``: a ``-inf`` column on each side, as the originals pad,
    gives one more column (``W + 1``); a ``-inf`` row at the bottom rounds the rows up (``ceil(H/sh)``; the same
    rows as the originals for even H). The family crops its stage outputs back to the ceil grid.
    """

    def __init__(self, stride: Pair) -> None:
        if stride[1] != 1:
            raise ValueError(f"stride must be (sh, 1) for a column-padded pool, got {stride}")
        super().__init__(kernel_size=2, stride=(int(stride[0]), 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(F.pad(x, [1, 1, 0, 1], value=float("-inf")), 2, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size=2, stride={self.stride}, padding=columns 1+1, rows 0+1"


def conv_bn_relu(
    name: str, in_channels: int, out_channels: int, dilation: Pair = (1, 1), bias: bool = True
) -> Dict[str, nn.Module]:
    """``{conv<name>, bn<name>, relu<name>}``: a 3x3 conv that keeps the size, BN and ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=bias)
    return OrderedDict(
        [(f"conv{name}", conv), (f"bn{name}", nn.BatchNorm2d(out_channels)), (f"relu{name}", nn.ReLU(inplace=True))]
    )


class OCRBasicBlock(nn.Module):
    """mmocr's and deep-text-recognition-benchmark's basic block: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus a
    1x1 conv + BN shortcut where the channels change; ``[N, C, H, W] -> [N, planes, H, W]``."""

    def __init__(self, in_channels: int, planes: int, dilation: Pair) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: Optional[nn.Module] = None
        if in_channels != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, planes, 1, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def two_by_two(name: str, channels: int, stride: Pair, pad_columns: bool, bias: bool = False) -> Dict[str, nn.Module]:
    """``pad<name>, conv<name>, bn<name>, relu<name>``: a 2x2 conv at ``stride``; ``pad_columns`` pads a column on
    each side as FAN's ``conv4_1`` (one more column), else the columns are valid (one fewer), as ``conv4_2``
    and CRNN's ``conv6``; one zero row at the bottom rounds the rows up."""
    pad = nn.ZeroPad2d((1, 1, 0, 1) if pad_columns else (0, 0, 0, 1))
    conv = nn.Conv2d(channels, channels, 2, stride, bias=bias)
    return OrderedDict(
        [(f"pad{name}", pad), (f"conv{name}", conv), (f"bn{name}", nn.BatchNorm2d(channels)),
         (f"relu{name}", nn.ReLU(inplace=True))]
    )  # fmt: skip
