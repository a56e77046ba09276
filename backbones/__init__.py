"""Configurable-stride CNN feature extractors under one shape contract.

>>> from backbones import build_backbone
>>> encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
>>> encoder.output_size(128, 316)
(8, 20)
"""

from . import families  # noqa: F401  (registers the families and the timm: namespace)
from .base import Backbone, Encoder, MaskedEncoderBase, Stages
from .build import build_backbone, build_on_meta, weight_sets
from .config import COMMON_OPTIONS, BackboneConfig
from .contract import FeatureInfo, InputLimits
from .export import check_onnx, export_onnx
from .families import DenseNet, DenseNetHMER, ResNet, TimmBackbone
from .layers import Projection
from .loading import LoadReport, WeightsMismatchError, load_weights
from .pyramid import FeaturePyramid
from .records import Preprocess
from .registry import (
    BackboneEntry,
    UnknownBackboneError,
    get_entry,
    list_backbones,
    register_backbone,
    register_namespace,
    unregister_backbone,
    unregister_namespace,
)
from .sequential import SequentialBackbone
from .sources import TimmWeights, TorchvisionWeights, WeightsUnavailableError
from .strides import StridePlan, plan_strides
from .swapping import SwapReport, swap  # the layer above the core and the adapters: last, they import the core

__version__ = "0.2.0"


__all__ = [
    "COMMON_OPTIONS",
    "Backbone",
    "BackboneConfig",
    "BackboneEntry",
    "DenseNet",
    "DenseNetHMER",
    "Encoder",
    "FeatureInfo",
    "FeaturePyramid",
    "InputLimits",
    "LoadReport",
    "MaskedEncoderBase",
    "Preprocess",
    "Projection",
    "ResNet",
    "SequentialBackbone",
    "Stages",
    "StridePlan",
    "SwapReport",
    "TimmBackbone",
    "TimmWeights",
    "TorchvisionWeights",
    "UnknownBackboneError",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "__version__",
    "build_backbone",
    "build_on_meta",
    "check_onnx",
    "export_onnx",
    "get_entry",
    "list_backbones",
    "load_weights",
    "plan_strides",
    "register_backbone",
    "register_namespace",
    "swap",
    "unregister_backbone",
    "unregister_namespace",
    "weight_sets",
]
