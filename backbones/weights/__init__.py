"""Weights: where published weight sets come from, reading checkpoint files safely, and loading tensors into an
encoder strictly and atomically, in torchvision's, timm's, the OCR and HMER projects' or this library's key layout.
"""

from ._files import CheckpointReadError, read_state_dict, unwrap_container
from ._loading import WeightsMismatchError, adapt_first_conv, copy_atomically, load_outside, load_weights
from ._sources import (
    PretrainedWeights,
    TimmWeights,
    TorchvisionWeights,
    WeightSet,
    WeightSource,
    WeightsUnavailableError,
    cache_dir,
    collect_sets,
    default_weight_set,
    fetch,
    read_pretrained,
    resolve_pretrained,
)

__all__ = [
    "CheckpointReadError",
    "PretrainedWeights",
    "TimmWeights",
    "TorchvisionWeights",
    "WeightSet",
    "WeightSource",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "adapt_first_conv",
    "cache_dir",
    "collect_sets",
    "copy_atomically",
    "default_weight_set",
    "fetch",
    "load_outside",
    "load_weights",
    "read_pretrained",
    "read_state_dict",
    "resolve_pretrained",
    "unwrap_container",
]
