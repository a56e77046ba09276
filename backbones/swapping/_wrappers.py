"""The call-convention wrappers a swap puts in place: a backbone called the way the old encoder was, returning what
it returned. One per convention: ``(x, mask) -> (map, mask)``, tokens, a width sequence, a Hugging Face
``ModelOutput`` (around one of the others)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from einops import rearrange
from torch import Tensor, nn

from ..core import Backbone, MaskedEncoderBase, check_mask, slice_mask

__all__ = ["MaskedEncoder", "ModelOutputEncoder", "SequenceEncoder", "TokenEncoder"]


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
        """Channels of the feature (the encoder's)."""
        return self.encoder.out_channels

    def forward(self, x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """The feature and its mask.

        Args:
            x: ``[N, C, H, W]``.
            mask: bool/long ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).

        Returns:
            ``(feature [N, C_out, h, w], mask[..., ::sh, ::sw])``, the mask in its own dtype and layout.

        Raises:
            TypeError, ValueError: ``mask`` is not one of those layouts or does not match ``x``.
        """
        check_mask(mask, x)
        return self.encoder(x, mask), slice_mask(mask, self.stride)


class TokenEncoder(nn.Module):
    """A backbone whose map is handed on as tokens, ``b c h w -> b (h w) c`` (row-major, as ViTs and MASTER flatten
    theirs): ``[N, C_in, H, W] -> [N, prefix + h*w, C]``.

    Args:
        encoder: the backbone.
        prefix: tokens before the grid where the old encoder had them (a class token): a CNN has none, so each is
            the mean of the grid's tokens.
    """

    def __init__(self, encoder: Backbone, prefix: int = 0) -> None:
        super().__init__()
        self.encoder, self.prefix = encoder, prefix

    def arrange(self, feature: Tensor) -> Tensor:
        """``[N, C, h, w] -> [N, prefix + h*w, C]``."""
        tokens = rearrange(feature, "b c h w -> b (h w) c")
        if self.prefix == 0:
            return tokens
        return torch.cat([tokens.mean(dim=1, keepdim=True).expand(-1, self.prefix, -1), tokens], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.arrange(self.encoder(x))

    def extra_repr(self) -> str:
        return f"b c h w -> b (h w) c, {self.prefix} mean tokens first" if self.prefix else "b c h w -> b (h w) c"


class SequenceEncoder(nn.Module):
    """A backbone whose one-row map is handed on as a sequence along the width, ``b c 1 w -> b w c``:
    ``[N, C_in, H, W] -> [N, w, C]``.

    Args:
        encoder: the backbone.
        pool_rows: average the rows where there are several (the old encoder pooled its height away); otherwise a
            map with more than one row is refused with the size that gave it.
    """

    def __init__(self, encoder: Backbone, pool_rows: bool = False) -> None:
        super().__init__()
        self.encoder, self.pool_rows = encoder, pool_rows

    def arrange(self, feature: Tensor) -> Tensor:
        """``[N, C, h, w] -> [N, w, C]`` (rows averaged first where ``pool_rows``)."""
        if self.pool_rows:
            feature = feature.mean(dim=2, keepdim=True)
        elif feature.shape[2] != 1:
            raise ValueError(
                f"the map has {feature.shape[2]} rows, a sequence needs one: the old encoder took one input height "
                f"only (input H must give one row at the encoder's height stride)"
            )
        return rearrange(feature, "b c 1 w -> b w c")

    def forward(self, x: Tensor) -> Tensor:
        return self.arrange(self.encoder(x))

    def extra_repr(self) -> str:
        return "rows averaged, b c 1 w -> b w c" if self.pool_rows else "b c 1 w -> b w c"


Arranged = Union[TokenEncoder, SequenceEncoder]


class ModelOutputEncoder(nn.Module):
    """A Hugging Face vision encoder's stand-in: called as the old one was (``module(pixel_values)`` or
    ``module(pixel_values=..., output_attentions=..., output_hidden_states=..., return_dict=...)``), it returns the old
    ``ModelOutput`` class with ``last_hidden_state`` (the inner wrapper's output), ``pooler_output`` (the mean token)
    where the class has one, ``hidden_states`` where asked (each stage's map as tokens) and ``attentions`` ``None``.
    It carries what models read from their encoder: ``config`` (the old one; its ``hidden_size`` holds),
    ``main_input_name``, ``dtype``, ``device``, ``get_input_embeddings()`` (the backbone's input conv).

    Args:
        inner: the backbone in the old output's layout (:class:`TokenEncoder`, :class:`SequenceEncoder`) or as a map.
        output_class: the old ``ModelOutput`` class; fields: its field names.
        config: the old encoder's config; main_input_name: its ``main_input_name``.
    """

    def __init__(
        self, inner: Union[Backbone, Arranged], output_class: type, fields: Sequence[str], config: Any,
        main_input_name: str = "pixel_values",
    ) -> None:  # fmt: skip
        super().__init__()
        self.inner = inner
        self.output_class, self.fields = output_class, tuple(fields)
        self.config, self.main_input_name = config, main_input_name

    @property
    def backbone(self) -> Backbone:
        return self.inner if isinstance(self.inner, Backbone) else self.inner.encoder

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.weights_dtype.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.weights_dtype.device

    def get_input_embeddings(self) -> nn.Module:
        """The module that first sees the pixels (the backbone's input conv), as a ViT's patch embedding is."""
        return self.backbone.get_submodule(self.backbone.input_conv())

    def get_output_embeddings(self) -> None:
        return None

    def _option(self, value: Optional[bool], name: str, default: bool) -> bool:
        return bool(getattr(self.config, name, default)) if value is None else bool(value)

    def forward(
        self,
        pixel_values: Optional[Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Any:
        """``pixel_values [N, C, H, W]`` -> the old output class (or its tuple with ``return_dict=False``); other
        keyword arguments (``interpolate_pos_encoding``, ...) are accepted and have no effect."""
        if pixel_values is None:
            pixel_values = kwargs.pop(self.main_input_name, None)
        if pixel_values is None:
            raise ValueError(f"pass the images as {self.main_input_name}= (a [N, C, H, W] tensor)")
        backbone = self.backbone
        stages = backbone.stage_outputs(pixel_values)
        feature = backbone.output_from(stages)
        last = feature if isinstance(self.inner, Backbone) else self.inner.arrange(feature)
        values: Dict[str, Any] = {"last_hidden_state": last, "attentions": None, "hidden_states": None}
        if "pooler_output" in self.fields:
            values["pooler_output"] = last.mean(dim=1) if last.dim() == 3 else last.mean(dim=(2, 3))
        if self._option(output_hidden_states, "output_hidden_states", False):
            values["hidden_states"] = tuple(rearrange(stage, "b c h w -> b (h w) c") for stage in stages)
        output = self.output_class(**{name: value for name, value in values.items() if name in self.fields})
        if not self._option(return_dict, "return_dict", True):
            return output.to_tuple()
        return output

    def extra_repr(self) -> str:
        return f"returns {self.output_class.__name__}, main_input_name={self.main_input_name!r}"
