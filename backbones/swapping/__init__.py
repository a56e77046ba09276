"""Swapping: replace the encoder inside someone's model in one call (:func:`swap`), after probing what it takes and
gives; the call-convention wrappers the replacement is put in place with."""

from ._probe import EncoderContract, probe_contract
from ._report import EncoderSide, SwapReport, gflops_text
from ._swap import match_encoder, old_side, resolve_path, swap
from ._wrappers import MaskedEncoder

__all__ = [
    "EncoderContract",
    "EncoderSide",
    "MaskedEncoder",
    "SwapReport",
    "gflops_text",
    "match_encoder",
    "old_side",
    "probe_contract",
    "resolve_path",
    "swap",
]
