"""``vgg_crnn``: the VGG encoder of CRNN (meijieru/crnn.pytorch; mmocr's ``MiniVGG``, with ``leaky_relu=True`` where
its config keeps MiniVGG's default; PARSeq's crnn).

Seven convs (64, 128, 256, 256, 512, 512 channels, 3x3 with bias; the last 512 is 2x2), BatchNorm after the 3rd,
5th and 7th, ReLU after each; max pools 2x2, 2x2, then 2x2 windows at stride (2, 1) twice. Native stride (32, 4):
a 32x100 line gives 1x25 columns here. Module names as ``crnn.pth``'s (``cnn.conv0.weight``,
``cnn.batchnorm2.running_mean``; its ``rnn.*`` is skipped and reported), under ``features.`` here.

The original's grid is not the ceil grid: its (2, 1) pools pad a column on both sides (one more column each)
and the final 2x2 conv is valid (one row and column fewer): 1x26 at 32x100 (its first pools also round down).
Here those layers pad their columns as the original does, the rows are rounded up (bottom padding, unused at
even sizes) and the last conv strides by (2, 1); each stage's output is cropped to ``ceil(H/s) x ceil(W/s)``. At
32 pixels high and a width divisible by 4 the output is exactly the original's first W/4 columns (its last
column, one past the ceil grid, is dropped).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator

from torch import nn

from ...core import (
    BackboneConfig,
    FeatureInfo,
    Pair,
    SequentialBackbone,
    Stages,
    StridePlan,
    ceil_pool,
    check_bool,
    stride_of,
)
from ...registry import register_backbone
from ._blocks import ColumnPaddedMaxPool2d, two_by_two

__all__ = ["VGGCRNN"]

CHANNELS = (64, 128, 256, 256, 512, 512, 512)
NATIVE_STRIDES = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))
# stages 1..5: a pool (not before the last), then these convs (index, with BatchNorm); the last adds conv6
STAGE_CONVS = (((1, False),), ((2, True), (3, False)), ((4, True), (5, False)), (), ())


def _conv(index: int, in_channels: int, norm: bool, dilation: Pair, leaky: bool) -> Dict[str, nn.Module]:
    out = CHANNELS[index]
    modules: Dict[str, nn.Module] = OrderedDict()
    modules[f"conv{index}"] = nn.Conv2d(in_channels, out, 3, 1, padding=dilation, dilation=dilation)
    if norm:
        modules[f"batchnorm{index}"] = nn.BatchNorm2d(out)
    modules[f"relu{index}"] = nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True)
    return modules


@register_backbone("vgg_crnn", family="ocr")
class VGGCRNN(SequentialBackbone):
    """VGG of CRNN: (32, 4), a 32x100 line -> 1x25 (512 channels), 1 input channel by default."""

    default_in_channels = 1
    crop_to_grid = True
    first_conv = "features.conv0"
    bare_checkpoint_keys = True

    def __init__(self, config: BackboneConfig, *, leaky_relu: bool = False) -> None:
        """``leaky_relu``: LeakyReLU(0.2) after each conv, as mmocr's ``MiniVGG`` does by default (crnn.pth: ReLU)."""
        self.leaky_relu = check_bool(leaky_relu, "leaky_relu")
        super().__init__(config, family_options={"leaky_relu": leaky_relu})

    def build(self, config: BackboneConfig) -> Stages:
        stem = _conv(0, self.in_channels, False, (1, 1), self.leaky_relu)
        plan = config.plan(stride_of(*stem.values()), NATIVE_STRIDES)
        return Stages(len(NATIVE_STRIDES), self._build_stages(stem, plan))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan) -> Iterator[FeatureInfo]:
        yield self.add_stage("stem", stem, CHANNELS[0], plan.stem_stride)
        channels, leaky = CHANNELS[0], self.leaky_relu
        for index, stage in enumerate(plan.stages, start=1):
            modules: Dict[str, nn.Module] = OrderedDict()
            if index < 5:
                pool = ceil_pool(stage.stride, "max") if index < 3 else ColumnPaddedMaxPool2d(stage.stride)
                modules[f"pooling{index - 1}"] = pool
            for conv, norm in STAGE_CONVS[index - 1]:
                modules.update(_conv(conv, channels, norm, stage.dilation, leaky))
                channels = CHANNELS[conv]
            if index == 5:
                conv6 = two_by_two("6", channels, stage.stride, pad_columns=False, bias=True)
                conv6["relu6"] = nn.LeakyReLU(0.2, inplace=True) if leaky else conv6["relu6"]
                modules.update((key.replace("bn", "batchnorm"), module) for key, module in conv6.items())
            yield self.add_stage(f"stage{index}", modules, channels, stage.output_stride, stage.dilation)
