"""``with_fpn``: a feature pyramid as a torchvision detection backbone (``FasterRCNN``, ``RetinaNet``, ``MaskRCNN``).

    >>> import torch
    >>> from torchvision.models.detection import FasterRCNN
    >>> from backbones import build_backbone
    >>> from backbones.adapters import with_fpn
    >>> backbone = with_fpn(build_backbone("resnet18", out_indices=(1, 2, 3, 4)), out_channels=64)
    >>> model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=96)
    >>> sorted(backbone(torch.zeros(1, 3, 64, 96)))
    ['0', '1', '2', '3', 'pool']

torchvision's detection models take a ``backbone`` with an ``out_channels: int`` and a ``forward`` that returns an
``OrderedDict[str, Tensor]`` of maps with that many channels; their default anchors and RoI pooling expect the
keys ``"0"`` to ``"3"`` plus ``"pool"`` (four pyramid levels and torchvision's extra max-pooled one). Any
``FeaturePyramid`` qualifies, whatever its family: ResNets, DenseNets, the OCR encoders, ``timm:`` models.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional

from torch import Tensor, nn

from backbones import FeaturePyramid
from backbones.core import check_int

__all__ = ["FPNBackbone", "with_fpn"]


class FPNBackbone(nn.Module):
    """``pyramid`` under torchvision's ``FeaturePyramidNetwork``: ``[N, C, H, W] -> {"0": [N, out_channels, h0, w0],
    ..., "pool": ...}``, one map per pyramid output (then the extra block's).

    Attributes:
        body: the :class:`~backbones.FeaturePyramid`.
        fpn: torchvision's ``FeaturePyramidNetwork``.
        out_channels: channels of every map (what torchvision's detection heads read).
    """

    def __init__(
        self,
        pyramid: FeaturePyramid,
        out_channels: int = 256,
        extra_blocks: Optional[nn.Module] = None,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        if not isinstance(pyramid, FeaturePyramid):
            raise TypeError(
                f"pyramid must be a backbones.FeaturePyramid (build_backbone(name, out_indices=(1, 2, 3, 4))), got "
                f"{type(pyramid).__name__}"
            )
        self.body = pyramid
        self.fpn = FeaturePyramidNetwork(
            list(pyramid.out_channels),
            check_int(out_channels, "out_channels", 1),
            extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
            norm_layer=norm_layer,
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """The FPN's maps.

        Args:
            x: ``[N, C, H, W]``.

        Returns:
            ``{"0": [N, out_channels, h0, w0], "1": ..., "pool": ...}``, finest first.
        """
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), feature) for i, feature in enumerate(features)))


def with_fpn(
    pyramid: FeaturePyramid,
    out_channels: int = 256,
    *,
    extra_blocks: Optional[nn.Module] = None,
    norm_layer: Optional[Callable[..., nn.Module]] = None,
) -> FPNBackbone:
    """A torchvision detection backbone from ``pyramid``: torchvision's own ``FeaturePyramidNetwork`` over its
    outputs, with ``LastLevelMaxPool`` as the extra block unless ``extra_blocks`` says otherwise (torchvision's
    ``LastLevelP6P7`` for RetinaNet's recipe).

    Args:
        pyramid: ``build_backbone(name, out_indices=...)``; four outputs match torchvision's default anchors.
        out_channels: channels of every FPN map.
        extra_blocks: torchvision's ``ExtraFPNBlock`` (default ``LastLevelMaxPool``).
        norm_layer: a norm for the FPN's convs (torchvision's default: none).

    Returns:
        The backbone, ``forward(x) -> OrderedDict`` of maps, with ``out_channels``.
    """
    return FPNBackbone(pyramid, out_channels, extra_blocks, norm_layer)
