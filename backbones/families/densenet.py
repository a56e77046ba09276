"""ImageNet DenseNets (121/161/169/201) with torchvision's module names and ceil-mode transitions.

torchvision's transition pooling rounds down; the contract says ceil, so the transitions here pad the
odd edge and divide partial windows by their valid elements. Results are identical to torchvision on
sizes divisible by 32. A torchvision state dict (without ``classifier.*``) loads with ``strict=True``.

Stages: 0 = stem (``features.conv0 .. pool0``, /4), ``i`` = ``transition{i-1}`` (its pooling is the
stride) + ``denseblock{i}``; the last stage ends with ``norm5`` and a ReLU (what the classifier sees).
The stage loop (``layers.dense_stages``) is the one ``densenet_hmer`` uses.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Iterator, Optional, Sequence, Tuple

from torch import nn

from ..core import (
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
from ..registry import register_backbone
from ..weights import TimmWeights, TorchvisionWeights
from ._dense import dense_stages

__all__ = ["DenseNet"]

NATIVE_STRIDES = ((1, 1), (2, 2), (2, 2), (2, 2))
# torchvision's published DenseNet files predate its module names: "denselayer1.norm.1.weight".
_OLD_LAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class DenseNet(SequentialBackbone):
    """DenseNet-BC body ``[N, in_channels, H, W] -> [N, C, ceil(H/32), ceil(W/32)]`` (native).

    Args:
        config: the common options (``drop_rate`` is torchvision's dropout after each dense layer).
        growth_rate: channels each dense layer adds.
        block_config: dense layers per block.
        num_init_features: channels of the stem.
        bn_size: bottleneck width factor.
        memory_efficient: torchvision's gradient checkpointing of the dense layers (less training
            memory, slower backward).
    """

    first_conv = "features.conv0"
    classifier_keys = ("classifier.",)
    conv_init = "fan_in"
    dropout_on_output = False
    fusable_pairs = (("conv1", "norm2"),)  # in each dense layer; its norm1 and the transitions' norms come first

    def __init__(
        self,
        config: BackboneConfig,
        *,
        growth_rate: int,
        block_config: Sequence[int],
        num_init_features: int,
        bn_size: int = 4,
        memory_efficient: bool = False,
    ) -> None:
        self.growth_rate, self.block_config = growth_rate, tuple(block_config)
        self.num_init_features, self.bn_size = num_init_features, bn_size
        self.memory_efficient = check_bool(memory_efficient, "memory_efficient")
        options = dict(growth_rate=growth_rate, block_config=tuple(block_config), num_init_features=num_init_features,
                       bn_size=bn_size, memory_efficient=memory_efficient)  # fmt: skip
        super().__init__(config, family_options=options)

    def build(self, config: BackboneConfig) -> Stages:
        width = self.num_init_features
        stem: Dict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(self.in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(width),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        plan = config.plan(stride_of(*stem.values()), NATIVE_STRIDES)
        return Stages(len(self.block_config), self._build_stages(stem, plan, config.drop_rate))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan, drop_rate: float) -> Iterator[FeatureInfo]:
        from torchvision.models.densenet import _DenseBlock, _Transition  # torchvision costs ~1 s at import

        def transition(channels: int, stride: Pair) -> Tuple[nn.Module, int]:
            module = _Transition(channels, channels // 2)
            module.pool = ceil_pool(stride, "avg")
            return module, channels // 2

        def block(num_layers: int, channels: int) -> Tuple[nn.Module, int]:
            module = _DenseBlock(num_layers, channels, self.bn_size, self.growth_rate, drop_rate, self.memory_efficient)
            return module, channels + num_layers * self.growth_rate

        yield self.add_stage("stem", stem, self.num_init_features, plan.stem_stride)
        for spec in dense_stages(
            plan, self.block_config, self.num_init_features, names=("denseblock", "transition"),
            transition=transition, block=block,
            tail=lambda channels: OrderedDict(norm5=nn.BatchNorm2d(channels), relu5=nn.ReLU(inplace=True)),
        ):  # fmt: skip
            yield self.add_stage(*spec)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """torchvision's (old and new names) and timm's keys; the ``classifier`` head is dropped."""
        renamed = super().checkpoint_key(key)
        return None if renamed is None else _OLD_LAYER_KEY.sub(r"\1\2", renamed)


def _register(name: str, growth_rate: int, block_config: Sequence[int], num_init_features: int) -> None:
    def builder(config: BackboneConfig, *, memory_efficient: bool = False) -> DenseNet:
        return DenseNet(
            config, growth_rate=growth_rate, block_config=block_config, num_init_features=num_init_features,
            memory_efficient=memory_efficient,
        )  # fmt: skip

    builder.__name__ = builder.__qualname__ = name
    description = f"DenseNet-BC, growth {growth_rate}, blocks {list(block_config)}"
    weights = (TorchvisionWeights(name), TimmWeights(name))
    register_backbone(name, family="densenet", description=description, weights=weights)(builder)


_register("densenet121", 32, (6, 12, 24, 16), 64)
_register("densenet161", 48, (6, 12, 36, 24), 96)
_register("densenet169", 32, (6, 12, 32, 32), 64)
_register("densenet201", 32, (6, 12, 48, 32), 64)
