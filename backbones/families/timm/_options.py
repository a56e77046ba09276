"""What a ``timm:`` build needs from timm, probed on the meta device once per configuration: timm's level indices,
the options that make the model take any input size, and whether timm's own ``output_stride`` reaches the stride.
"""

from __future__ import annotations

from typing import Any, Dict, Hashable, NamedTuple, Optional, Tuple

import torch

from ...core import BackboneConfig, BoundedCache, PairLike, timm_classes

__all__ = ["OptionsProbe", "ProbeKey", "check_timm_options", "create_on_meta", "probe_options", "probe_key"]


class ProbeKey(NamedTuple):
    """One configuration of a timm model, as far as probing it is concerned."""

    model_name: str
    in_channels: int
    timm_options: Tuple[Tuple[str, Hashable], ...]
    output_stride: Optional[Hashable]
    strides: Optional[Hashable]
    dilate: bool


class OptionsProbe(NamedTuple):
    """What a meta-device model says a build needs.

    Attributes:
        level_indices: timm's ``out_indices`` of every level.
        timm_options: the options to create the body with (size options, timm's ``output_stride`` where used).
        timm_stride: timm's own ``output_stride`` when that route reaches the stride, else ``None``.
        native: each level's native stride.
        plain_vit: every level is at one stride, the patch's (a ViT: every block is a level).
    """

    level_indices: Tuple[int, ...]
    timm_options: Dict[str, Any]
    timm_stride: Optional[int]
    native: Tuple[int, ...]
    plain_vit: bool


PROBED: BoundedCache[ProbeKey, OptionsProbe] = BoundedCache(128)

_OWN_OPTIONS = {
    "in_chans": "use in_channels=, the common option",
    "features_only": "features are always on: every timm: model is its features_only body",
    "out_indices": "use out_indices=, the common option",
    "pretrained": "use pretrained=, the common option",
    "checkpoint_path": "use pretrained='path/to/file' (timm's checkpoint_path loads without checking the keys)",
    "pretrained_cfg_overlay": "use pretrained= for weights (an overlay's file or state_dict loads unchecked)",
}


def check_timm_options(model_name: str, options: Dict[str, Any]) -> None:
    """Options timm would misread: ours under timm's name, unchecked loading, and ``None`` (timm drops it)."""
    for key, value in options.items():
        if key in _OWN_OPTIONS:
            raise TypeError(f"timm:{model_name} got {key}={value!r}: {_OWN_OPTIONS[key]}")
        if value is None:
            raise ValueError(
                f"timm:{model_name} got {key}=None: timm drops options set to None, so it would have no effect "
                f"(a misspelt option would pass unnoticed); leave it out or give it a value"
            )


def _frozen(value: Any) -> Hashable:
    """``value`` with lists as tuples and dicts as sorted item tuples (``img_size=[32, 128]`` is hashable then)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    return value if isinstance(value, Hashable) else repr(value)


def probe_key(model_name: str, in_channels: int, options: Dict[str, Any], config: BackboneConfig) -> ProbeKey:
    return ProbeKey(
        model_name, in_channels, tuple(sorted((k, _frozen(v)) for k, v in options.items())),
        _frozen(config.output_stride), _frozen(config.strides), config.dilate,
    )  # fmt: skip


def create_on_meta(model_name: str, options: Dict[str, Any]) -> Any:
    """``timm.create_model(model_name, **options)`` on the meta device; timm's refusals as one ``ValueError``."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(model_name, **options)
    except RuntimeError as error:
        raise ValueError(f"timm:{model_name} cannot be built with features_only=True: {error}") from error
    except (TypeError, AssertionError) as error:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"timm:{model_name} does not accept {given} ({type(error).__name__}: {error})") from error


def _with_options(model_name: str, probe: Any, kwargs: Dict[str, Any], **options: Any) -> Tuple[Any, Dict[str, Any]]:
    """The probe rebuilt with ``options`` (timm's size options, ``output_stride``), or as it was if the model refuses
    them."""
    extended = dict(kwargs, **options)
    try:
        return create_on_meta(model_name, extended), extended
    except ValueError:
        return probe, kwargs


def _timm_output_stride(config: BackboneConfig) -> Optional[int]:
    """The isotropic ``output_stride`` that timm's own dilation route can take, or ``None``."""
    stride: Optional[PairLike] = config.output_stride
    if not config.dilate or stride is None or config.strides is not None:
        return None
    if isinstance(stride, int):
        return stride
    return int(stride[0]) if len(stride) == 2 and stride[0] == stride[1] else None


def _check_one_stride(model_name: str, native: Tuple[int, ...], config: BackboneConfig) -> None:
    if config.output_stride is None and config.strides is None:
        return
    if config.output_stride != native[-1] or config.strides is not None:
        raise ValueError(
            f"timm:{model_name} works at one stride, its patch ({native[-1]}): every block is at it (a vision "
            f"transformer, or a patch model like ConvMixer), so output_stride and strides cannot change it; "
            f"got output_stride={config.output_stride!r}, strides={config.strides!r}"
        )


def probe_options(
    model_name: str, in_channels: int, timm_options: Dict[str, Any], config: BackboneConfig
) -> OptionsProbe:
    """Probe a meta-device model for what this build needs (see :class:`OptionsProbe`): every level of
    ``forward_intermediates`` models, any input size for ViTs and Swin, timm's own ``output_stride`` where it reaches
    the stride. Cached per configuration."""
    key = probe_key(model_name, in_channels, timm_options, config)
    return PROBED.get_or_compute(key, lambda: _probe(model_name, in_channels, dict(timm_options), config))


def _probe(model_name: str, in_channels: int, kwargs: Dict[str, Any], config: BackboneConfig) -> OptionsProbe:
    kwargs.update(features_only=True, in_chans=in_channels)
    probe = create_on_meta(model_name, kwargs)
    getter = isinstance(probe, timm_classes().FeatureGetterNet)  # forward_intermediates models: every level exposed
    if getter and "out_indices" not in kwargs:
        kwargs["out_indices"] = tuple(range(len(probe.get_submodule("model").feature_info)))
        probe = create_on_meta(model_name, kwargs)
    patch_embed = getattr(probe, "patch_embed", None)
    if getter and "dynamic_img_size" not in kwargs:
        probe, kwargs = _with_options(model_name, probe, kwargs, dynamic_img_size=True, dynamic_img_pad=True)
    elif getattr(patch_embed, "strict_img_size", False) and "strict_img_size" not in kwargs:
        probe, kwargs = _with_options(model_name, probe, kwargs, strict_img_size=False)  # Swin: sizes other than 224
    native = tuple(probe.feature_info.reduction())
    plain_vit = getter and len(set(native)) == 1  # one stride: the patch; every block is a level
    if plain_vit:
        _check_one_stride(model_name, native, config)
    timm_stride = _timm_output_stride(config)
    if timm_stride is not None:
        dilated, extended = _with_options(model_name, probe, kwargs, output_stride=timm_stride)
        if extended is not kwargs and dilated.feature_info.reduction()[-1] == timm_stride:
            return OptionsProbe(tuple(dilated.feature_info.out_indices), extended, timm_stride, native, plain_vit)
    # timm has no route for this model (or does not reach the stride): the generic one
    return OptionsProbe(tuple(probe.feature_info.out_indices), kwargs, None, native, plain_vit)
