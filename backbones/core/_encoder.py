"""``Encoder``: what every built model declares, whether it has one output (:class:`~backbones.core.Backbone`) or
several (:class:`~backbones.core.FeaturePyramid`); and ``MaskedEncoderBase``, the declared type of
``(image, mask) -> (feature, mask)`` wrappers.

Generic code (the test kit, ONNX export, the CLI) uses only what this base declares, list-valued whatever the
subclass: ``forward_outputs(x)``, ``output_sizes(h, w)``, ``downsample_masks(mask)``, ``output_info``.

(No ``from __future__ import annotations`` here: TorchScript reads the attribute annotations of the class.)
"""

import logging
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Tuple, TypeVar

import torch
from torch import Tensor, nn

from ._contract import FeatureInfo, InputLimits, Pair, check_input_size, downsample_mask, output_size
from ._fusion import fold_batchnorms
from ._records import LoadReport, Preprocess

if TYPE_CHECKING:
    from ._backbone import Backbone

__all__ = ["Encoder", "MaskedEncoderBase"]

_logger = logging.getLogger("backbones")
E = TypeVar("E", bound="Encoder")


class Encoder(nn.Module):
    """What every built model declares: a :class:`Backbone` (one output) or a ``FeaturePyramid`` (several).

    Attributes:
        in_channels: channels the input must have.
        feature_info: one :class:`FeatureInfo` per built stage (index 0 = stem), native channels.
        output_info: one :class:`FeatureInfo` per output, with the channels after the adapter.
        input_limits: the input sizes it takes (:class:`~backbones.core.InputLimits`).
        preprocess: the normalisation the loaded weights expect, per input channel (``None`` without weights).
        pretrained_report: what the last weight load did (``None`` until weights are loaded).
        attends_to_mask: whether a padding mask passed to ``forward`` reaches attention layers (timm's ViT, DeiT
            and EVA, SVTRv2); other encoders compute the same features with or without it.
        folded_batchnorms: BatchNorms folded into convs by :meth:`fuse` (0 before).
        reparameterized: multi-branch layers :meth:`fuse` folded into one conv (0 before).
    """

    __jit_ignored_attributes__ = [
        "feature_info", "output_info", "input_limits", "preprocess", "pretrained_report", "config", "family_options",
    ]  # fmt: skip

    in_channels: int
    feature_info: Tuple[FeatureInfo, ...]
    output_info: Tuple[FeatureInfo, ...]
    input_limits: InputLimits
    preprocess: Optional[Preprocess]
    pretrained_report: Optional[LoadReport]
    attends_to_mask: bool
    folded_batchnorms: int
    reparameterized: int
    key_prefix: ClassVar[str] = ""
    """Where the stage backbone's tensors sit in this encoder's state dict (``"backbone."`` in a pyramid)."""

    def stage_backbone(self) -> "Backbone":
        """The :class:`Backbone` whose stages this encoder outputs: itself, or a pyramid's ``backbone``."""
        raise NotImplementedError

    def forward_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """Every output as a list, whatever the encoder type (what generic code calls).

        Args:
            x: ``[N, in_channels, H, W]``.
            mask: an optional padding mask of ``x`` (bool ``[N, H, W]``, True = padding, or float ``[N, 1, H, W]``).

        Returns:
            ``[N, C_i, ceil(H/sh_i), ceil(W/sw_i)]`` per output (one for a :class:`Backbone`).
        """
        raise NotImplementedError

    def output_names(self) -> List[str]:
        """A name per output (ONNX's output names).

        Returns:
            ``["feature"]`` for one output, ``["feature0", "feature1", ...]`` for several.
        """
        return [f"feature{i}" for i in range(len(self.output_info))]

    def output_sizes(self, height: int, width: int) -> List[Pair]:
        """Every output's grid, without a forward pass.

        Args:
            height: input H.
            width: input W.

        Returns:
            ``(ceil(H/sh_i), ceil(W/sw_i))`` per output.

        Raises:
            ValueError: the size is outside ``input_limits``.
        """
        check_input_size(height, width, self.input_limits)
        return [output_size(height, width, info.stride) for info in self.output_info]

    def downsample_masks(self, mask: Tensor) -> List[Tensor]:
        """The padding mask on every output's grid.

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).

        Returns:
            ``mask[..., ::sh_i, ::sw_i]`` per output, dtype and layout kept.
        """
        return [downsample_mask(mask, info.stride) for info in self.output_info]

    def output_shape(self) -> Dict[str, FeatureInfo]:
        """detectron2's ``output_shape()``.

        Returns:
            Each output's stage name -> its :class:`FeatureInfo` (channels after the adapter, stride).
        """
        return {info.name: info for info in self.output_info}

    def record_weights(self, report: LoadReport, preprocess: Optional[Preprocess]) -> None:
        """Note what a weight load did and how its weights want the input, here and on the stage backbone.

        Args:
            report: what was loaded, adapted, initialised and ignored.
            preprocess: the loaded weights' normalisation, or ``None`` (a file without one).
        """
        for encoder in (self, self.stage_backbone()):
            encoder.pretrained_report, encoder.preprocess = report, preprocess

    @property
    def min_input_size(self) -> int:
        """Smallest H and W (``input_limits.min_size``)."""
        return self.input_limits.min_size

    @property
    def max_input_size(self) -> Optional[Pair]:
        """Largest ``(H, W)``, or ``None`` (``input_limits.max_size``)."""
        return self.input_limits.max_size

    def probe_size(self) -> Pair:
        """An input size for checks on one input.

        Returns:
            ``(H, W)``, not a multiple of the deepest stride on either axis, within ``input_limits``.
        """
        deepest, limits = self.feature_info[-1].stride, self.input_limits
        height, width = max(2 * deepest[0] + 1, limits.min_size), max(3 * deepest[1] + 1, limits.min_size)
        if limits.max_size is not None:
            height, width = min(height, limits.max_size[0]), min(width, limits.max_size[1])
        return height, width

    def fuse(self: E) -> E:
        """Fold multi-branch layers into one conv each (PP-LCNetV3's, as the original's ``rep()``), then every
        BatchNorm that directly follows a conv into that conv (body and ``conv_bn`` adapters), in place, for
        inference. The outputs stay within 1e-4 of their scale in float32 (a few units of the dtype's rounding in
        half precision), checked on a probe input.

        Pre-activation BatchNorms (BN -> ReLU -> conv) have no conv to fold into and stay. The count is in
        ``folded_batchnorms`` (and the log). A fused model's state dict is not the unfused layout: the folded
        convs gain a bias and the BatchNorm keys are gone; save the unfused model's weights for training.

        Returns:
            ``self``, fused.

        Raises:
            RuntimeError: the model is in training mode (call ``eval()`` first: folding uses the running
                statistics, which training would go on updating), its weights are on the meta device, or the
                folded model computes something else (it is then restored exactly).
        """
        if self.training:
            raise RuntimeError(
                "fuse() folds BatchNorm running statistics into the convs, for inference only: call "
                "encoder.eval() first (a fused model cannot learn BatchNorm statistics)"
            )
        if any(t.is_meta for t in [*self.parameters(), *self.buffers()]):
            raise RuntimeError(
                "fuse() needs real weights, but the model is on the meta device (shapes only); build it on the CPU "
                "or a GPU, or move it with model.to_empty(device=...) and load its weights first"
            )
        backbone = self.stage_backbone()
        parameter = next(iter(self.parameters()))
        probe = torch.randn(2, self.in_channels, *self.probe_size(), dtype=parameter.dtype, device=parameter.device)
        layers = backbone.reparameterizable()
        folded, kept = fold_batchnorms(
            self, backbone.fusable_pairs, backbone.fusion_chains(), probe, layers, backbone.folded_norm_remainder
        )
        self.folded_batchnorms, self.reparameterized = folded, len(layers)
        _logger.info("%s.fuse(): %d layers re-parameterised, %d BatchNorms folded, %d stay", type(self).__name__,
                     len(layers), folded, kept)  # fmt: skip
        return self


class MaskedEncoderBase(nn.Module):
    """A module called as ``(image [N, C, H, W], mask) -> (feature, mask on the feature grid)`` around
    ``self.encoder``, a single-output :class:`Backbone`: what :func:`~backbones.export_onnx` exports with a ``mask``
    input. ``backbones.swapping.MaskedEncoder`` implements it.

    Attributes:
        encoder: the :class:`Backbone` it calls.
    """

    if TYPE_CHECKING:  # not at run time: TorchScript would read the annotation
        encoder: Backbone
