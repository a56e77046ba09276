"""``densenet_hmer``: the DenseNet-B encoder of the WAP/DWAP family (BTTR, CoMER, CAN, ABM, SAN, ...).

Stem: 7x7/2 conv (1 channel in by default) -> [BatchNorm] -> ReLU -> 2x2 max pool (ceil). Then dense
blocks of bottleneck layers (1x1 conv to 4*growth -> BN -> ReLU -> 3x3 conv to growth -> BN -> ReLU,
concatenated), separated by transitions (1x1 conv to floor(c * reduction) -> BN -> ReLU -> 2x2 average
pool, ceil). Dropout ``drop_rate`` (0.2 in the original) follows each ReLU. Defaults give
48 -> 432 -> 216 -> 600 -> 300 -> 684 channels at /16 and 2,979,288 parameters.

Module names follow the HMER checkpoints under ``features.``: ``conv1``, ``norm1``, ``dense1.0.conv1``,
``trans1.conv1``, ``post_norm``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core import (
    BackboneConfig,
    CeilPool2d,
    FeatureInfo,
    Pair,
    SequentialBackbone,
    Stages,
    StridePlan,
    ceil_pool,
    check_bool,
    check_float,
    check_int,
    check_ints,
    stride_of,
)
from ..registry import register_backbone
from ._dense import dense_stages

__all__ = ["DenseNetHMER"]


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


class _DenseLayer(nn.Module):
    """``[N, C, H, W]`` pieces -> ``[N, growth, H, W]``: bottleneck (1x1 then 3x3) or single 3x3 layer.

    Takes the list of the block's earlier outputs and concatenates them itself, so that with
    ``memory_efficient`` the concatenation and the first conv are recomputed in the backward pass
    instead of stored (torchvision's scheme).
    """

    def __init__(
        self, in_channels: int, growth_rate: int, bottleneck: bool, drop_rate: float, memory_efficient: bool = False
    ) -> None:
        super().__init__()
        if bottleneck:
            inter_channels = 4 * growth_rate
            self.conv1 = nn.Conv2d(in_channels, inter_channels, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(inter_channels)
            self.conv2: nn.Module = nn.Conv2d(inter_channels, growth_rate, kernel_size=3, padding=1, bias=False)
            self.bn2: nn.Module = nn.BatchNorm2d(growth_rate)
        else:
            self.conv1 = nn.Conv2d(in_channels, growth_rate, kernel_size=3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(growth_rate)
            self.conv2 = nn.Identity()
            self.bn2 = nn.Identity()
        self.bottleneck = bottleneck
        self.memory_efficient = memory_efficient
        self.relu = nn.ReLU(inplace=True)
        self.dropout = _dropout(drop_rate)

    def first(self, features: List[Tensor]) -> Tensor:
        return self.dropout(self.relu(self.bn1(self.conv1(torch.cat(features, 1)))))

    @torch.jit.unused
    def first_checkpointed(self, features: List[Tensor]) -> Tensor:
        return checkpoint(lambda *pieces: self.first(list(pieces)), *features, use_reentrant=False)

    def forward(self, features: List[Tensor]) -> Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            if torch.jit.is_scripting():
                raise RuntimeError("memory_efficient=True is not supported by TorchScript; build without it")
            out = self.first_checkpointed(features)
        else:
            out = self.first(features)
        if self.bottleneck:
            out = self.dropout(self.relu(self.bn2(self.conv2(out))))
        return out


class _DenseBlock(nn.Sequential):
    """``[N, C, H, W] -> [N, C + layers * growth, H, W]``; module names ``dense1.0.conv1`` as in HMER code."""

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """``[N, C, H, W] -> [N, floor(C * reduction), ceil(H/sh), ceil(W/sw)]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: Pair, drop_rate: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = _dropout(drop_rate)
        self.pool = ceil_pool(stride, "avg")


@register_backbone("densenet_hmer", family="densenet_hmer")
class DenseNetHMER(SequentialBackbone):
    """DenseNet-B formula encoder of WAP/BTTR/CoMER/CAN: 684 channels at /16 from 1 channel.

    ``[N, 1, H, W] -> [N, 684, ceil(H/16), ceil(W/16)]`` with the defaults.

    Args:
        config: the common options (``drop_rate`` is dropout after each ReLU, 0.2 in the original).
        growth_rate: channels each dense layer adds (the stem has ``2 * growth_rate``).
        block_layers: dense layers per block; one stage per block.
        reduction: channel reduction of the transitions.
        bottleneck: bottleneck layers (DenseNet-B); ``False`` uses single 3x3 layers.
        stem_norm: BatchNorm after the stem conv (BTTR at its latest commit, CoMER, ICAL, TAMER, PosFormer; CAN and
            BTTR's first release have none).
        post_norm: BatchNorm on the output (the same projects).
        memory_efficient: gradient checkpointing of each dense layer's concatenation and first conv (less
            training memory, a slower backward; the same numbers).
    """

    default_in_channels = 1
    first_conv = "features.conv1"
    bare_checkpoint_keys = True
    conv_init = "fan_out"
    dropout_on_output = False
    fusable_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(
        self,
        config: BackboneConfig,
        *,
        growth_rate: int = 24,
        block_layers: Sequence[int] = (16, 16, 16),
        reduction: float = 0.5,
        bottleneck: bool = True,
        stem_norm: bool = False,
        post_norm: bool = False,
        memory_efficient: bool = False,
    ) -> None:
        self.growth_rate = check_int(growth_rate, "growth_rate", 1)
        self.block_layers = check_ints(block_layers, "block_layers")
        self.reduction = check_float(reduction, "reduction", 0.0, 1.0, low_open=True)
        self.bottleneck, self.stem_norm = check_bool(bottleneck, "bottleneck"), check_bool(stem_norm, "stem_norm")
        self.post_norm = check_bool(post_norm, "post_norm")
        self.memory_efficient = check_bool(memory_efficient, "memory_efficient")
        options = dict(growth_rate=growth_rate, block_layers=self.block_layers, reduction=reduction,
                       bottleneck=bottleneck, stem_norm=stem_norm, post_norm=post_norm,
                       memory_efficient=memory_efficient)  # fmt: skip
        super().__init__(config, family_options=options)

    def build(self, config: BackboneConfig) -> Stages:
        stem: Dict[str, nn.Module] = OrderedDict()
        stem["conv1"] = nn.Conv2d(
            self.in_channels, 2 * self.growth_rate, kernel_size=7, stride=2, padding=3, bias=False
        )
        if self.stem_norm:
            stem["norm1"] = nn.BatchNorm2d(2 * self.growth_rate)
        stem["relu1"] = nn.ReLU(inplace=True)
        stem["pool1"] = CeilPool2d((2, 2), "max")
        plan = config.plan(stride_of(*stem.values()), [(1, 1)] + [(2, 2)] * (len(self.block_layers) - 1))
        return Stages(len(self.block_layers), self._build_stages(stem, plan, config.drop_rate))

    def _build_stages(self, stem: Dict[str, nn.Module], plan: StridePlan, drop_rate: float) -> Iterator[FeatureInfo]:
        growth_rate = self.growth_rate

        def transition(channels: int, stride: Pair) -> Tuple[nn.Module, int]:
            out_channels = int(math.floor(channels * self.reduction))
            return _Transition(channels, out_channels, stride, drop_rate), out_channels

        def block(num_layers: int, channels: int) -> Tuple[nn.Module, int]:
            layers = []
            for _ in range(num_layers):
                layers.append(_DenseLayer(channels, growth_rate, self.bottleneck, drop_rate, self.memory_efficient))
                channels += growth_rate
            return _DenseBlock(*layers), channels

        yield self.add_stage("stem", stem, 2 * growth_rate, plan.stem_stride)
        for spec in dense_stages(
            plan, self.block_layers, 2 * growth_rate, names=("dense", "trans"), transition=transition, block=block,
            tail=lambda channels: {"post_norm": nn.BatchNorm2d(channels)} if self.post_norm else {},
        ):  # fmt: skip
            yield self.add_stage(*spec)

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        for norm, option in (("features.norm1.", "stem_norm"), ("features.post_norm.", "post_norm")):
            if any(k.startswith(norm) for k in unexpected):
                return f"the checkpoint has {norm[9:-1]}: build with {option}=True (BTTR's latest, CoMER-style)"
            if any(k.startswith(norm) for k in missing):
                return f"the checkpoint has no {norm[9:-1]}: build with {option}=False (CAN, BTTR's first release)"
        return ""
