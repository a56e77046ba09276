"""Swapping: replace the encoder inside someone's model in one call (:func:`swap`), after probing what it takes and
gives (:func:`probe_contract`, a typed :class:`EncoderContract`); the call-convention wrappers the replacement is put
in place with."""

from ._infer import probe_contract
from ._probe import PROBE_SIZES
from ._records import (
    AxisFit,
    Call,
    CallStyle,
    EncoderContract,
    MaskLayout,
    Observation,
    OutputKind,
    Rounding,
    SequenceHeight,
    TokenGrid,
)
from ._report import EncoderSide, SwapReport, gflops_text, grid_text
from ._swap import match_encoder, old_side, resolve_path, swap
from ._wrappers import MaskedEncoder, ModelOutputEncoder, SequenceEncoder, TokenEncoder

__all__ = [
    "PROBE_SIZES",
    "AxisFit",
    "Call",
    "CallStyle",
    "EncoderContract",
    "EncoderSide",
    "MaskLayout",
    "MaskedEncoder",
    "ModelOutputEncoder",
    "Observation",
    "OutputKind",
    "Rounding",
    "SequenceEncoder",
    "SequenceHeight",
    "SwapReport",
    "TokenEncoder",
    "TokenGrid",
    "gflops_text",
    "grid_text",
    "match_encoder",
    "old_side",
    "probe_contract",
    "resolve_path",
    "swap",
]
