"""``pphgnetv2_b4_rec``: PP-HGNetV2-B4 as PP-OCRv5's server text recogniser uses it (``text_rec=True``), its body.

Stem: a 3x3/2 conv, then two 2x2 'same' convs beside a 2x2 'same' max pool (both pad the far edge), concatenated, a
3x3 conv at stride 1 (the recogniser's stem stays at /2) and a 1x1 conv; every conv with BatchNorm and ReLU. Then
four stages, each a 3x3 depthwise conv that downsamples (strides (2, 1), (1, 2), (2, 1), (2, 1): (16, 4); a 48x320
line gives 3x80) and HG blocks: layers of 3x3 conv+BN+ReLU (stages 1-2) or light 1x1 + 5x5 depthwise layers (3-4),
their outputs concatenated and squeezed by two 1x1 convs, with a residual from the second block on. 2048 channels
out. Every conv pads ``(k - 1) // 2`` (the 2x2 ones the far edge), so the grid is the ceil grid at every size.

The original ends with the same mode-dependent pooling as PP-LCNetV3 (``F.avg_pool2d(x, [3, 2])`` in eval): the
family's output is the body before it. Module names are the original's (``stem.stem1.conv``,
``stages.2.blocks.0.layers.5.conv2.bn``); PaddleOCR2Pytorch's converted files (``backbone.``, with the classifier's
``last_conv`` and ``fc``, unused by the recogniser, skipped and counted) load strictly. There are no
re-parameterisable branches: ``fuse()`` folds the BatchNorms.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core import Backbone, BackboneConfig, FeatureInfo, Pair, Stages, StridePlan
from ...registry import register_backbone
from ._checkpoints import new_ocr_family_hint

__all__ = ["PPHGNetV2"]

# in, mid, out, blocks, light blocks, kernel, layers, native stride of the downsampling depthwise conv
STAGES = (
    (48, 48, 128, 1, False, 3, 6, (2, 1)),
    (128, 96, 512, 1, False, 3, 6, (1, 2)),
    (512, 192, 1024, 3, True, 5, 6, (2, 1)),
    (1024, 384, 2048, 1, True, 5, 6, (2, 1)),
)


class _ConvBNAct(nn.Module):
    """conv (no bias) + BN (+ ReLU); ``same`` pads a 2x2 kernel's far edge as Paddle's SAME padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: Pair = (1, 1), groups: int = 1, act: bool = True,
                 dilation: Pair = (1, 1), same: bool = False) -> None:  # fmt: skip
        super().__init__()
        padding = (0, 0) if same else (dilation[0] * (kernel - 1) // 2, dilation[1] * (kernel - 1) // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else nn.Identity()
        self.edge: List[int] = [0, kernel - 1, 0, kernel - 1] if same else [0, 0, 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        if self.edge[1] > 0:
            x = F.pad(x, self.edge)
        return self.act(self.bn(self.conv(x)))


class _LightConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, dilation: Pair) -> None:
        super().__init__()
        self.conv1 = _ConvBNAct(cin, cout, 1, act=False)
        self.conv2 = _ConvBNAct(cout, cout, kernel, groups=cout, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class _Stem(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.stem1 = _ConvBNAct(cin, mid, 3, (2, 2))
        self.stem2a = _ConvBNAct(mid, mid // 2, 2, same=True)
        self.stem2b = _ConvBNAct(mid // 2, mid, 2, same=True)
        self.stem3 = _ConvBNAct(mid * 2, mid, 3)
        self.stem4 = _ConvBNAct(mid, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem1(x)
        pooled = F.max_pool2d(F.pad(x, [0, 1, 0, 1]), 2, 1)  # after a ReLU: the zero edge never wins
        return self.stem4(self.stem3(torch.cat([pooled, self.stem2b(self.stem2a(x))], 1)))


class _HGBlock(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, kernel: int, layers: int, identity: bool, light: bool,
                 dilation: Pair) -> None:  # fmt: skip
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList(
            _LightConvBNAct(cin if i == 0 else mid, mid, kernel, dilation)
            if light
            else _ConvBNAct(cin if i == 0 else mid, mid, kernel, dilation=dilation)
            for i in range(layers)
        )
        self.aggregation_squeeze_conv = _ConvBNAct(cin + layers * mid, cout // 2, 1)
        self.aggregation_excitation_conv = _ConvBNAct(cout // 2, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        out = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outputs, 1)))
        return out + x if self.identity else out


class _HGStage(nn.Module):
    def __init__(self, spec: Tuple, stride: Pair, first_dilation: Pair, dilation: Pair) -> None:
        super().__init__()
        cin, mid, cout, blocks, light, kernel, layers, _ = spec
        self.downsample = _ConvBNAct(cin, cin, 3, stride, groups=cin, act=False, dilation=first_dilation)
        self.blocks = nn.Sequential(
            *[
                _HGBlock(cin if i == 0 else cout, mid, cout, kernel, layers, i > 0, light, dilation)
                for i in range(blocks)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


@register_backbone("pphgnetv2_b4_rec", family="ocr")
class PPHGNetV2(Backbone):
    """PP-HGNetV2-B4 of PP-OCRv5's server recogniser (its body): (16, 4), a 48x320 line -> 3x80 (2048 channels)."""

    first_conv = "stem.stem1.conv"
    classifier_keys = ("last_conv.", "fc.")

    conv_init = "fan_in"

    def build(self, config: BackboneConfig) -> Stages:
        self.stem = _Stem(self.in_channels, 32, 48)
        self.stages = nn.ModuleList()  # filled as the stages are built
        plan = config.plan((2, 2), [spec[-1] for spec in STAGES])
        return Stages(len(STAGES), self._build_stages(plan))

    def _build_stages(self, plan: StridePlan) -> Iterator[FeatureInfo]:
        yield FeatureInfo("stem", 0, 48, plan.stem_stride, modules=("stem",))
        for index, (spec, stage) in enumerate(zip(STAGES, plan.stages), start=1):
            self.stages.append(_HGStage(spec, stage.stride, stage.first_dilation, stage.dilation))
            modules = (f"stages.{index - 1}",)
            yield FeatureInfo(f"stage{index}", index, spec[2], stage.output_stride, stage.dilation, modules)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        outputs = [self.stem(x)]
        for stage in self.stages:
            outputs.append(stage(outputs[-1]))
        return outputs

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        return new_ocr_family_hint(unexpected, "pphgnetv2")
