"""The registry: ``register_backbone``, ``list_backbones``, ``build_backbone``.

A registry entry is a builder ``fn(config: BackboneConfig, *, <family options>) -> Backbone``. The
family options are the builder's keyword-only parameters; anything else is refused by name.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import torch

from .base import Backbone, BackboneConfig
from .checkpoints import load_weights
from .contract import PairLike
from .weights import fetch, is_checkpoint_path, resolve_weight_set

__all__ = [
    "BackboneEntry",
    "UnknownBackboneError",
    "build_backbone",
    "get_entry",
    "list_backbones",
    "register_backbone",
]

Builder = Callable[..., Backbone]
B = TypeVar("B", bound=Builder)

COMMON_OPTIONS = (
    "out_channels",
    "output_stride",
    "strides",
    "dilate",
    "in_channels",
    "pretrained",
    "out_indices",
    "frozen_stages",
    "norm_eval",
    "adapter",
    "drop_rate",
)


class UnknownBackboneError(KeyError):
    """A name that is not registered; the message suggests the closest registered names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    family: str
    builder: Builder
    options: Tuple[str, ...]
    description: str = ""
    in_channels: int = 3


_REGISTRY: Dict[str, BackboneEntry] = {}


def register_backbone(
    name: str, *, family: Optional[str] = None, description: str = "", in_channels: int = 3
) -> Callable[[B], B]:
    """Decorator that registers ``fn(config: BackboneConfig, *, **options) -> Backbone`` under ``name``.

    ``in_channels`` is the family's default input channel count (``build_backbone(in_channels=None)``).

    Example::

        @register_backbone("tiny_cnn", family="custom")
        def tiny_cnn(config: BackboneConfig, *, width: int = 16) -> Backbone:
            return TinyCNN(config, width=width)
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name must be a non-empty string without ':', got {name!r}")

    def decorator(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"a backbone named {name!r} is already registered (family {_REGISTRY[name].family!r})")
        parameters = inspect.signature(builder).parameters.values()
        options = tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = BackboneEntry(name, family or name, builder, options, doc, in_channels)
        return builder

    return decorator


def list_backbones(pattern: Optional[str] = None) -> List[str]:
    """Registered names, sorted; ``pattern`` is a shell-style wildcard such as ``"resnet*"``."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_entry(name: str) -> BackboneEntry:
    """The registry entry for ``name``; ``UnknownBackboneError`` (a ``KeyError``) suggests close names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownBackboneError(
        f"unknown backbone name {name!r}{hint} (list_backbones() shows all {len(_REGISTRY)} names)"
    )


def _as_tuple(value: object, name: str) -> object:
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    if name == "out_channels" and isinstance(value, int):
        return value
    raise TypeError(f"{name} must be a tuple or list, got {value!r}")


def build_backbone(
    name: str,
    *,
    out_channels: Union[None, int, Sequence[int]] = None,
    output_stride: Optional[PairLike] = None,
    strides: Optional[Sequence[PairLike]] = None,
    dilate: bool = False,
    in_channels: Optional[int] = None,
    pretrained: Union[bool, str] = False,
    out_indices: Optional[Sequence[int]] = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    adapter: str = "conv_bn",
    drop_rate: float = 0.0,
    **family_kwargs: object,
) -> Backbone:
    """Build a registered backbone under the shape contract.

    Args:
        name: a name from :func:`list_backbones`.
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
    if not isinstance(pretrained, (bool, str, os.PathLike)) and pretrained is not None:
        raise TypeError(f"pretrained must be a bool, a weight tag or a file path, got {pretrained!r}")
    if isinstance(name, str) and name.startswith("timm:"):
        from .timm_backbone import build_timm_backbone

        config = BackboneConfig(
            in_channels=3 if in_channels is None else in_channels,
            out_channels=_as_tuple(out_channels, "out_channels"),  # type: ignore[arg-type]
            output_stride=output_stride,
            strides=_as_tuple(strides, "strides"),  # type: ignore[arg-type]
            dilate=dilate,
            out_indices=_as_tuple(out_indices, "out_indices"),  # type: ignore[arg-type]
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            adapter=adapter,
            drop_rate=drop_rate,
        )
        return build_timm_backbone(name[len("timm:") :], config, pretrained or False, **family_kwargs)
    entry = get_entry(name)
    unknown = sorted(set(family_kwargs) - set(entry.options))
    if unknown:
        raise TypeError(
            f"build_backbone({name!r}) got unknown option(s) {', '.join(unknown)}; the {entry.family} family "
            f"takes {', '.join(entry.options) or 'no options of its own'}, besides {', '.join(COMMON_OPTIONS)}"
        )
    if pretrained not in (False, None) and not is_checkpoint_path(pretrained):
        weight_file = fetch(resolve_weight_set(name, pretrained))  # before building: fail fast
    elif pretrained not in (False, None):
        weight_file = pretrained
    else:
        weight_file = None
    config = BackboneConfig(
        in_channels=entry.in_channels if in_channels is None else in_channels,
        out_channels=_as_tuple(out_channels, "out_channels"),  # type: ignore[arg-type]
        output_stride=output_stride,
        strides=_as_tuple(strides, "strides"),  # type: ignore[arg-type]
        dilate=dilate,
        out_indices=_as_tuple(out_indices, "out_indices"),  # type: ignore[arg-type]
        frozen_stages=frozen_stages,
        norm_eval=norm_eval,
        adapter=adapter,
        drop_rate=drop_rate,
    )
    model = entry.builder(config, **family_kwargs)
    if weight_file is not None:
        with torch.device("meta"):
            native = replace(config, out_indices=None, out_channels=None, frozen_stages=-1)
            reference_keys = list(entry.builder(native, **family_kwargs).state_dict())
        load_weights(model, weight_file, reference_keys=reference_keys)
    return model
