"""ImageNet DenseNets (121/161/169/201) with torchvision's module names and ceil-mode transitions.

torchvision's transition pooling rounds down; the contract says ceil, so the transitions here pad the
odd edge and divide partial windows by their valid elements. Results are identical to torchvision on
sizes divisible by 32. A torchvision state dict (without ``classifier.*``) loads with ``strict=True``.

Stages: 0 = stem (``features.conv0 .. pool0``, /4), ``i`` = ``transition{i-1}`` (its pooling is the
stride) + ``denseblock{i}``; the last stage ends with ``norm5`` and a ReLU (what the classifier sees).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Optional, Sequence

from torch import nn

from .base import Backbone, BackboneConfig, SequentialBackbone
from .contract import FeatureInfo
from .layers import CeilAvgPool2d, dilate_convs
from .registry import register_backbone

__all__ = ["DenseNet"]

NATIVE_STRIDES = ((1, 1), (2, 2), (2, 2), (2, 2))
# torchvision's published DenseNet files predate its module names: "denselayer1.norm.1.weight".
_OLD_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class DenseNet(SequentialBackbone):
    """DenseNet-BC body ``[N, in_channels, H, W] -> [N, C, ceil(H/32), ceil(W/32)]`` (native).

    Args:
        config: the common build options (``drop_rate`` is torchvision's dropout after each dense layer).
        growth_rate: channels each dense layer adds.
        block_config: dense layers per block.
        num_init_features: channels of the stem.
        bn_size: bottleneck width factor.
        memory_efficient: torchvision's gradient checkpointing of the dense layers (less training
            memory, slower backward).
    """

    def __init__(
        self,
        config: BackboneConfig,
        growth_rate: int,
        block_config: Sequence[int],
        num_init_features: int,
        *,
        bn_size: int = 4,
        memory_efficient: bool = False,
    ) -> None:
        from torchvision.models.densenet import _DenseBlock, _Transition  # torchvision costs ~1 s at import

        super().__init__(config)
        if not isinstance(memory_efficient, bool):
            raise TypeError(f"memory_efficient must be a bool, got {memory_efficient!r}")
        plan = config.plan(4, NATIVE_STRIDES)
        last = config.last_stage(len(block_config))
        features: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(config.in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(num_init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages = [
            FeatureInfo("stem", 0, num_init_features, plan.stem_stride, modules=("features.conv0", "features.norm0"))
        ]
        stage_ends = ["pool0"]
        channels = num_init_features
        for index, (stage_plan, num_layers) in enumerate(zip(plan.stages, block_config), start=1):
            if index > last:
                break
            modules = []
            if index > 1:
                transition = _Transition(channels, channels // 2)
                transition.pool = CeilAvgPool2d(stage_plan.stride) if stage_plan.stride != (1, 1) else nn.Identity()
                features[f"transition{index - 1}"] = transition
                modules.append(f"features.transition{index - 1}")
                channels //= 2
            block = _DenseBlock(num_layers, channels, bn_size, growth_rate, config.drop_rate, memory_efficient)
            dilate_convs(block, stage_plan.dilation)
            features[f"denseblock{index}"] = block
            modules.append(f"features.denseblock{index}")
            channels += num_layers * growth_rate
            stage_end = f"denseblock{index}"
            if index == len(block_config):
                features["norm5"] = nn.BatchNorm2d(channels)
                features["relu5"] = nn.ReLU(inplace=True)
                modules.append("features.norm5")
                stage_end = "relu5"
            stage_ends.append(stage_end)
            stages.append(
                FeatureInfo(
                    f"denseblock{index}", index, channels, stage_plan.output_stride, stage_plan.dilation, tuple(modules)
                )
            )
        self.set_features(features, stage_ends)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.finish(stages, num_stages=len(block_config))

    def checkpoint_key(self, key: str) -> Optional[str]:
        """torchvision's (old and new names) and timm's keys; the ``classifier`` head is dropped."""
        if key.startswith("classifier."):
            return None
        return _OLD_LAYER_KEY.sub(r"\1\2", key)


def _register(name: str, growth_rate: int, block_config: Sequence[int], num_init_features: int) -> None:
    def builder(config: BackboneConfig, *, memory_efficient: bool = False) -> Backbone:
        return DenseNet(config, growth_rate, block_config, num_init_features, memory_efficient=memory_efficient)

    builder.__name__ = builder.__qualname__ = name
    description = f"DenseNet-BC, growth {growth_rate}, blocks {list(block_config)}"
    register_backbone(name, family="densenet", description=description)(builder)


_register("densenet121", 32, (6, 12, 24, 16), 64)
_register("densenet161", 48, (6, 12, 36, 24), 96)
_register("densenet169", 32, (6, 12, 32, 32), 64)
_register("densenet201", 32, (6, 12, 48, 32), 64)
