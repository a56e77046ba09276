"""Adapters that fit a backbone into a model: projection, masked encoder, sequences, positions."""

from .masked import MaskedEncoder
from .projection import ADAPTER_KINDS, Projection
from .sequence import SinePositionalEncoding2D, from_sequence, to_sequence, valid_mask

__all__ = [
    "ADAPTER_KINDS",
    "MaskedEncoder",
    "Projection",
    "SinePositionalEncoding2D",
    "from_sequence",
    "to_sequence",
    "valid_mask",
]
