"""The call-convention wrappers a swap puts in place: a backbone called the way the old encoder was."""

from __future__ import annotations

from typing import List, Tuple

from torch import Tensor

from ..core import Backbone, MaskedEncoderBase, check_mask, slice_mask

__all__ = ["MaskedEncoder"]


class MaskedEncoder(MaskedEncoderBase):
    """Wrap a single-output backbone so that it also downsamples the padding mask: the call of BTTR/CoMER-style
    models, ``feature, mask = encoder(image, mask)``.

    ``forward(x [N, C, H, W], mask) -> (feature [N, C_out, h, w], mask on the [h, w] grid)`` where the
    mask is bool/long ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid) and comes
    back in the same dtype and layout, equal to ``mask[..., ::sh, ::sw]``. The mask also reaches the encoder, whose
    attention ignores the padding where it ``attends_to_mask`` (timm's ViT, DeiT, EVA, SVTRv2).
    """

    __jit_unused_properties__ = ["out_channels"]

    def __init__(self, encoder: Backbone) -> None:
        super().__init__()
        if not isinstance(encoder, Backbone):
            raise TypeError(
                "encoder must be a single-output backbones.Backbone (built without out_indices: a FeaturePyramid "
                f"has one grid per output), got {type(encoder).__name__}"
            )
        self.encoder = encoder
        stride = encoder.output_stride
        self.stride: List[int] = [stride[0], stride[1]]

    @property
    def out_channels(self) -> int:
        return self.encoder.out_channels

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        check_mask(mask, x)
        return self.encoder(x, mask), slice_mask(mask, self.stride)
