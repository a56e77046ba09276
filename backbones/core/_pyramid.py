"""``FeaturePyramid``: several stages of a backbone out, what ``build_backbone(..., out_indices=...)`` returns.

    >>> from backbones import build_backbone
    >>> pyramid = build_backbone("resnet18", out_indices=(2, 3, 4), out_channels=256)
    >>> pyramid.output_stride
    ((8, 8), (16, 16), (32, 32))

Its ``forward`` always returns a list (timm's feature nets do too), and each method answers per output with one
type: ``out_channels`` a tuple of ints, ``output_stride`` a tuple of ``(sh, sw)``, ``output_size`` a list of
``(h, w)``, ``downsample_mask`` a list of masks. ``backbones.adapters.with_fpn`` turns one into a torchvision
detection backbone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, List, Optional, Sequence, Tuple, Union, cast

from torch import Tensor, nn

from ._backbone import Backbone
from ._config import BackboneConfig
from ._contract import FeatureInfo, Pair
from ._encoder import Encoder
from ._layers import ADAPTER_KINDS, Projection
from ._validate import check_choice

__all__ = ["FeaturePyramid"]


class FeaturePyramid(Encoder):
    """Stages ``out_indices`` of ``backbone``, each through its own 1x1 adapter:
    ``[N, in_channels, H, W] -> [[N, C_i, ceil(H/sh_i), ceil(W/sw_i)], ...]``.

    Args:
        backbone: the stage backbone (built up to the deepest wanted stage; ``build_backbone`` prunes the rest).
        out_indices: stage indices to output, strictly increasing (0 = stem; negative counts from the end).
        out_channels: ``None`` (native channels), one int for every output, or one per output.
        adapter: ``"conv"``, ``"conv_bn"`` or ``"conv_bn_relu"`` (used where ``out_channels`` is set).

    Attributes:
        backbone: the :class:`Backbone` (its state dict keys sit under ``backbone.``).
        out_indices: the resolved stage indices.
        adapters: one module per output (``nn.Identity`` where the channels stay).
    """

    __jit_unused_properties__ = ["out_channels", "output_stride", "min_input_size", "max_input_size"]
    key_prefix = "backbone."

    def __init__(
        self,
        backbone: Backbone,
        out_indices: Sequence[int],
        out_channels: Union[None, int, Sequence[int]] = None,
        adapter: str = "conv_bn",
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"backbone must be a backbones.Backbone, got {type(backbone).__name__}")
        check_choice(adapter, "adapter", ADAPTER_KINDS)
        # validated as build_backbone's options are: lists become tuples, a tuple needs one entry per output
        config = BackboneConfig(out_indices=cast(Any, out_indices), out_channels=cast(Any, out_channels))
        indices = config.out_indices_for(backbone.num_stages)
        if indices[-1] >= len(backbone.feature_info):
            raise ValueError(
                f"out_indices must name built stages of the backbone (0..{len(backbone.feature_info) - 1}; it was "
                f"built up to stage {len(backbone.feature_info) - 1}), got {tuple(out_indices)!r}"
            )
        per_output = _per_output(config.out_channels, len(indices))
        self.backbone = backbone
        self.out_indices: List[int] = list(indices)
        adapters: List[nn.Module] = []
        outputs: List[FeatureInfo] = []
        for index, channels in zip(indices, per_output):
            info = backbone.feature_info[index]
            if channels is None:
                adapters.append(nn.Identity())
                outputs.append(info)
            else:
                adapters.append(Projection(info.channels, channels, adapter))
                outputs.append(replace(info, channels=channels))
        self.adapters = nn.ModuleList(adapters)
        self.output_info = tuple(outputs)
        self.in_channels = backbone.in_channels
        self.feature_info = backbone.feature_info
        self.input_limits = backbone.input_limits
        self.attends_to_mask = backbone.attends_to_mask
        self.preprocess, self.pretrained_report = backbone.preprocess, backbone.pretrained_report
        self.folded_batchnorms = 0
        self.reparameterized = 0

    def stage_backbone(self) -> Backbone:
        return self.backbone

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """Every output.

        Args:
            x: ``[N, in_channels, H, W]``.
            mask: an optional padding mask of ``x`` (as :meth:`Backbone.forward` takes it).

        Returns:
            One ``[N, C_i, ceil(H/sh_i), ceil(W/sw_i)]`` per output.
        """
        return self.outputs_from(self.backbone.stage_outputs(x, mask))

    def outputs_from(self, stages: List[Tensor]) -> List[Tensor]:
        """The outputs from the stage outputs of one input: wrappers that also hand on the stages call this instead
        of ``forward``.

        Args:
            stages: what ``backbone.stage_outputs`` returned.

        Returns:
            Each wanted stage through the dropout and its adapter, ``[N, C_i, h_i, w_i]``.
        """
        outputs: List[Tensor] = []
        for i, adapter in enumerate(self.adapters):
            outputs.append(adapter(self.backbone.dropout(stages[self.out_indices[i]])))
        return outputs

    def forward_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        return self.forward(x, mask)

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each output."""
        return tuple(info.channels for info in self.output_info)

    @property
    def output_stride(self) -> Tuple[Pair, ...]:
        """``(sh, sw)`` of each output."""
        return tuple(info.stride for info in self.output_info)

    def output_size(self, height: int, width: int) -> List[Pair]:
        """Each output's grid, without a forward pass (the same as :meth:`output_sizes`).

        Args:
            height: input H.
            width: input W.

        Returns:
            ``(ceil(H/sh_i), ceil(W/sw_i))`` per output.
        """
        return self.output_sizes(height, width)

    def downsample_mask(self, mask: Tensor) -> List[Tensor]:
        """The padding mask on each output's grid (the same as :meth:`downsample_masks`).

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).

        Returns:
            ``mask[..., ::sh_i, ::sw_i]`` per output.
        """
        return self.downsample_masks(mask)

    def extra_repr(self) -> str:
        return f"out_indices={tuple(self.out_indices)}, out_channels={self.out_channels}"


def _per_output(out_channels: Union[None, int, Sequence[int]], outputs: int) -> Tuple[Optional[int], ...]:
    """Validated ``out_channels`` as one entry per output (``None``: native channels)."""
    if out_channels is None or isinstance(out_channels, int):
        return (out_channels,) * outputs
    return tuple(out_channels)
