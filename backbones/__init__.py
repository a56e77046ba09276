"""Configurable-stride CNN feature extractors under one shape contract.

>>> from backbones import build_backbone
>>> encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
>>> encoder.output_size(128, 316)
(8, 20)
"""

from . import densenet, densenet_hmer, resnet  # noqa: F401  (register the families)
from .base import Backbone, BackboneConfig, SequentialBackbone
from .checkpoints import LoadReport, WeightsMismatchError, load_weights
from .contract import FeatureInfo
from .registry import UnknownBackboneError, build_backbone, get_entry, list_backbones, register_backbone
from .strides import StridePlan, plan_strides
from .timm_backbone import TimmBackbone
from .weights import WeightsUnavailableError, weight_sets

__all__ = [
    "Backbone",
    "BackboneConfig",
    "FeatureInfo",
    "LoadReport",
    "SequentialBackbone",
    "StridePlan",
    "TimmBackbone",
    "UnknownBackboneError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "build_backbone",
    "get_entry",
    "list_backbones",
    "load_weights",
    "plan_strides",
    "register_backbone",
    "weight_sets",
]
