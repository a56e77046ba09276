"""Downstream helpers, installed as ``backbones.adapters``: a masked encoder, sequences, positions.

This package may import ``backbones``; the core never imports it. The 1x1 projection that
``out_channels=`` attaches is the core's :class:`backbones.Projection`.
"""

from .masked import MaskedEncoder
from .sequence import SinePositionalEncoding2D, from_sequence, to_sequence, valid_mask

__all__ = ["MaskedEncoder", "SinePositionalEncoding2D", "from_sequence", "to_sequence", "valid_mask"]
