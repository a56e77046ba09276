"""The core: the shape contract, stride planning, the common options, the encoder types, and the layers every
family shares. It imports nothing else of the library.

    >>> from backbones.core import output_size, plan_strides
    >>> output_size(128, 316, (16, 16))
    (8, 20)
    >>> [stage.stride for stage in plan_strides(4, [1, 2, 2, 2], output_stride=16).stages]
    [(1, 1), (2, 2), (2, 2), (1, 1)]
"""

from ._backbone import Backbone, Stages
from ._cache import BoundedCache
from ._config import COMMON_OPTIONS, BackboneConfig, Pretrained
from ._contract import (
    RELATIVE_TOLERANCE,
    FeatureInfo,
    InputLimits,
    Pair,
    PairLike,
    ceil_div,
    check_input,
    check_input_size,
    check_mask,
    crop_to_ceil_grid,
    downsample_mask,
    output_size,
    padding_on_grid,
    size_problem,
    slice_mask,
)
from ._encoder import Encoder, MaskedEncoderBase
from ._fusion import Reparameterizable
from ._layers import ADAPTER_KINDS, Projection, dilate_3x3_convs, init_conv_weights, stride_of
from ._meta_device import MetaCaller, count_flops, eval_mode, is_meta, meta_call
from ._pooling import CeilPool2d, ceil_avg_pool2d, ceil_max_pool2d, ceil_pool, padded_avg_pool2d, padded_max_pool2d
from ._pyramid import FeaturePyramid
from ._records import LoadReport, Preprocess, key_list
from ._sequential import SequentialBackbone
from ._strides import StagePlan, StridePlan, allowed_output_strides, plan_strides
from ._timm_compat import TimmClasses, pads_at_run_time, timm_classes
from ._validate import check_bool, check_choice, check_float, check_int, check_ints, check_pair, check_sizes

__all__ = [
    "ADAPTER_KINDS",
    "COMMON_OPTIONS",
    "RELATIVE_TOLERANCE",
    "Backbone",
    "BackboneConfig",
    "BoundedCache",
    "CeilPool2d",
    "Encoder",
    "FeatureInfo",
    "FeaturePyramid",
    "InputLimits",
    "LoadReport",
    "MaskedEncoderBase",
    "MetaCaller",
    "Pair",
    "PairLike",
    "Preprocess",
    "Pretrained",
    "Projection",
    "Reparameterizable",
    "SequentialBackbone",
    "StagePlan",
    "Stages",
    "StridePlan",
    "TimmClasses",
    "allowed_output_strides",
    "ceil_avg_pool2d",
    "ceil_div",
    "ceil_max_pool2d",
    "ceil_pool",
    "check_bool",
    "check_choice",
    "check_float",
    "check_input",
    "check_input_size",
    "check_int",
    "check_ints",
    "check_mask",
    "check_pair",
    "check_sizes",
    "count_flops",
    "crop_to_ceil_grid",
    "dilate_3x3_convs",
    "downsample_mask",
    "eval_mode",
    "init_conv_weights",
    "is_meta",
    "key_list",
    "meta_call",
    "output_size",
    "padded_avg_pool2d",
    "padded_max_pool2d",
    "padding_on_grid",
    "pads_at_run_time",
    "plan_strides",
    "size_problem",
    "slice_mask",
    "stride_of",
    "timm_classes",
]
