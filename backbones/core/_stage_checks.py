"""The stages a family builds, taken up to the deepest wanted one and checked once per configuration against what
the family declares (channels, the ceil grid)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Hashable, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import torch

from ._cache import BoundedCache
from ._config import BackboneConfig
from ._contract import FeatureInfo, InputLimits, output_size
from ._meta_device import eval_mode, meta_call

if TYPE_CHECKING:
    from ._backbone import Backbone

__all__ = ["Stages", "take_stages", "verify_once"]


class Stages(NamedTuple):
    """What a family's ``build`` returns.

    Attributes:
        total: stages after the stem in the full family (the base builds up to the deepest wanted one).
        built: the stem's record, then stage 1's, 2's, ..., each produced once its modules exist (a generator:
            the base stops taking them after the deepest stage the configuration outputs).
        limits: the input sizes the family takes (any size from 1 unless it says otherwise).
    """

    total: int
    built: Iterable[FeatureInfo]
    limits: InputLimits = InputLimits()


class _VerifiedBuild(NamedTuple):
    family: type
    config: BackboneConfig
    family_options: Tuple[Tuple[str, Hashable], ...]


_VERIFIED: BoundedCache[_VerifiedBuild, bool] = BoundedCache(512)
"""Configurations whose stages were checked: identical builds have identical stages."""


def _verified_key(family: type, config: BackboneConfig, options: Mapping[str, Any]) -> Optional[_VerifiedBuild]:
    """The cache key of a build, ``None`` when its options are unhashable (such a build is checked every time)."""
    key = _VerifiedBuild(
        family, replace(config, pretrained=False, frozen_stages=-1, norm_eval=False), tuple(sorted(options.items()))
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def take_stages(backbone: Backbone, stages: Stages) -> List[FeatureInfo]:
    """The stage records up to the deepest wanted stage; the family's generator is closed there, so the stages
    after it are never built.

    Raises:
        RuntimeError: the family yields its stages out of order or fewer than the configuration wants.
    """
    family = type(backbone).__name__
    backbone.config.check_frozen_stages(stages.total)
    last = backbone.config.last_stage(stages.total)
    built: List[FeatureInfo] = []
    records = iter(stages.built)
    for info in records:
        if info.index != len(built):
            raise RuntimeError(f"{family}.build gave stage {info.index} after {len(built)} stages")
        built.append(info)
        if info.index == last:
            break
    close = getattr(records, "close", None)
    if close is not None:
        close()
    if len(built) <= last:
        raise RuntimeError(f"{family}.build gave {len(built)} stages; stage {last} is wanted")
    return built


def verify_once(backbone: Backbone) -> None:
    """Each built stage's declared channels and ceil grid, checked at an odd size once per configuration: a real
    forward of a zero image (a few cells per stage: cheaper than the meta device), on the meta device when the
    weights are there.

    Raises:
        RuntimeError: a stage computes another shape than the one it declares.
    """
    key = _verified_key(type(backbone), backbone.config, backbone.family_options)
    if key is not None and key in _VERIFIED:
        return
    height, width = backbone.probe_size()
    parameter = next(iter(backbone.parameters()), None)
    with eval_mode(backbone), torch.no_grad():  # BatchNorm in training refuses one 1x1 sample (squeeze-excitation)
        if parameter is None or parameter.is_meta:
            x = torch.zeros(1, backbone.in_channels, height, width, device="meta")
            outputs = meta_call(backbone, "forward_stages", x)
        else:
            x = torch.zeros(1, backbone.in_channels, height, width, device=parameter.device, dtype=parameter.dtype)
            outputs = backbone.forward_stages(x)
    for info, output in zip(backbone.feature_info, outputs):
        wanted = (info.channels, *output_size(height, width, info.stride))
        if tuple(output.shape[1:]) != wanted:
            raise RuntimeError(
                f"{type(backbone).__name__} declares stage {info.index} ({info.name}) as [N, {info.channels}, "
                f"ceil(H/{info.stride[0]}), ceil(W/{info.stride[1]})] but computes {list(output.shape)} "
                f"for a {height}x{width} input"
            )
    if key is not None:
        _VERIFIED.put(key, True)
