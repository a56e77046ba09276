"""ResNet, ResNeXt and Wide ResNet feature extractors with torchvision's module names.

The blocks are timm's (they take tuple strides and dilations, which torchvision's BasicBlock does not);
the parameter names equal torchvision's, so a torchvision state dict (without ``fc.*``) loads with
``strict=True`` and gives the same features at the native stride.

Stages: 0 = stem (``conv1, bn1, relu, maxpool``, stride 4; stride 1 with ``stem="cifar"``), then
``layer1..layer4`` with native strides ``(1, 2, 2, 2)``: 512 (BasicBlock) or 2048 channels at /32.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

from torch import Tensor, nn

from .base import Backbone, BackboneConfig
from .contract import FeatureInfo
from .registry import register_backbone
from .strides import StagePlan

__all__ = ["ResNet"]

Block = Union[str, Type[nn.Module]]  # "basic", "bottleneck", or timm's BasicBlock / Bottleneck class


def _block_classes():
    from timm.models.resnet import BasicBlock, Bottleneck  # imported at build time: timm costs ~0.3 s

    return BasicBlock, Bottleneck


STEMS = ("imagenet", "cifar")
NATIVE_STRIDES = ((1, 1), (2, 2), (2, 2), (2, 2))


class ResNet(Backbone):
    """ResNet body ``[N, in_channels, H, W] -> [N, 512 * expansion, ceil(H/32), ceil(W/32)]`` (native).

    Args:
        config: the common build options.
        block: ``"basic"`` or ``"bottleneck"`` (timm's ``BasicBlock`` / ``Bottleneck``, also accepted as classes).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        groups: cardinality of the 3x3 convs (ResNeXt).
        width_per_group: channels per group (64 for ResNet, 128 for Wide ResNet).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv, no pool).
        zero_init_residual: zero the last BatchNorm of each block (torchvision's option).
    """

    def __init__(
        self,
        config: BackboneConfig,
        block: Block,
        layers: Sequence[int],
        *,
        groups: int = 1,
        width_per_group: int = 64,
        stem: str = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        basic, bottleneck = _block_classes()
        if isinstance(block, str):
            if block not in ("basic", "bottleneck"):
                raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
            block = basic if block == "basic" else bottleneck
        super().__init__(config)
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        stem_stride = 4 if stem == "imagenet" else 1
        plan = config.plan(stem_stride, NATIVE_STRIDES)
        last = config.last_stage(len(NATIVE_STRIDES))
        self.groups, self.base_width, self.inplanes = groups, width_per_group, 64

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        stages = [FeatureInfo("stem", 0, 64, plan.stem_stride, modules=("conv1", "bn1"))]

        for index, (stage_plan, num_blocks) in enumerate(zip(plan.stages, layers), start=1):
            name = f"layer{index}"
            layer = self._make_layer(block, 64 * 2 ** (index - 1), num_blocks, stage_plan) if index <= last else None
            setattr(self, name, layer)
            if layer is not None:
                channels = 64 * 2 ** (index - 1) * block.expansion
                stages.append(
                    FeatureInfo(name, index, channels, stage_plan.output_stride, stage_plan.dilation, (name,))
                )
        self._init_weights(zero_init_residual, basic, bottleneck)
        self.finish(stages, num_stages=len(NATIVE_STRIDES), output_dropout=config.drop_rate)

    def _make_layer(self, block: Block, planes: int, num_blocks: int, plan: StagePlan) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample: Optional[nn.Module] = None
        if plan.stride != (1, 1) or self.inplanes != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out_channels, kernel_size=1, stride=plan.stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        options = dict(cardinality=self.groups, base_width=self.base_width, dilation=plan.dilation)
        blocks = [block(self.inplanes, planes, plan.stride, downsample, first_dilation=plan.first_dilation, **options)]
        self.inplanes = out_channels
        blocks += [block(self.inplanes, planes, **options) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool, basic: type, bottleneck: type) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, basic):
                    nn.init.zeros_(module.bn2.weight)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """torchvision's and timm's ResNet keys are ours; their classifier ``fc`` is dropped."""
        return None if key.startswith("fc.") else key

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = [x]
        if self.layer1 is not None:
            x = self.layer1(x)
            outputs.append(x)
        if self.layer2 is not None:
            x = self.layer2(x)
            outputs.append(x)
        if self.layer3 is not None:
            x = self.layer3(x)
            outputs.append(x)
        if self.layer4 is not None:
            x = self.layer4(x)
            outputs.append(x)
        return outputs


def _register(name: str, block: str, layers: Sequence[int], groups: int = 1, width: int = 64) -> None:
    kind = "ResNeXt" if groups > 1 else ("Wide ResNet" if width > 64 else "ResNet")
    block_name = "BasicBlock" if block == "basic" else "Bottleneck"
    description = f"{kind}, {block_name}, blocks {list(layers)}" + (
        f", {groups} groups x {width}" if groups > 1 else ""
    )

    def builder(config: BackboneConfig, *, stem: str = "imagenet", zero_init_residual: bool = False) -> Backbone:
        return ResNet(
            config,
            block,
            layers,
            groups=groups,
            width_per_group=width,
            stem=stem,
            zero_init_residual=zero_init_residual,
        )

    builder.__name__ = builder.__qualname__ = name
    register_backbone(name, family="resnet", description=description)(builder)


_register("resnet18", "basic", (2, 2, 2, 2))
_register("resnet34", "basic", (3, 4, 6, 3))
_register("resnet50", "bottleneck", (3, 4, 6, 3))
_register("resnet101", "bottleneck", (3, 4, 23, 3))
_register("resnet152", "bottleneck", (3, 8, 36, 3))
_register("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), groups=32, width=4)
_register("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), groups=32, width=8)
_register("resnext101_64x4d", "bottleneck", (3, 4, 23, 3), groups=64, width=4)
_register("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), width=128)
_register("wide_resnet101_2", "bottleneck", (3, 4, 23, 3), width=128)
