"""ResNet-45, the text-recognition encoder of ABINet (``resnet45_abinet``) and ASTER (``resnet45_aster``).

Both: a 3x3 conv 3 -> 32 + BN + ReLU at stride 1, then five stages of basic blocks (a 1x1 conv, then a 3x3
conv; a 1x1 conv + BN shortcut where the shape changes), blocks (3, 4, 6, 6, 3), widths 32/64/128/256/512.
They differ in where a stage's stride sits, which the parameter shapes do not show:

- ABINet (and PARSeq's copy, mmocr's ``ResNetABI``): on the 3x3 conv; stage strides (2, 1, 2, 1, 1): /4,
  32x128 -> 8x32. Stem ``conv1``, ``bn1``.
- ASTER (aster.pytorch, mmocr's ``ResNet`` in its ASTER config): on the 1x1 conv; stage strides (2,2), (2,2),
  (2,1), (2,1), (2,1): (32, 4), a 32x100 line -> 1x25. Stem ``layer0`` (conv, BN, ReLU).

Every stride sits on a conv with ``padding = (k - 1) // 2``, so the originals already give the ceil grid and a
checkpoint gives exactly the original's features. The two stems are named apart, so a checkpoint of one
refuses to load into the other (strictly: the other's stem keys are missing), with a hint naming the right one.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ...core import (
    BackboneConfig,
    FeatureInfo,
    Pair,
    SequentialBackbone,
    StagePlan,
    Stages,
    StridePlan,
    check_bool,
    stride_of,
)
from ...registry import register_backbone

__all__ = ["ResNet45ABINet", "ResNet45ASTER"]

WIDTHS = (32, 64, 128, 256, 512)
_MMOCR_ASTER_KEYS = (
    (re.compile(r"^stem_layers\.0\.conv\."), "layer0.0."),
    (re.compile(r"^stem_layers\.0\.bn\."), "layer0.1."),
    (re.compile(r"\.downsample\.conv\."), ".downsample.0."),
    (re.compile(r"\.downsample\.bn\."), ".downsample.1."),
)
BLOCKS = (3, 4, 6, 6, 3)


class _Block(nn.Module):
    """``conv1`` 1x1 -> BN -> ReLU -> ``conv2`` 3x3 -> BN, plus the shortcut, then ReLU; ``stride_on`` picks the
    conv that carries the stride (``"conv1"``: ASTER, ``"conv2"``: ABINet)."""

    def __init__(self, in_channels: int, planes: int, stride: Pair, dilation: Pair, stride_on: str) -> None:
        super().__init__()
        first, second = (stride, (1, 1)) if stride_on == "conv1" else ((1, 1), stride)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, first, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, second, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: Optional[nn.Module] = None
        if stride != (1, 1) or in_channels != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class _ResNet45(SequentialBackbone):
    """The shared build; subclasses set the stride placement, native strides and the stem's names."""

    stride_on: ClassVar[str] = "conv2"
    native_strides: ClassVar[Tuple[Pair, ...]] = ()
    stem_names: ClassVar[Tuple[str, ...]] = ()
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"))
    bare_checkpoint_keys = True
    conv_init = "fan_out"

    def __init__(self, config: BackboneConfig, *, stem_bias: bool = False) -> None:
        """``stem_bias``: the stem conv has a bias (mmocr's ``ResNetABI`` checkpoints)."""
        self.stem_bias = check_bool(stem_bias, "stem_bias")
        super().__init__(config, family_options={"stem_bias": stem_bias})

    def build(self, config: BackboneConfig) -> Stages:
        stem = self._stem(self.stem_bias)
        plan = config.plan(stride_of(*stem.values()), self.native_strides)
        return Stages(len(BLOCKS), self._build_stages(stem, plan))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan) -> Iterator[FeatureInfo]:
        yield self.add_stage("stem", stem, WIDTHS[0], plan.stem_stride)
        in_channels = WIDTHS[0]
        for index, (stage, width, blocks) in enumerate(zip(plan.stages, WIDTHS, BLOCKS), start=1):
            layer = self._layer(in_channels, width, blocks, stage)
            yield self.add_stage(f"layer{index}", {f"layer{index}": layer}, width, stage.output_stride, stage.dilation)
            in_channels = width

    def _stem(self, bias: bool) -> Dict[str, nn.Module]:
        raise NotImplementedError

    def _layer(self, in_channels: int, planes: int, blocks: int, plan: StagePlan) -> nn.Sequential:
        first = _Block(in_channels, planes, plan.stride, plan.first_dilation, self.stride_on)
        rest = [_Block(planes, planes, (1, 1), plan.dilation, self.stride_on) for _ in range(1, blocks)]
        return nn.Sequential(first, *rest)

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        own = f"features.{self.stem_names[0]}."
        if any(k.startswith(own) for k in missing) and unexpected:
            other = "resnet45_aster" if self.stride_on == "conv2" else "resnet45_abinet"
            return (
                f"the checkpoint's stem is not {type(self).__name__}'s ({self.stem_names[0]}); it may be {other}'s "
                f"layout, which puts the stride on the {'1x1' if other.endswith('aster') else '3x3'} conv: build "
                f"{other} (the shapes fit both, the features do not)"
            )
        return ""


@register_backbone("resnet45_abinet", family="ocr")
class ResNet45ABINet(_ResNet45):
    """ResNet-45 of ABINet / PARSeq: stride on the 3x3 conv, (4, 4): 32x128 -> 8x32 (512 channels).

    Loads ABINet's files (``vision.backbone.resnet.*`` in ``{"model": ...}``), PARSeq's and mmocr's ``ResNetABI``
    (``backbone.*``; build with ``stem_bias=True``, its stem conv has a bias).
    """

    stride_on = "conv2"
    native_strides = ((2, 2), (1, 1), (2, 2), (1, 1), (1, 1))
    stem_names = ("conv1", "bn1", "relu")
    first_conv = "features.conv1"

    def _stem(self, bias: bool) -> Dict[str, nn.Module]:
        return OrderedDict(
            conv1=nn.Conv2d(self.in_channels, WIDTHS[0], 3, 1, 1, bias=bias),
            bn1=nn.BatchNorm2d(WIDTHS[0]),
            relu=nn.ReLU(inplace=True),
        )


@register_backbone("resnet45_aster", family="ocr")
class ResNet45ASTER(_ResNet45):
    """ResNet-45 of ASTER: stride on the 1x1 conv, (32, 4): a 32x100 line -> 1x25 (512 channels)."""

    stride_on = "conv1"
    native_strides = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))
    stem_names = ("layer0",)
    first_conv = "features.layer0.0"

    def _stem(self, bias: bool) -> Dict[str, nn.Module]:
        conv = nn.Conv2d(self.in_channels, WIDTHS[0], 3, 1, 1, bias=bias)
        return OrderedDict(layer0=nn.Sequential(conv, nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(inplace=True)))

    def checkpoint_key(self, key: str) -> Optional[str]:
        """aster.pytorch's ``encoder.layer0..5`` (its BiLSTM ``rnn.*`` is not part of the encoder: skipped), and
        mmocr's ``ResNet`` of its ASTER config (``stem_layers.0.conv``/``.bn``, ``downsample.conv``/``.bn``)."""
        if key.startswith("rnn."):
            return None
        for old, new in _MMOCR_ASTER_KEYS:
            key = old.sub(new, key)
        return super().checkpoint_key(key)
