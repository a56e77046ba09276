"""Configurable-stride CNN feature extractors under one shape contract.

>>> from backbones import build_backbone
>>> encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
>>> encoder.output_size(128, 316)
(8, 20)
"""

from . import densenet, densenet_hmer, resnet  # noqa: F401  (register the families)
from .base import Backbone, BackboneConfig, SequentialBackbone
from .contract import FeatureInfo
from .registry import UnknownBackboneError, build_backbone, get_entry, list_backbones, register_backbone
from .strides import StridePlan, plan_strides

__all__ = [
    "Backbone",
    "BackboneConfig",
    "FeatureInfo",
    "SequentialBackbone",
    "StridePlan",
    "UnknownBackboneError",
    "build_backbone",
    "get_entry",
    "list_backbones",
    "plan_strides",
    "register_backbone",
]
