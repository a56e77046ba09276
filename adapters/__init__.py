"""Downstream helpers, installed as ``backbones.adapters``: a masked encoder, sequences, positions, and a feature
pyramid as a torchvision detection backbone; ``backbones.adapters.hf`` (Hugging Face transformers) and
``backbones.adapters.smp`` (segmentation_models_pytorch) are imported on their own, each with its extra.

This package may import ``backbones``; the core never imports it. The 1x1 projection that
``out_channels=`` attaches is the core's ``backbones.core.Projection``.
"""

from .detection import FPNBackbone, with_fpn
from .masked import MaskedEncoder
from .sequence import SinePositionalEncoding2D, from_sequence, to_sequence, valid_mask

__all__ = [
    "FPNBackbone",
    "MaskedEncoder",
    "SinePositionalEncoding2D",
    "from_sequence",
    "to_sequence",
    "valid_mask",
    "with_fpn",
]
