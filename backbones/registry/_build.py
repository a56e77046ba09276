"""``build_backbone``: the one build pipeline.

    options -> BackboneConfig (validated once) -> registry entry -> weights read (a source becomes
    tensors) -> family builds -> tensors go into the model (strict, reported)

Weights are read before anything is built, so a missing file or an unknown tag fails fast.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, Sequence, Union, overload

import torch

from ..core import COMMON_OPTIONS, Backbone, BackboneConfig, Encoder, FeaturePyramid, PairLike, Pretrained
from ..weights import PretrainedWeights, WeightSet, collect_sets, load_weights, read_pretrained
from ._registry import BackboneEntry, get_entry

__all__ = ["build_backbone", "build_on_meta", "weight_sets"]


@overload
def build_backbone(
    name: str,
    *,
    out_channels: Optional[int] = None,
    output_stride: Optional[PairLike] = None,
    strides: Optional[Sequence[PairLike]] = None,
    dilate: bool = False,
    in_channels: Optional[int] = None,
    pretrained: Pretrained = False,
    out_indices: None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    adapter: str = "conv_bn",
    drop_rate: float = 0.0,
    **family_kwargs: Any,
) -> Backbone: ...


@overload
def build_backbone(
    name: str,
    *,
    out_channels: Union[None, int, Sequence[int]] = None,
    output_stride: Optional[PairLike] = None,
    strides: Optional[Sequence[PairLike]] = None,
    dilate: bool = False,
    in_channels: Optional[int] = None,
    pretrained: Pretrained = False,
    out_indices: Sequence[int],
    frozen_stages: int = -1,
    norm_eval: bool = False,
    adapter: str = "conv_bn",
    drop_rate: float = 0.0,
    **family_kwargs: Any,
) -> FeaturePyramid: ...


def build_backbone(
    name: str,
    *,
    out_channels: Union[None, int, Sequence[int]] = None,
    output_stride: Optional[PairLike] = None,
    strides: Optional[Sequence[PairLike]] = None,
    dilate: bool = False,
    in_channels: Optional[int] = None,
    pretrained: Pretrained = False,
    out_indices: Optional[Sequence[int]] = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    adapter: str = "conv_bn",
    drop_rate: float = 0.0,
    **family_kwargs: Any,
) -> Encoder:
    """Build a registered backbone under the shape contract.

    Args:
        name: a name from :func:`list_backbones`, or ``"timm:<model>"``.
        out_channels: channels of the output; ``None`` keeps the native ones (no adapter); with ``out_indices``, one
            int for every output or one per output.
        output_stride: int or ``(sh, sw)``; ``None`` = native. Removes the last strides first.
        strides: per-stage strides after the stem (each kept or 1, int or ``(sh, sw)``).
        dilate: turn removed strides into dilation.
        in_channels: channels of the input; ``None`` = the family's default (3; 1 for the HMER and line encoders).
        pretrained: ``False``; ``True`` (torchvision's ``DEFAULT`` ImageNet weights); a weight tag
            (``"IMAGENET1K_V2"``, timm's ``"a1_in1k"``); or a checkpoint path (an ``os.PathLike``, or a string with a
            suffix or a folder) in torchvision's, timm's, an OCR or HMER project's or this library's layout. The first
            conv is adapted to ``in_channels``. The report is in ``pretrained_report``, the normalisation in
            ``preprocess``.
        out_indices: stage indices to output (0 = stem): the result is then a :class:`FeaturePyramid`.
        frozen_stages: -1 none, 0 the stem, ``i`` the stem and stages 1..i (frozen, eval mode).
        norm_eval: keep every BatchNorm of the body in eval mode during training.
        adapter: ``"conv"``, ``"conv_bn"`` or ``"conv_bn_relu"`` (with ``out_channels``); drop_rate: the family's.
        **family_kwargs: the family's own options, e.g. ``stem="cifar"`` for ResNets.

    Returns:
        A :class:`Backbone` (``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``), or with
        ``out_indices`` a :class:`FeaturePyramid` (a list, one such map per output).
    """
    config = BackboneConfig(
        out_channels=out_channels, output_stride=output_stride, strides=strides, dilate=dilate,
        in_channels=in_channels, pretrained=pretrained, out_indices=out_indices,
        frozen_stages=frozen_stages, norm_eval=norm_eval, adapter=adapter, drop_rate=drop_rate,
    )  # fmt: skip
    entry = get_entry(name)
    _check_options(entry, family_kwargs)
    weights = read_pretrained(entry.name, entry.weights, pretrained) if config.wants_weights else None
    return _load(_compose(entry, config, family_kwargs), weights)


def _load(model: Encoder, weights: Optional[PretrainedWeights]) -> Encoder:
    """``model`` with ``weights`` loaded and their preprocessing noted (as it is without weights)."""
    if weights is not None:
        report = load_weights(model, weights.state, source=weights.source)
        if weights.preprocess is not None:
            model.record_weights(report, weights.preprocess.for_channels(model.in_channels))
    return model


def _compose(entry: BackboneEntry, config: BackboneConfig, family_kwargs: Dict[str, Any]) -> Encoder:
    """The family's backbone, wrapped in a pyramid when several stages are wanted."""
    backbone = entry.builder(
        config if config.out_indices is None else replace(config, out_channels=None), **family_kwargs
    )
    if not isinstance(backbone, Backbone):
        raise TypeError(f"the builder of {entry.name!r} returned {type(backbone).__name__}, not a backbones.Backbone")
    if config.out_indices is None:
        return backbone
    return FeaturePyramid(backbone, config.out_indices, config.out_channels, config.adapter)


def _check_options(entry: BackboneEntry, family_kwargs: Dict[str, Any]) -> None:
    if entry.options is None:
        return
    unknown = sorted(set(family_kwargs) - set(entry.options))
    if unknown:
        raise TypeError(
            f"build_backbone({entry.name!r}) got unknown option(s) {', '.join(unknown)}; the {entry.family} family "
            f"takes {', '.join(entry.options) or 'no options of its own'}, besides {', '.join(COMMON_OPTIONS)}"
        )


def build_on_meta(name: str, **kwargs: Any) -> Encoder:
    """``build_backbone`` on the meta device, in eval mode: no weight memory, no initialisation cost (shapes,
    parameter counts and FLOPs only).

    Args:
        name: a registered name or ``timm:<name>``.
        **kwargs: ``build_backbone``'s options; ``pretrained`` is ignored, as shapes do not depend on weights.

    Returns:
        The :class:`~backbones.Backbone` or :class:`~backbones.FeaturePyramid`, its tensors on the meta device.

    Raises:
        UnknownBackboneError, TypeError, ValueError: as :func:`~backbones.build_backbone`.
    """
    if kwargs.get("pretrained") not in (None, False):
        kwargs = {**kwargs, "pretrained": False}
    get_entry(name)  # an unknown name fails here, before anything is built
    with torch.device("meta"):
        return build_backbone(name, **kwargs).eval()


def weight_sets(name: str) -> Dict[str, WeightSet]:
    """The published weight sets of a registered name or ``timm:<name>``, by tag (empty when none exist)."""
    return collect_sets(get_entry(name).weights)
