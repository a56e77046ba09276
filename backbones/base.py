"""``Backbone``: the module every registered family subclasses, carrying the whole contract.

A family builds its stem and stages (with the module names of the torchvision/timm checkpoints it
mirrors), implements :meth:`Backbone.forward_stages`, and calls :meth:`Backbone.finish` with one
:class:`~backbones.contract.FeatureInfo` per built stage. The base class adds the adapters, the
output selection (``out_indices``), freezing, ``norm_eval``, input checks and the shape arithmetic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple, Union

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from adapters.projection import ADAPTER_KINDS, Projection

from . import contract
from .contract import FeatureInfo, Pair, PairLike
from .strides import StridePlan, plan_strides

__all__ = ["Backbone", "BackboneConfig", "SequentialBackbone"]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class BackboneConfig:
    """The family-independent options of :func:`backbones.build_backbone`, validated on creation."""

    in_channels: int = 3
    out_channels: Union[None, int, Tuple[int, ...]] = None
    output_stride: Optional[PairLike] = None
    strides: Optional[Tuple[PairLike, ...]] = None
    dilate: bool = False
    out_indices: Optional[Tuple[int, ...]] = None
    frozen_stages: int = -1
    norm_eval: bool = False
    adapter: str = "conv_bn"
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        _check_int(self.in_channels, "in_channels", 1)
        if self.out_channels is not None:
            values = self.out_channels if isinstance(self.out_channels, tuple) else (self.out_channels,)
            for value in values:
                _check_int(value, "out_channels", 1)
        if self.output_stride is not None:
            contract.as_pair(self.output_stride, "output_stride")
        if not isinstance(self.dilate, bool):
            raise TypeError(f"dilate must be a bool, got {self.dilate!r}")
        if not isinstance(self.norm_eval, bool):
            raise TypeError(f"norm_eval must be a bool, got {self.norm_eval!r}")
        _check_int(self.frozen_stages, "frozen_stages", -1)
        if self.adapter not in ADAPTER_KINDS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTER_KINDS)}, got {self.adapter!r}")
        if (
            isinstance(self.drop_rate, bool)
            or not isinstance(self.drop_rate, (int, float))
            or not (0.0 <= self.drop_rate < 1.0)
        ):
            raise ValueError(f"drop_rate must be a float in [0, 1), got {self.drop_rate!r}")
        if self.out_indices is not None:
            if not self.out_indices:
                raise ValueError("out_indices must name at least one stage, got ()")
            for index in self.out_indices:
                if isinstance(index, bool) or not isinstance(index, int):
                    raise TypeError(f"out_indices must be ints (stage indices), got {self.out_indices!r}")
            if isinstance(self.out_channels, tuple) and len(self.out_channels) != len(self.out_indices):
                raise ValueError(
                    f"out_channels must be an int or one int per output ({len(self.out_indices)} for "
                    f"out_indices={self.out_indices}), got {self.out_channels!r}"
                )
        elif isinstance(self.out_channels, tuple):
            raise ValueError(f"out_channels must be an int unless out_indices is given, got {self.out_channels!r}")

    def plan(self, stem_stride: PairLike, native_strides: Sequence[PairLike]) -> StridePlan:
        """Plan strides and dilation for a family with these native strides."""
        return plan_strides(
            stem_stride, native_strides, output_stride=self.output_stride, strides=self.strides, dilate=self.dilate
        )

    def resolved_out_indices(self, num_stages: int) -> Tuple[int, ...]:
        """Stage indices to output (0 = stem, ``num_stages`` = last), validated and made non-negative."""
        if self.frozen_stages > num_stages:
            raise ValueError(
                f"frozen_stages must be in -1..{num_stages} (-1 = none, 0 = stem, i = stem and stages "
                f"1..i), got {self.frozen_stages}"
            )
        if self.out_indices is None:
            return (num_stages,)
        resolved = []
        for index in self.out_indices:
            if not -(num_stages + 1) <= index <= num_stages:
                raise ValueError(
                    f"out_indices must hold stage indices in 0..{num_stages} (0 = stem; negative counts "
                    f"from the end), got {self.out_indices!r}"
                )
            resolved.append(index % (num_stages + 1))
        if any(b <= a for a, b in zip(resolved, resolved[1:])):
            raise ValueError(f"out_indices must be strictly increasing stages, got {self.out_indices!r}")
        return tuple(resolved)

    def last_stage(self, num_stages: int) -> int:
        """The deepest stage that must be built."""
        return self.resolved_out_indices(num_stages)[-1]


class Backbone(nn.Module):
    """A feature extractor ``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``.

    With ``out_indices`` the forward returns a list (one tensor per selected stage), and
    ``out_channels``, ``output_stride``, ``output_size`` and ``downsample_mask`` answer per output.

    Attributes:
        in_channels: channels the input must have.
        min_input_size: smallest H and W for which the contract holds.
        feature_info: one :class:`FeatureInfo` per built stage (index 0 = stem), native channels.
        output_info: one :class:`FeatureInfo` per output, with the channels after the adapter.
    """

    __jit_unused_properties__ = ["out_channels", "output_stride", "multi_output"]

    def __init__(self, config: BackboneConfig, *, min_input_size: int = 1) -> None:
        super().__init__()
        self.config = config
        self.in_channels: int = config.in_channels
        self.min_input_size: int = min_input_size
        self.norm_eval: bool = config.norm_eval
        self.frozen_stages: int = config.frozen_stages

    # -- for families -------------------------------------------------------------------------------
    def forward_stages(self, x: Tensor) -> List[Tensor]:
        """Outputs of stage 0 (stem) through the last built stage, ``[N, C_i, H_i, W_i]`` each."""
        raise NotImplementedError

    def finish(self, stages: Sequence[FeatureInfo], *, num_stages: int, output_dropout: float = 0.0) -> None:
        """Attach adapters and freezing once the stages are built.

        Args:
            stages: one record per built stage, ``stages[i].index == i`` (0 = stem).
            num_stages: stages after the stem in the full family (some may be pruned).
            output_dropout: dropout applied to each output before its adapter.
        """
        self.num_stages: int = num_stages
        self.feature_info: Tuple[FeatureInfo, ...] = tuple(stages)
        indices = self.config.resolved_out_indices(num_stages)
        if indices[-1] >= len(stages):
            raise RuntimeError(f"family built stages 0..{len(stages) - 1} but stage {indices[-1]} is wanted")
        self.out_indices: List[int] = list(indices)
        self._multi_output: bool = self.config.out_indices is not None
        wanted = self.config.out_channels
        per_output = wanted if isinstance(wanted, tuple) else (wanted,) * len(indices)
        adapters, outputs = [], []
        for index, channels in zip(indices, per_output):
            info = stages[index]
            if channels is None:
                adapters.append(nn.Identity())
                outputs.append(info)
            else:
                adapters.append(Projection(info.channels, channels, self.config.adapter))
                outputs.append(replace(info, channels=channels))
        self.adapters = nn.ModuleList(adapters)
        self.output_info: Tuple[FeatureInfo, ...] = tuple(outputs)
        self.dropout = nn.Dropout(output_dropout) if output_dropout > 0 else nn.Identity()
        for info in self.feature_info[: self.frozen_stages + 1]:
            for name in info.modules:
                for parameter in self.get_submodule(name).parameters():
                    parameter.requires_grad_(False)
        self.train(self.training)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """This model's name for a checkpoint key of the family's foreign layouts; ``None`` drops it (heads)."""
        return key

    # -- the contract -----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Union[Tensor, List[Tensor]]:
        """``[N, in_channels, H, W]`` -> ``[N, out_channels, ceil(H/sh), ceil(W/sw)]`` (a list with out_indices)."""
        self._check_input(x)
        stages = self.forward_stages(x)
        outputs: List[Tensor] = []
        for i, adapter in enumerate(self.adapters):
            outputs.append(adapter(self.dropout(stages[self.out_indices[i]])))
        if self._multi_output:
            return outputs
        return outputs[0]

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"input must be a 4-D tensor [N, {self.in_channels}, H, W], got shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have {self.in_channels} channels ([N, {self.in_channels}, H, W]), got shape "
                f"{list(x.shape)}; build the backbone with in_channels={x.shape[1]} for such input"
            )
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"input H and W must be >= min_input_size={self.min_input_size}, got shape {list(x.shape)}"
            )

    @property
    def multi_output(self) -> bool:
        return self._multi_output

    @property
    def out_channels(self) -> Union[int, Tuple[int, ...]]:
        """Channels of the output (a tuple, one per output, when ``out_indices`` is given)."""
        channels = tuple(info.channels for info in self.output_info)
        return channels if self._multi_output else channels[0]

    @property
    def output_stride(self) -> Union[Pair, Tuple[Pair, ...]]:
        """``(sh, sw)`` of the output (a tuple of them when ``out_indices`` is given)."""
        strides = tuple(info.stride for info in self.output_info)
        return strides if self._multi_output else strides[0]

    def output_size(self, height: int, width: int) -> Union[Pair, List[Pair]]:
        """``(ceil(H/sh), ceil(W/sw))`` without a forward pass (a list with ``out_indices``)."""
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < self.min_input_size:
                raise ValueError(f"{name} must be an int >= min_input_size={self.min_input_size}, got {value!r}")
        sizes = [contract.output_size(height, width, info.stride) for info in self.output_info]
        return sizes if self._multi_output else sizes[0]

    def downsample_mask(self, mask: Tensor) -> Union[Tensor, List[Tensor]]:
        """Padding mask on the output grid, identical to ``mask[..., ::sh, ::sw]``.

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).
        """
        masks = [contract.downsample_mask(mask, info.stride) for info in self.output_info]
        return masks if self._multi_output else masks[0]

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if not hasattr(self, "feature_info"):
            return self
        for info in self.feature_info[: self.frozen_stages + 1]:
            for name in info.modules:
                self.get_submodule(name).eval()
        if mode and self.norm_eval:
            for stage in self.feature_info:
                for name in stage.modules:
                    for module in self.get_submodule(name).modules():
                        if isinstance(module, _BatchNorm):
                            module.eval()
        return self

    def extra_repr(self) -> str:
        if not hasattr(self, "output_info"):
            return ""
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, output_stride={self.output_stride}"


class SequentialBackbone(Backbone):
    """A backbone whose body is one chain ``self.features`` (a ModuleDict run in order).

    ``stage_ends`` names the module after which each stage's output is taken (stem first). DenseNets
    use it with torchvision's names; it is also the shortest way to register a family of your own.
    """

    def set_features(self, features: OrderedDict[str, nn.Module], stage_ends: Sequence[str]) -> None:
        self.features = nn.ModuleDict(features)
        self.stage_ends: List[str] = list(stage_ends)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        outputs: List[Tensor] = []
        for name, module in self.features.items():
            x = module(x)
            if name in self.stage_ends:
                outputs.append(x)
        return outputs
