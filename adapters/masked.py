"""``MaskedEncoder``: ``feature, mask = encoder(image, mask)``, the call of BTTR/CoMER-style models."""

from __future__ import annotations

from typing import List, Tuple

from torch import Tensor, nn

__all__ = ["MaskedEncoder"]


class MaskedEncoder(nn.Module):
    """Wrap a single-output backbone so that it also downsamples the padding mask.

    ``forward(x [N, C, H, W], mask) -> (feature [N, C_out, h, w], mask on the [h, w] grid)`` where the
    mask is bool/long ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid) and comes
    back in the same dtype and layout, equal to ``mask[..., ::sh, ::sw]``.
    """

    __jit_unused_properties__ = ["out_channels"]

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        stride = getattr(encoder, "output_stride", None)
        if getattr(encoder, "multi_output", False) or not (
            isinstance(stride, tuple) and len(stride) == 2 and all(isinstance(s, int) for s in stride)
        ):
            raise TypeError(
                "encoder must be a single-output backbone with output_stride (sh, sw) (built without "
                f"out_indices), got {type(encoder).__name__} with output_stride={stride!r}"
            )
        self.encoder = encoder
        self.stride: List[int] = [stride[0], stride[1]]

    @property
    def out_channels(self) -> int:
        return self.encoder.out_channels

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        if mask.dim() == 4 and mask.shape[1] != 1 or mask.dim() not in (3, 4):
            raise ValueError(f"mask must be [N, H, W] or [N, 1, H, W], got shape {list(mask.shape)}")
        if x.dim() != 4 or mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"mask must match the image's batch and size, got mask shape {list(mask.shape)} for "
                f"image shape {list(x.shape)}"
            )
        feature = self.encoder(x)
        if not isinstance(feature, Tensor):  # narrows the encoder's Union return for TorchScript
            raise TypeError("encoder must return a single tensor")
        sh, sw = self.stride[0], self.stride[1]
        if mask.dim() == 3:
            return feature, mask[:, ::sh, ::sw]
        return feature, mask[:, :, ::sh, ::sw]
