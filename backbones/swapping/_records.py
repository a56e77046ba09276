"""The probed contract of an encoder, as typed records: how it is called, what it returns, its grid.

Text appears only in ``__str__`` (what reports print); the logic compares the enums and numbers. Adding a convention
is adding a member to :class:`OutputKind` (or :class:`MaskLayout`), one reading rule (``_reading``) and one wrapper
(``_wrappers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ..core import Pair

__all__ = [
    "AxisFit",
    "Call",
    "CallStyle",
    "EncoderContract",
    "MaskLayout",
    "Observation",
    "OutputKind",
    "Rounding",
    "SequenceHeight",
    "TokenGrid",
]


class CallStyle(Enum):
    """How the image reaches the module: ``module(x)`` or ``module(pixel_values=x)`` (Hugging Face's name)."""

    POSITIONAL = "positional"
    KEYWORD = "keyword"


class MaskLayout(Enum):
    """The padding mask the module takes (and, for ``MAP_AND_MASK``, returns)."""

    NONE = "none"
    BOOL_PADDING = "[N, H, W], True = padding"
    FLOAT_VALID = "[N, 1, H, W], 1 = valid"

    def __str__(self) -> str:
        return self.value


class OutputKind(Enum):
    """What the module returns (for a Hugging Face ``ModelOutput``: what its ``last_hidden_state`` is)."""

    MAP = "[N, C, h, w]"
    MAP_AND_MASK = "([N, C, h, w], mask)"
    TOKENS = "tokens [N, h*w, C]"
    SEQUENCE = "sequence [N, T, C]"
    PYRAMID = "maps [[N, C_i, h_i, w_i], ...]"

    def __str__(self) -> str:
        return self.value


class Rounding(Enum):
    """How one axis of the grid follows the input: ``out = rounding(n / stride)``; ``ONLY_AT``: the stride holds at
    the one size the module takes (:attr:`AxisFit.reference`)."""

    CEIL = "ceil"
    FLOOR = "floor"
    FLOOR_PLUS_ONE = "floor+1"
    ONLY_AT = "only at"
    POOLED = "pooled"
    """One cell whatever the input (a sequence's height after pooling its rows); the stride is then 0."""


class SequenceHeight(Enum):
    """How a sequence lost its height: the map had one row (``SQUEEZED``) or its rows were pooled (``POOLED``)."""

    SQUEEZED = "one row, squeezed"
    POOLED = "rows pooled"


@dataclass(frozen=True)
class AxisFit:
    """One axis of one output: ``out = rounding(n / stride)`` (``reference``: the size of ``ONLY_AT``)."""

    stride: int
    rounding: Rounding
    reference: Optional[int] = None

    def cells(self, size: int) -> int:
        """The output length for an input ``size`` on this axis."""
        if self.rounding is Rounding.FLOOR:
            return size // self.stride
        if self.rounding is Rounding.FLOOR_PLUS_ONE:
            return size // self.stride + 1
        if self.rounding is Rounding.POOLED:
            return 1
        return -(-size // self.stride)

    def __str__(self) -> str:
        if self.rounding is Rounding.CEIL:
            return str(self.stride)
        if self.rounding is Rounding.ONLY_AT:
            return f"{self.stride} (only at {self.reference})"
        if self.rounding is Rounding.POOLED:
            return "pooled"
        return f"{self.stride} ({self.rounding.value})"


@dataclass(frozen=True)
class TokenGrid:
    """The ``h x w`` grid behind ``L`` tokens: ``L = prefix + h * w``, flattened row-major.

    Attributes:
        prefix: tokens before the grid (a class token: 1; DeiT's class and distillation tokens: 2).
        declared: the grid was read off the module (timm's ``patch_embed.grid_size``, a Hugging Face config), not
            inferred from the probes.
    """

    prefix: int = 0
    declared: bool = False


@dataclass(frozen=True)
class Call:
    """How the module is called.

    Attributes:
        style: positional or keyword; input_name: the image's parameter name (``x``, ``pixel_values``).
        mask: the padding mask it takes; mask_dtype: the dtype it is given (an ``example`` gives its own).
    """

    style: CallStyle = CallStyle.POSITIONAL
    input_name: str = "x"
    mask: MaskLayout = MaskLayout.NONE
    mask_dtype: torch.dtype = torch.bool

    def __str__(self) -> str:
        image = f"{self.input_name}=x" if self.style is CallStyle.KEYWORD else "x"
        return f"({image}, mask)" if self.mask is not MaskLayout.NONE else f"({image})"


@dataclass
class Observation:
    """One probe: the output kind, the shapes of the maps / tokens, their dtype, the returned mask (real values where
    it could be computed) and the Hugging Face output class, if any."""

    kind: OutputKind
    shapes: Tuple[Tuple[int, ...], ...]
    dtype: torch.dtype
    mask: Optional[Tensor] = None
    mask_shape: Optional[Tuple[int, ...]] = None
    model_output: Optional[type] = None
    fields: Tuple[str, ...] = ()

    @property
    def structure(self) -> Tuple[OutputKind, int, Optional[type]]:
        """What must be the same at every size: the kind, the number of outputs, the output class."""
        return self.kind, len(self.shapes), self.model_output


@dataclass(frozen=True)
class EncoderContract:
    """What a probed encoder takes and gives (see :func:`~backbones.swapping.probe_contract`).

    Attributes:
        path: where the module sits in the model.
        call: how it is called.
        kind: what it returns; model_output: the Hugging Face ``ModelOutput`` class it wraps that in (or ``None``),
            with ``fields`` (``last_hidden_state``, ``pooler_output``, ...).
        in_channels: input channels; out_channels: channels per output.
        axes: per output, the ``(H, W)`` axis fits of its grid.
        tokens: for ``TOKENS``, the grid behind the tokens; sequence: for ``SEQUENCE``, how the height went.
        sizes: the probe sizes the module takes; skipped: those it refuses, with its own complaint.
        observations: per size taken, what it gave.
    """

    path: str
    call: Call
    kind: OutputKind
    in_channels: int
    out_channels: Tuple[int, ...]
    axes: Tuple[Tuple[AxisFit, AxisFit], ...]
    observations: Dict[Pair, Observation] = field(compare=False)
    skipped: Dict[Pair, str] = field(default_factory=dict, compare=False)
    tokens: Optional[TokenGrid] = None
    sequence: Optional[SequenceHeight] = None
    model_output: Optional[type] = None
    fields: Tuple[str, ...] = ()

    @property
    def strides(self) -> Tuple[Pair, ...]:
        return tuple((h.stride, w.stride) for h, w in self.axes)

    @property
    def sizes(self) -> Tuple[Pair, ...]:
        return tuple(self.observations)

    def ceil_grid_at(self, size: Pair) -> bool:
        """Whether the old grid at ``size`` is the ceil grid of its strides (what any replacement gives): where it is
        not, a replacement changes the grid (CRNN's extra column); where it is, a different grid means another
        stride."""
        return all(
            axis.rounding is Rounding.POOLED or axis.cells(n) == -(-n // axis.stride)
            for axes in self.axes
            for axis, n in zip(axes, size)
        )

    def grid(self, size: Pair, output: int = 0) -> Pair:
        """The old module's grid for an input ``size``."""
        h, w = self.axes[output]
        return h.cells(size[0]), w.cells(size[1])

    def returns(self) -> str:
        """What it returns, in words."""
        kind = str(self.kind)
        if self.kind is OutputKind.TOKENS and self.tokens is not None and self.tokens.prefix:
            kind = f"tokens [N, {self.tokens.prefix} + h*w, C]"
        if self.kind is OutputKind.SEQUENCE and self.sequence is not None:
            kind = f"{kind} ({self.sequence.value})"
        if self.kind is OutputKind.PYRAMID:
            kind = f"{len(self.axes)} maps"
        return f"{self.model_output.__name__}({kind})" if self.model_output is not None else kind

    def stride_text(self) -> str:
        return "; ".join(f"{h} x {w}" for h, w in self.axes)

    def __str__(self) -> str:
        channels = ", ".join(map(str, self.out_channels))
        return (
            f"{self.path}: {self.call} -> {self.returns()}, mask {self.call.mask}, in {self.in_channels}, "
            f"out {channels}, stride {self.stride_text()}"
        )
