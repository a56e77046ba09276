"""Configurable-stride CNN feature extractors under one shape contract.

>>> from backbones import build_backbone
>>> encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
>>> encoder.output_size(128, 316)
(8, 20)

The layers, bottom up, each a sub-package that imports only those below it: ``backbones.core`` (the contract, stride
planning, the encoder types, shared layers), ``backbones.weights`` (weight sets, files, loading),
``backbones.registry`` (names, ``build_backbone``), ``backbones.families`` (the architectures), ``backbones.deploy``
(ONNX), ``backbones.testing`` (the test kit), ``backbones.swapping`` (``swap``) and ``backbones.cli``. This module
gathers what most users need; everything else is importable from its sub-package.
"""

from __future__ import annotations

import warnings
from typing import Any

from . import families  # noqa: F401  (registers the families and the timm: namespace)
from .core import Backbone, BackboneConfig, Encoder, FeatureInfo, FeaturePyramid
from .deploy import export_onnx
from .registry import (
    UnknownBackboneError,
    build_backbone,
    build_on_meta,
    get_entry,
    list_backbones,
    register_backbone,
    register_namespace,
    unregister_backbone,
    unregister_namespace,
)
from .swapping import SwapReport, swap
from .weights import WeightsMismatchError, WeightsUnavailableError, load_weights

__version__ = "0.3.0"

__all__ = [
    "Backbone",
    "BackboneConfig",
    "Encoder",
    "FeatureInfo",
    "FeaturePyramid",
    "SwapReport",
    "UnknownBackboneError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "build_backbone",
    "build_on_meta",
    "export_onnx",
    "get_entry",
    "list_backbones",
    "load_weights",
    "register_backbone",
    "register_namespace",
    "swap",
    "unregister_backbone",
    "unregister_namespace",
]

_MOVED = {  # names that were at the top level before 0.3, and where they live now
    "COMMON_OPTIONS": "core", "InputLimits": "core", "MaskedEncoderBase": "core", "Preprocess": "core",
    "LoadReport": "core", "Projection": "core", "SequentialBackbone": "core", "Stages": "core", "StridePlan": "core",
    "plan_strides": "core", "BackboneEntry": "registry", "weight_sets": "registry", "check_onnx": "deploy",
    "TimmWeights": "weights", "TorchvisionWeights": "weights", "DenseNet": "families", "DenseNetHMER": "families",
    "ResNet": "families", "TimmBackbone": "families",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'backbones' has no attribute {name!r}")
    import importlib

    package = _MOVED[name]
    warnings.warn(
        f"backbones.{name} moved to backbones.{package}.{name} in 0.3; import it from there",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"backbones.{package}"), name)
