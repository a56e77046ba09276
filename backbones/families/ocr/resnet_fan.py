"""``resnet_fan``: the ResNet of FAN (Cheng et al. 2017) as deep-text-recognition-benchmark builds it for TRBA.

``ResNet_FeatureExtractor(input_channel, 512)``: ``conv0_1``/``conv0_2`` (32, 64 channels), then four stages of
a max pool, basic blocks (1, 2, 5, 3) to 128, 256, 512, 512 channels and a 3x3 conv + BN + ReLU, and at the end
two 2x2 convs (``conv4_1``, ``conv4_2``). Native stride (32, 4): a 32x100 line gives 1x25 columns here.

The original's grid is not the ceil grid: its third pool (2x2 at stride (2, 1), padding (0, 1)) and ``conv4_1``
(2x2, stride (2, 1), padding (0, 1)) each add a column and the valid 2x2 ``conv4_2`` removes a row and a column:
1x26 at 32x100 (its first pools also round down). Here those layers pad their columns as the original does, the
rows are rounded up (bottom padding, unused at even sizes) and ``conv4_2`` strides by (2, 1); each stage's output
is cropped to ``ceil(H/s) x ceil(W/s)``. At 32 pixels high and a width divisible by 4 the output is exactly the
original's first W/4 columns (its last column, one past the ceil grid, is dropped). Keys as the project's
(``module.FeatureExtraction.ConvNet.conv0_1.weight``), under ``features.`` here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator

from torch import nn

from ...core import BackboneConfig, FeatureInfo, SequentialBackbone, Stages, StridePlan, ceil_pool, stride_of
from ...registry import register_backbone
from ._blocks import ColumnPaddedMaxPool2d, OCRBasicBlock, conv_bn_relu, two_by_two

__all__ = ["ResNetFAN"]

WIDTHS = (128, 256, 512, 512)
BLOCKS = (1, 2, 5, 3)
NATIVE_STRIDES = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))


@register_backbone("resnet_fan", family="ocr")
class ResNetFAN(SequentialBackbone):
    """ResNet of FAN / TRBA (deep-text-recognition-benchmark): (32, 4), a 32x100 line -> 1x25 (512 channels)."""

    default_in_channels = 1
    crop_to_grid = True
    first_conv = "features.conv0_1"
    bare_checkpoint_keys = True
    conv_init = "fan_out"
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def build(self, config: BackboneConfig) -> Stages:
        stem = OrderedDict(conv_bn_relu("0_1", self.in_channels, 32, bias=False))
        stem.update(conv_bn_relu("0_2", 32, 64, bias=False))
        plan = config.plan(stride_of(*stem.values()), NATIVE_STRIDES)
        return Stages(len(NATIVE_STRIDES), self._build_stages(stem, plan))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan) -> Iterator[FeatureInfo]:
        yield self.add_stage("stem", stem, 64, plan.stem_stride)
        channels = 64
        for index, (stage, blocks, width) in enumerate(zip(plan.stages, BLOCKS, WIDTHS), start=1):
            modules: Dict[str, nn.Module] = OrderedDict()
            if index < 4:
                pool = ceil_pool(stage.stride, "max") if index < 3 else ColumnPaddedMaxPool2d(stage.stride)
                modules[f"maxpool{index}"] = pool
            layers = [OCRBasicBlock(channels if i == 0 else width, width, stage.dilation) for i in range(blocks)]
            modules[f"layer{index}"] = nn.Sequential(*layers)
            if index < 4:
                modules.update(conv_bn_relu(str(index), width, width, stage.dilation, bias=False))
            else:
                modules.update(two_by_two("4_1", width, stage.stride, pad_columns=True))
            yield self.add_stage(f"layer{index}", modules, width, stage.output_stride, stage.dilation)
            channels = width
        final = plan.stages[4]
        conv4_2 = two_by_two("4_2", 512, final.stride, pad_columns=False)
        yield self.add_stage("conv4_2", conv4_2, 512, final.output_stride)
