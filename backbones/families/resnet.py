"""ResNet, ResNeXt and Wide ResNet feature extractors with torchvision's module names.

The blocks are timm's (they take tuple strides and dilations, which torchvision's BasicBlock does not);
the parameter names equal torchvision's, so a torchvision state dict (without ``fc.*``) loads with
``strict=True`` and gives the same features at the native stride.

Stages: 0 = stem (``conv1, bn1, relu, maxpool``, stride 4; stride 1 with ``stem="cifar"``), then
``layer1..layer4`` with native strides ``(1, 2, 2, 2)``: 512 (BasicBlock) or 2048 channels at /32.
Stages after the deepest wanted output are empty ``nn.Sequential`` modules (no parameters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Sequence

from torch import Tensor, nn

from ..core import (
    Backbone,
    BackboneConfig,
    FeatureInfo,
    StagePlan,
    Stages,
    StridePlan,
    check_bool,
    check_choice,
    stride_of,
    timm_classes,
)
from ..registry import register_backbone
from ..weights import TimmWeights, TorchvisionWeights

__all__ = ["ResNet"]

STEMS = ("imagenet", "cifar")
NATIVE_STRIDES = ((1, 1), (2, 2), (2, 2), (2, 2))


class ResNet(Backbone):
    """ResNet body ``[N, in_channels, H, W] -> [N, 512 * expansion, ceil(H/32), ceil(W/32)]`` (native).

    Args:
        config: the common options.
        block: ``"basic"`` or ``"bottleneck"`` (timm's ``BasicBlock`` / ``Bottleneck``).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        groups: cardinality of the 3x3 convs (ResNeXt).
        width_per_group: channels per group (64 for ResNet, 128 for Wide ResNet).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv, no pool).
        zero_init_residual: zero the last BatchNorm of each block (torchvision's option).
    """

    first_conv = "conv1"
    classifier_keys = ("fc.",)
    conv_init = "fan_out"
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
    if TYPE_CHECKING:  # set in build (by name); not at run time: TorchScript would read the annotations
        layer1: nn.Sequential
        layer2: nn.Sequential
        layer3: nn.Sequential
        layer4: nn.Sequential

    def __init__(
        self,
        config: BackboneConfig,
        *,
        block: str,
        layers: Sequence[int],
        groups: int = 1,
        width_per_group: int = 64,
        stem: str = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        self.block_kind = check_choice(block, "block", ("basic", "bottleneck"))
        self.blocks_per_stage = tuple(layers)
        self.groups, self.width_per_group = groups, width_per_group
        self.stem_kind = check_choice(stem, "stem", STEMS)
        self.zero_init_residual = check_bool(zero_init_residual, "zero_init_residual")
        options = dict(block=block, layers=tuple(layers), groups=groups, width_per_group=width_per_group, stem=stem,
                       zero_init_residual=zero_init_residual)  # fmt: skip
        super().__init__(config, family_options=options)

    def build(self, config: BackboneConfig) -> Stages:
        imagenet = self.stem_kind == "imagenet"
        kernel, stride, padding = (7, 2, 3) if imagenet else (3, 1, 1)
        self.conv1 = nn.Conv2d(self.in_channels, 64, kernel, stride, padding, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        for index in range(1, len(NATIVE_STRIDES) + 1):  # filled as the stages are built; unbuilt ones stay empty
            setattr(self, f"layer{index}", nn.Sequential())
        plan = config.plan(stride_of(self.conv1, self.maxpool), NATIVE_STRIDES)
        return Stages(len(NATIVE_STRIDES), self._build_stages(plan))

    def _build_stages(self, plan: StridePlan) -> Iterator[FeatureInfo]:
        timm = timm_classes()  # imported at build time: timm costs ~0.3 s
        block_class: Any = timm.BasicBlock if self.block_kind == "basic" else timm.Bottleneck
        yield FeatureInfo("stem", 0, 64, plan.stem_stride, modules=("conv1", "bn1"))
        in_channels = 64
        options = dict(cardinality=self.groups, base_width=self.width_per_group)
        for index, (stage_plan, num_blocks) in enumerate(zip(plan.stages, self.blocks_per_stage), start=1):
            name, planes = f"layer{index}", 64 * 2 ** (index - 1)
            setattr(self, name, _make_layer(block_class, in_channels, planes, num_blocks, stage_plan, options))
            in_channels = planes * block_class.expansion
            yield FeatureInfo(name, index, in_channels, stage_plan.output_stride, stage_plan.dilation, (name,))

    def init_weights(self) -> None:
        super().init_weights()
        if self.zero_init_residual:  # torchvision's option: each block starts as the identity
            timm = timm_classes()
            for module in self.modules():
                if isinstance(module, (timm.BasicBlock, timm.Bottleneck)):
                    last_norm = module.get_submodule("bn2" if isinstance(module, timm.BasicBlock) else "bn3")
                    if isinstance(last_norm, nn.BatchNorm2d):
                        nn.init.zeros_(last_norm.weight)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        stem = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out1 = self.layer1(stem)
        out2 = self.layer2(out1)
        out3 = self.layer3(out2)
        return [stem, out1, out2, out3, self.layer4(out3)]


def _make_layer(
    block: Any, in_channels: int, planes: int, num_blocks: int, plan: StagePlan, options: Dict[str, Any]
) -> nn.Sequential:
    """One stage of timm's ``block`` class (``BasicBlock`` or ``Bottleneck``) as the plan says."""
    out_channels = planes * block.expansion
    downsample = None
    if plan.stride != (1, 1) or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=plan.stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )
    first = block(
        in_channels, planes, plan.stride, downsample, first_dilation=plan.first_dilation, dilation=plan.dilation,
        **options,
    )  # fmt: skip
    rest = [block(out_channels, planes, dilation=plan.dilation, **options) for _ in range(1, num_blocks)]
    return nn.Sequential(first, *rest)


def _register(name: str, block: str, layers: Sequence[int], groups: int = 1, width: int = 64) -> None:
    kind = "ResNeXt" if groups > 1 else ("Wide ResNet" if width > 64 else "ResNet")
    block_name = "BasicBlock" if block == "basic" else "Bottleneck"
    description = f"{kind}, {block_name}, blocks {list(layers)}" + (
        f", {groups} groups x {width}" if groups > 1 else ""
    )

    def builder(config: BackboneConfig, *, stem: str = "imagenet", zero_init_residual: bool = False) -> Backbone:
        return ResNet(
            config, block=block, layers=layers, groups=groups, width_per_group=width, stem=stem,
            zero_init_residual=zero_init_residual,
        )  # fmt: skip

    builder.__name__ = builder.__qualname__ = name
    weights = (TorchvisionWeights(name), TimmWeights(name))
    register_backbone(name, family="resnet", description=description, weights=weights)(builder)


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
