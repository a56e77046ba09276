"""``build_backbone``: the one build pipeline.

    options -> BackboneConfig (validated once) -> registry entry -> weights read (a source becomes
    tensors) -> family builds -> tensors go into the model (strict, reported)

Weights are read before anything is built, so a missing file or an unknown tag fails fast.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .base import Backbone
from .config import COMMON_OPTIONS, BackboneConfig, Pretrained
from .contract import PairLike
from .registry import BackboneEntry, get_entry
from .sources import WeightSet, collect_sets, read_pretrained

__all__ = ["build_backbone", "weight_sets"]


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
) -> Backbone:
    """Build a registered backbone under the shape contract.

    Args:
        name: a name from :func:`list_backbones`, or ``"timm:<model>"``.
        out_channels: channels of the output; ``None`` keeps the native ones (no adapter).
        output_stride: int or ``(sh, sw)``; ``None`` = native. Removes the last strides first.
        strides: per-stage strides after the stem (each kept or 1, int or ``(sh, sw)``).
        dilate: turn removed strides into dilation.
        in_channels: channels of the input image; ``None`` = the family's default (3; 1 for
            ``densenet_hmer``).
        pretrained: ``False``; ``True`` (the default ImageNet weights: torchvision's ``DEFAULT``); a weight
            tag (torchvision's ``"IMAGENET1K_V2"`` or timm's ``"a1_in1k"``); or a ``.pth``/``.pt``/
            ``.safetensors`` file in torchvision's, timm's, an HMER project's or this library's layout.
            The first conv is adapted to ``in_channels``; adapters stay freshly initialised. What was
            loaded is in ``backbone.pretrained_report``.
        out_indices: stage indices to output (0 = stem); the forward then returns a list.
        frozen_stages: -1 none, 0 the stem, ``i`` the stem and stages 1..i (frozen, eval mode).
        norm_eval: keep every BatchNorm of the body in eval mode during training.
        adapter: ``"conv"``, ``"conv_bn"`` or ``"conv_bn_relu"`` (used when ``out_channels`` is set).
        drop_rate: the family's dropout (see each family).
        **family_kwargs: the family's own options, e.g. ``stem="cifar"`` for ResNets.

    Returns:
        A :class:`Backbone`: ``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``.
    """
    config = BackboneConfig(
        out_channels=out_channels,  # type: ignore[arg-type]
        output_stride=output_stride,
        strides=strides,  # type: ignore[arg-type]
        dilate=dilate,
        in_channels=in_channels,
        pretrained=pretrained,
        out_indices=out_indices,  # type: ignore[arg-type]
        frozen_stages=frozen_stages,
        norm_eval=norm_eval,
        adapter=adapter,
        drop_rate=drop_rate,
    )
    entry = get_entry(name)
    _check_options(entry, family_kwargs)
    state, source = read_pretrained(entry.name, entry.weights, pretrained) if config.wants_weights else (None, "")
    model = entry.builder(config, **family_kwargs)
    if state is not None:
        model.load_pretrained(state, source, _pruned_keys(entry, model, family_kwargs))
    return model


def _check_options(entry: BackboneEntry, family_kwargs: dict) -> None:
    if entry.options is None:
        return
    unknown = sorted(set(family_kwargs) - set(entry.options))
    if unknown:
        raise TypeError(
            f"build_backbone({entry.name!r}) got unknown option(s) {', '.join(unknown)}; the {entry.family} family "
            f"takes {', '.join(entry.options) or 'no options of its own'}, besides {', '.join(COMMON_OPTIONS)}"
        )


def _pruned_keys(entry: BackboneEntry, model: Backbone, family_kwargs: dict) -> Optional[List[str]]:
    """The keys of the full native model when ``out_indices`` left stages unbuilt (checkpoints hold them)."""
    if len(model.feature_info) - 1 == model.num_stages:
        return None
    native = replace(model.config, out_indices=None, out_channels=None, frozen_stages=-1, pretrained=False)
    with torch.device("meta"):
        return list(entry.builder(native, **family_kwargs).state_dict())


def weight_sets(name: str) -> Dict[str, WeightSet]:
    """The published weight sets of a registered name or ``timm:<name>``, by tag (empty when none exist)."""
    entry = get_entry(name)
    return collect_sets(entry.name, entry.weights)
