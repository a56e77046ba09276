"""Downstream helpers, installed as ``backbones.adapters``: a masked encoder, sequences, positions, and a feature
pyramid as a torchvision detection backbone.

This package may import ``backbones``; the core never imports it. The 1x1 projection that
``out_channels=`` attaches is the core's :class:`backbones.Projection`.
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
