"""Reading what one call of an encoder returned: one rule per :class:`OutputKind`, tried in order.

A Hugging Face ``ModelOutput`` is read through its ``last_hidden_state``; a 3-D tensor is tokens or a sequence
(``TOKENS`` here: the probes across sizes tell which); anything else is refused with what it was.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, List, Optional, Sequence, Tuple

from torch import Tensor

from ._records import Call, MaskLayout, Observation, OutputKind

__all__ = ["UnreadableOutput", "describe", "read_output"]


class UnreadableOutput(ValueError):
    """A module's output that is no map, tokens, sequence, pyramid or ``(map, mask)`` pair."""


def describe(value: Any) -> str:
    """A short description of a returned value (``Tensor [2, 64, 8]``, ``tuple of 3``)."""
    if isinstance(value, Tensor):
        return f"Tensor {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}: " + ", ".join(describe(v) for v in value[:4])
    return type(value).__name__


def _model_output(result: Any) -> Optional[Tuple[Tensor, type, Tuple[str, ...]]]:
    """``(last_hidden_state, class, field names)`` of a Hugging Face ``ModelOutput``, else ``None``."""
    hidden = getattr(result, "last_hidden_state", None)
    if not isinstance(hidden, Tensor) or not is_dataclass(result):
        return None
    return hidden, type(result), tuple(f.name for f in fields(result))


def _mask_like(value: Tensor, call: Call) -> bool:
    if call.mask is MaskLayout.BOOL_PADDING:
        return value.dim() == 3
    return value.dim() == 4 and value.shape[1] == 1


def _tensor_kind(value: Tensor) -> Optional[OutputKind]:
    return {4: OutputKind.MAP, 3: OutputKind.TOKENS}.get(value.dim())


def read_output(result: Any, call: Call) -> Observation:
    """The :class:`Observation` of one call's result (shapes, dtype, the returned mask as it is).

    Raises:
        UnreadableOutput: the result is none of the kinds (the message describes it).
    """
    wrapped = _model_output(result)
    if wrapped is not None:
        hidden, output_class, names = wrapped
        kind = _tensor_kind(hidden)
        if kind is not None:
            return Observation(kind, (tuple(hidden.shape),), hidden.dtype, model_output=output_class, fields=names)
    elif isinstance(result, Tensor) and _tensor_kind(result) is not None:
        return Observation(_tensor_kind(result) or OutputKind.MAP, (tuple(result.shape),), result.dtype)
    elif isinstance(result, (tuple, list)) and result and all(isinstance(r, Tensor) for r in result):
        found = _read_tensors(list(result), call)
        if found is not None:
            return found
    raise UnreadableOutput(
        f"returns {describe(result)}, not a [N, C, h, w] map, tokens or a sequence [N, L, C], a (map, mask) pair, a "
        f"list of maps, or a Hugging Face ModelOutput of one of those"
    )


def _read_tensors(result: List[Tensor], call: Call) -> Optional[Observation]:
    first, last = result[0], result[-1]
    if call.mask is not MaskLayout.NONE and len(result) == 2 and first.dim() == 4 and _mask_like(last, call):
        return Observation(OutputKind.MAP_AND_MASK, (tuple(first.shape),), first.dtype, mask=last,
                           mask_shape=tuple(last.shape))  # fmt: skip
    if all(r.dim() == 4 for r in result):
        return Observation(OutputKind.PYRAMID, tuple(tuple(r.shape) for r in result), first.dtype)
    return None


def shapes_text(shapes: Sequence[Tuple[int, ...]]) -> str:
    """Each shape without its batch: ``64x8x20``."""
    return ", ".join("x".join(map(str, s[1:])) for s in shapes)


def grids_text(observation: Observation) -> str:
    """The grid of each output: ``8x20`` for a map, ``160 tokens`` / ``25 steps`` for tokens and sequences."""
    if observation.kind is OutputKind.TOKENS:
        return ", ".join(f"{s[1]} tokens" for s in observation.shapes)
    if observation.kind is OutputKind.SEQUENCE:
        return ", ".join(f"{s[1]} steps" for s in observation.shapes)
    return ", ".join(f"{s[-2]}x{s[-1]}" for s in observation.shapes)
