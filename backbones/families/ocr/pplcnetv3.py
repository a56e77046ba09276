"""``pplcnetv3_rec``: PP-LCNetV3, the encoder of PP-OCRv5's (and v4's) mobile text recogniser, as its body.

A 3x3/2 conv + BatchNorm stem, then ``blocks2`` .. ``blocks6`` of depthwise-separable blocks: a depthwise
re-parameterisable layer (four kxk conv+BN branches, a 1x1 conv+BN branch, an identity BN where the shape stays;
summed, then a learnable affine, Hardswish and another learnable affine), an optional squeeze-excitation, and a
pointwise re-parameterisable layer. Block strides (2, 1), (1, 2), (2, 1), (2, 1) (the last two inside ``blocks6``):
(16, 4); a 48x320 line gives 3x80. Every conv pads ``(k - 1) // 2``: the ceil grid at every size, so a checkpoint
gives exactly the original's features. ``scale`` (0.95 in PP-OCRv5's mobile config) sets the widths
(``make_divisible(c * scale, 16)``: 480 channels out).

The originals end with ``adaptive_avg_pool2d(x, [1, 40])`` in training and ``avg_pool2d(x, [3, 2])`` in eval, a
shape that depends on the mode and on a 48-pixel height; the family's output is the body before it (the eval output
is ``F.avg_pool2d(encoder(x), [3, 2])`` at 48 pixels high). Module names are the originals' (``conv1.conv``,
``blocks6.0.dw_conv.conv_kxk.3.bn``, ``blocks6.0.se.conv1``): OpenOCR's files (``encoder.``) and PaddleOCR2Pytorch's
converted models (``backbone.``) load, their heads skipped and counted. ``fuse()`` folds each layer's branches into
one conv as the original's ``rep()`` does, then the BatchNorms.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core import Backbone, BackboneConfig, FeatureInfo, Pair, Stages, StridePlan, check_float, check_int
from ...registry import register_backbone
from ._checkpoints import new_ocr_family_hint

__all__ = ["PPLCNetV3"]

# per stage: blocks of (kernel, in, out, native stride, squeeze-excitation); blocks6 is two stages here
STAGES: Tuple[Tuple[str, Tuple[Tuple[int, int, int, Pair, bool], ...]], ...] = (
    ("blocks2", ((3, 16, 32, (1, 1), False),)),
    ("blocks3", ((3, 32, 64, (1, 1), False), (3, 64, 64, (1, 1), False))),
    ("blocks4", ((3, 64, 128, (2, 1), False), (3, 128, 128, (1, 1), False))),
    ("blocks5", ((3, 128, 256, (1, 2), False),) + ((5, 256, 256, (1, 1), False),) * 4),
    ("blocks6", ((5, 256, 512, (2, 1), True), (5, 512, 512, (1, 1), True))),
    ("blocks6", ((5, 512, 512, (2, 1), False), (5, 512, 512, (1, 1), False))),
)


def make_divisible(value: float, divisor: int = 16) -> int:
    """The originals' width rounding: to a multiple of ``divisor``, not below 90 % of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _Affine(nn.Module):
    """The originals' learnable affine block: ``scale * x + bias`` with two scalars."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x + self.bias


class _Act(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Hardswish()
        self.lab = _Affine()

    def forward(self, x: Tensor) -> Tensor:
        return self.lab(self.act(x))


class _ConvBN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: Pair, groups: int, dilation: Pair):
        super().__init__()
        padding = (dilation[0] * (kernel - 1) // 2, dilation[1] * (kernel - 1) // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class _RepLayer(nn.Module):
    """The originals' ``LearnableRepLayer``: the sum of its branches (the identity BN exists where the native stride
    is 1 and the channels stay, so that checkpoints fit whatever stride is planned), an affine, the activation.
    ``rep()`` folds the branches into ``reparam_conv``; ``unrep()`` goes back."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, native: Pair, stride: Pair, groups: int,
                 dilation: Pair, branches: int = 4) -> None:  # fmt: skip
        super().__init__()
        self.identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and native == (1, 1) else None
        self.conv_kxk = nn.ModuleList(
            [_ConvBN(in_channels, out_channels, kernel, stride, groups, dilation) for _ in range(branches)]
        )
        self.conv_1x1 = _ConvBN(in_channels, out_channels, 1, stride, groups, (1, 1)) if kernel > 1 else None
        self.lab = _Affine()
        self.act = _Act()
        self.reparam_conv: Optional[nn.Conv2d] = None

    def forward(self, x: Tensor) -> Tensor:
        if self.reparam_conv is not None:
            return self.act(self.lab(self.reparam_conv(x)))
        out = x.new_zeros(())  # the original's order: identity, 1x1, then the kxk branches
        if self.identity is not None:
            out = out + self.identity(x)
        if self.conv_1x1 is not None:
            out = out + self.conv_1x1(x)
        for branch in self.conv_kxk:
            out = out + branch(x)
        return self.act(self.lab(out))

    def rep(self) -> None:
        """One conv with the sum of the branches' BN-folded kernels (the 1x1 and the identity at the centre)."""
        branches = [branch for branch in self.conv_kxk if isinstance(branch, _ConvBN)]
        first = branches[0].conv
        kernel, bias = _folded(branches[0])
        for branch in branches[1:]:
            k, b = _folded(branch)
            kernel, bias = kernel + k, bias + b
        centre = first.kernel_size[0] // 2
        if self.conv_1x1 is not None:
            k, b = _folded(self.conv_1x1)
            kernel, bias = kernel + F.pad(k, [centre] * 4), bias + b
        if self.identity is not None:
            identity = torch.zeros_like(kernel)
            identity[torch.arange(kernel.shape[0]), torch.arange(kernel.shape[0]) % kernel.shape[1], centre, centre] = 1
            k, b = _scaled(identity, self.identity)
            kernel, bias = kernel + k, bias + b
        conv = copy.deepcopy(first)  # the branches' geometry, with the folded kernel and a bias
        conv.weight, conv.bias = nn.Parameter(kernel.detach()), nn.Parameter(bias.detach())
        self.reparam_conv = conv

    def unrep(self) -> None:
        self.reparam_conv = None


def _scaled(kernel: Tensor, norm: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        raise RuntimeError("re-parameterising needs the BatchNorms' running statistics (track_running_stats=True)")
    std = (var + norm.eps).sqrt()
    return kernel * (norm.weight / std).reshape(-1, 1, 1, 1), norm.bias - mean * norm.weight / std


def _folded(branch: _ConvBN) -> Tuple[Tensor, Tensor]:
    return _scaled(branch.conv.weight, branch.bn)


class _SE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(channels, channels // 4, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels // 4, channels, 1)
        self.hardsigmoid = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.hardsigmoid(self.conv2(self.relu(self.conv1(self.avg_pool(x)))))


class _Block(nn.Module):
    def __init__(self, kernel: int, in_channels: int, out_channels: int, native: Pair, stride: Pair, se: bool,
                 dilation: Pair, branches: int) -> None:  # fmt: skip
        super().__init__()
        self.dw_conv = _RepLayer(in_channels, in_channels, kernel, native, stride, in_channels, dilation, branches)
        self.se = _SE(in_channels) if se else None
        self.pw_conv = _RepLayer(in_channels, out_channels, 1, (1, 1), (1, 1), 1, (1, 1), branches)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dw_conv(x)
        if self.se is not None:
            x = self.se(x)
        return self.pw_conv(x)


@register_backbone("pplcnetv3_rec", family="ocr")
class PPLCNetV3(Backbone):
    """PP-LCNetV3 of PP-OCRv5's mobile recogniser (its body): (16, 4), a 48x320 line -> 3x80 (480 channels)."""

    first_conv = "conv1.conv"
    fusable_pairs = (("conv", "bn"),)
    if TYPE_CHECKING:  # set in build (by name); not at run time: TorchScript would read the annotations
        blocks2: nn.Sequential
        blocks3: nn.Sequential
        blocks4: nn.Sequential
        blocks5: nn.Sequential
        blocks6: nn.Sequential

    def __init__(self, config: BackboneConfig, *, scale: float = 0.95, branches: int = 4) -> None:
        """``scale``: width multiplier (0.95 in PP-OCRv5's mobile config); ``branches``: kxk branches per layer."""
        self.scale = check_float(scale, "scale", 0.0, 10.0, low_open=True)
        self.branches = check_int(branches, "branches", 1)
        super().__init__(config, family_options={"scale": scale, "branches": branches})

    def build(self, config: BackboneConfig) -> Stages:
        width = make_divisible(16 * self.scale)
        self.conv1 = _ConvBN(self.in_channels, width, 3, (2, 2), 1, (1, 1))
        containers = {name: nn.Sequential() for name, _ in STAGES}  # filled as the stages are built
        for name, container in containers.items():
            setattr(self, name, container)
        self.stage6_start: int = len(STAGES[4][1])
        plan = config.plan((2, 2), [blocks[0][3] for _, blocks in STAGES])
        return Stages(len(STAGES), self._build_stages(plan, width, containers))

    def _build_stages(
        self, plan: StridePlan, width: int, containers: Dict[str, nn.Sequential]
    ) -> Iterator[FeatureInfo]:
        yield FeatureInfo("stem", 0, width, plan.stem_stride, modules=("conv1",))
        for index, ((name, blocks), stage) in enumerate(zip(STAGES, plan.stages), start=1):
            start = len(containers[name])
            for i, (kernel, cin, cout, native, se) in enumerate(blocks):
                stride, dilation = (stage.stride, stage.first_dilation) if i == 0 else ((1, 1), stage.dilation)
                channels = (make_divisible(cin * self.scale), make_divisible(cout * self.scale))
                containers[name].append(_Block(kernel, *channels, native, stride, se, dilation, self.branches))
            modules = tuple(f"{name}.{i}" for i in range(start, len(containers[name])))
            channels_out = make_divisible(blocks[-1][2] * self.scale)
            yield FeatureInfo(f"stage{index}", index, channels_out, stage.output_stride, stage.dilation, modules)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        outputs = [self.conv1(x)]
        outputs.append(self.blocks2(outputs[-1]))
        outputs.append(self.blocks3(outputs[-1]))
        outputs.append(self.blocks4(outputs[-1]))
        x = self.blocks5(outputs[-1])
        outputs.append(x)
        for i, block in enumerate(self.blocks6):
            x = block(x)
            if i + 1 == self.stage6_start or i + 1 == len(self.blocks6):
                outputs.append(x)
        return outputs

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        if mis_shaped and not unexpected:
            return "the widths differ: the file may be of another scale (scale=0.95 for PP-OCRv5's mobile model)"
        return new_ocr_family_hint(unexpected, "pplcnetv3")
