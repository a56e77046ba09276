"""``resnet31_ocr``: the ResNet-31 of SAR, NRTR and RobustScanner (mmocr's ``ResNet31OCR``).

Stem ``conv1_1`` 3 -> 64 and ``conv1_2`` 64 -> 128 (3x3, with bias, BN, ReLU), then four stages, each a max
pool (2x2, 2x2, (2, 1); ceil mode, kernel = stride; none before the last stage), basic blocks (1, 2, 5, 3) of
3x3 convs to 256, 256, 512, 512 channels, and a 3x3 conv + BN + ReLU. Native stride (8, 4): 48x160 -> 6x40.
mmocr's pools already round up, so a checkpoint gives exactly mmocr's features. Keys as mmocr's
(``backbone.conv1_1.weight``, ``backbone.block2.0.conv1.weight``), under ``features.`` here.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Iterator

from torch import nn

from ...core import BackboneConfig, FeatureInfo, SequentialBackbone, Stages, StridePlan, ceil_pool, stride_of
from ...registry import register_backbone
from ._blocks import OCRBasicBlock, conv_bn_relu

__all__ = ["ResNet31OCR"]

CHANNELS = (64, 128, 256, 256, 512, 512)
BLOCKS = (1, 2, 5, 3)
NATIVE_STRIDES = ((2, 2), (2, 2), (2, 1), (1, 1))


@register_backbone("resnet31_ocr", family="ocr")
class ResNet31OCR(SequentialBackbone):
    """ResNet-31 of SAR / NRTR / RobustScanner (mmocr ``ResNet31OCR``): (8, 4), 48x160 -> 6x40 (512 channels)."""

    first_conv = "features.conv1_1"
    bare_checkpoint_keys = True
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"))
    conv_init = "fan_out"

    def build(self, config: BackboneConfig) -> Stages:
        stem = OrderedDict(conv_bn_relu("1_1", self.in_channels, CHANNELS[0]))
        stem.update(conv_bn_relu("1_2", CHANNELS[0], CHANNELS[1]))
        plan = config.plan(stride_of(*stem.values()), NATIVE_STRIDES)
        return Stages(len(BLOCKS), self._build_stages(stem, plan))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan) -> Iterator[FeatureInfo]:
        yield self.add_stage("stem", stem, CHANNELS[1], plan.stem_stride)
        channels = CHANNELS[1]
        for index, (stage, blocks, width) in enumerate(zip(plan.stages, BLOCKS, CHANNELS[2:]), start=2):
            modules: Dict[str, nn.Module] = OrderedDict()
            if index < 5:
                modules[f"pool{index}"] = ceil_pool(stage.stride, "max")
            layers = [OCRBasicBlock(channels if i == 0 else width, width, stage.dilation) for i in range(blocks)]
            modules[f"block{index}"] = nn.Sequential(*layers)
            modules.update(conv_bn_relu(str(index), width, width, stage.dilation))
            yield self.add_stage(f"block{index}", modules, width, stage.output_stride, stage.dilation)
            channels = width
