"""What an encoder inside someone's model gives, found by calling it: the contract that :func:`backbones.swap`
builds a replacement for.

A probe calls the module on the meta device (shapes only; its weights are replaced by meta stand-ins for the call
and never touched), with a real padding mask where one is taken so that the returned mask can be compared by
value; a module that cannot run on the meta device is called on its own device with the same small inputs, in
eval mode and without gradients. Every submodule's train/eval mode is put back exactly, and nothing else changes.

From the calls follow: the call convention (``module(x)`` or ``module(x, mask)``, and which mask layout the module
takes and returns), what it returns (a tensor, a ``(feature, mask)`` pair, a list of maps), the input channels (the
example's, else the first conv's), each output's channels, and per axis the stride and the rounding of the grid
(``ceil`` as the contract, ``floor``, ``floor+1`` for CRNN-style pools that add a column, or, where no single
stride fits every size, the stride at the size the encoder is used with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core import Pair, eval_mode, meta_call

__all__ = ["DEFAULT_SIZES", "AxisFit", "Call", "EncoderContract", "Observation", "observe", "probe_contract"]

DEFAULT_SIZES: Tuple[Pair, ...] = (
    (32, 100), (32, 128), (32, 97), (32, 320), (48, 160), (64, 256), (54, 46), (128, 316), (97, 401), (311, 871),
)  # fmt: skip
"""Text lines first (widths divisible by 4, and one that is not), then formula-like sizes."""
STRIDES = (1, 2, 4, 8, 16, 32, 64)
ROUNDINGS: Dict[str, Callable[[int, int], int]] = {
    "ceil": lambda n, s: -(-n // s),
    "floor": lambda n, s: n // s,
    "floor+1": lambda n, s: n // s + 1,
}
_REAL_PROBE_PIXELS = 256 * 1024  # the largest input probed for real when the meta device cannot run the module


@dataclass(frozen=True)
class Call:
    """How the module is called: ``mask`` is ``None`` (``module(x)``), :data:`BOOL_MASK` (True = padding, as
    BTTR/CoMER) or :data:`FLOAT_MASK` (1 = valid, as CAN/SAN); ``mask_dtype`` the dtype it is given (the probes
    use bool and float32; an ``example`` gives its own)."""

    mask: Optional[str] = None
    mask_dtype: torch.dtype = torch.bool

    def text(self, returns: str) -> str:
        return f"{'(x, mask)' if self.mask else '(x)'} -> {returns}"


BOOL_MASK = "[N, H, W], True = padding"
FLOAT_MASK = "[N, 1, H, W], 1 = valid"


@dataclass
class Observation:
    """One probe: the shapes of the feature maps, the returned mask (real values where it could be computed)."""

    size: Pair
    returns: str
    shapes: List[Tuple[int, ...]]
    dtype: torch.dtype
    mask: Optional[Tensor] = None
    mask_shape: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class AxisFit:
    """One axis of one output: ``out = rounding(n / stride)``."""

    stride: int
    rounding: str

    def text(self) -> str:
        return str(self.stride) if self.rounding == "ceil" else f"{self.stride} ({self.rounding})"


@dataclass
class EncoderContract:
    """What a probed encoder gives (see the module docstring)."""

    name: str
    call: Call
    returns: str
    in_channels: int
    out_channels: Tuple[int, ...]
    axes: Tuple[Tuple[AxisFit, AxisFit], ...]
    observations: Dict[Pair, Observation]
    skipped: Dict[Pair, str] = field(default_factory=dict)
    device: str = "meta"

    @property
    def strides(self) -> Tuple[Pair, ...]:
        return tuple((h.stride, w.stride) for h, w in self.axes)

    @property
    def ceil_grid(self) -> bool:
        return all(h.rounding == "ceil" and w.rounding == "ceil" for h, w in self.axes)

    def grids(self) -> Dict[Pair, List[Pair]]:
        return {size: [(s[-2], s[-1]) for s in o.shapes] for size, o in self.observations.items()}


def _first_conv_channels(module: nn.Module) -> Optional[int]:
    return next((m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def _padding_mask(batch: int, size: Pair, call: Call) -> Tensor:
    """A padded batch's mask in the module's layout: the last image's bottom third and right third are padding."""
    padding = torch.zeros(batch, *size, dtype=torch.bool)
    padding[-1, (2 * size[0]) // 3 + 1 :, :] = True
    padding[-1, :, (2 * size[1]) // 3 + 1 :] = True
    if call.mask == FLOAT_MASK:
        return (~padding).to(call.mask_dtype)[:, None]
    return padding.to(call.mask_dtype)


def _parse(result: Any, call: Call) -> Tuple[str, List[Tensor], Optional[Tensor]]:
    """``(returns, feature maps, returned mask)`` of a call's result, or a ValueError for anything else."""
    if isinstance(result, Tensor) and result.dim() == 4:
        return "tensor", [result], None
    if isinstance(result, (tuple, list)) and result and all(isinstance(r, Tensor) for r in result):
        last = result[-1]
        if call.mask and len(result) == 2 and (last.dim() == 3 or (last.dim() == 4 and last.shape[1] == 1)):
            if result[0].dim() == 4:
                return "(feature, mask)", [result[0]], last
        if all(r.dim() == 4 for r in result):
            return f"{type(result).__name__} of {len(result)} maps", list(result), None
    raise ValueError(f"returns {type(result).__name__}, not a [N, C, h, w] tensor, a (feature, mask) pair or a list")


def _run(module: nn.Module, x: Tensor, mask: Optional[Tensor]) -> Tuple[Any, bool]:
    """The call's result and whether the mask it returns has real values: on the meta device with a real mask,
    then with a meta mask, then (small sizes) for real on the module's device."""
    errors = []
    masks = [mask] if mask is None else [mask, mask.to("meta")]
    for given in masks:
        try:
            return meta_call(module, "forward", *([x] if given is None else [x, given])), given is not None
        except Exception as error:  # any failure on the meta device: try the next way
            errors.append(error)
    parameter = next(iter(module.parameters()), None)
    if parameter is None or parameter.is_meta or x.shape[-2] * x.shape[-1] > _REAL_PROBE_PIXELS:
        raise errors[-1]
    real = torch.zeros(x.shape, dtype=x.dtype, device=parameter.device)
    args = [real] if mask is None else [real, mask.to(parameter.device)]
    with torch.no_grad():
        return module(*args), mask is not None


def observe(module: nn.Module, size: Pair, in_channels: int, call: Call, dtype: torch.dtype) -> Observation:
    """Call ``module`` once at ``size`` (batch 2) in eval mode; raises what the module raises."""
    x = torch.empty(2, in_channels, *size, dtype=dtype, device="meta")
    mask = _padding_mask(2, size, call) if call.mask else None
    with eval_mode(module):
        result, real_mask = _run(module, x, mask)
    returns, features, returned_mask = _parse(result, call)
    values = returned_mask.cpu() if returned_mask is not None and real_mask and not returned_mask.is_meta else None
    shape = tuple(returned_mask.shape) if returned_mask is not None else None
    return Observation(size, returns, [tuple(f.shape) for f in features], features[0].dtype, values, shape)


def _calls(module: nn.Module, example: Any) -> List[Call]:
    """The conventions to try: the example's, else those the forward's signature allows (plain first)."""
    if isinstance(example, Tensor):
        return [Call()]
    if isinstance(example, tuple) and len(example) == 2 and all(isinstance(e, Tensor) for e in example):
        layout = BOOL_MASK if example[1].dim() == 3 else FLOAT_MASK
        return [Call(layout, example[1].dtype)]
    return [Call(), Call(BOOL_MASK, torch.bool), Call(FLOAT_MASK, torch.float32)]


def _is_example(example: Any) -> bool:
    if isinstance(example, Tensor):
        return example.dim() == 4
    return isinstance(example, tuple) and len(example) == 2 and all(isinstance(e, Tensor) for e in example)


def _fits(observation: Observation, call: Call) -> bool:
    """A masked convention fits when the returned mask (if any) lies on the feature grid."""
    if call.mask is None or observation.mask_shape is None:
        return True
    return observation.mask_shape[-2:] == observation.shapes[0][-2:]


def fit_axis(pairs: Sequence[Tuple[int, int]], reference: int) -> AxisFit:
    """The stride and rounding that explain every ``(input, output)`` pair of one axis (ceil first, the smallest
    stride first); where none does, the stride at the ``reference`` input size."""
    for rounding, rule in ROUNDINGS.items():
        for stride in STRIDES:
            if all(rule(n, stride) == m for n, m in pairs):
                return AxisFit(stride, rounding)
    outputs = dict(pairs)
    n, m = reference, outputs.get(reference, 0)
    if m < 1 or n % m:
        raise ValueError(f"no stride explains the grid: input -> output sizes {sorted(set(pairs))}")
    return AxisFit(n // m, f"only at {n}")


def _axes(observations: Dict[Pair, Observation], reference: Pair, output: int) -> Tuple[AxisFit, AxisFit]:
    rows = [(size[0], o.shapes[output][-2]) for size, o in observations.items()]
    columns = [(size[1], o.shapes[output][-1]) for size, o in observations.items()]
    return fit_axis(rows, reference[0]), fit_axis(columns, reference[1])


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


def _lock_call(module: nn.Module, sizes: List[Pair], in_channels: int, calls: List[Call], dtype: torch.dtype) -> Call:
    """The first convention that runs (and keeps the mask on the grid) at the first size that runs at all."""
    refused: Dict[str, str] = {}
    for size in sizes:
        for call in calls:
            try:
                if _fits(observe(module, size, in_channels, call, dtype), call):
                    return call
            except Exception as error:  # the module's own refusal (a size too small, another call)
                refused.setdefault(call.text("..."), f"at {size[0]}x{size[1]}: {_reason(error)}")
    tried = "; ".join(f"{convention} {reason}" for convention, reason in refused.items())
    raise ValueError(f"it cannot be called at any probe size ({tried})")


def probe_contract(
    module: nn.Module, name: str, *, example: Any = None, sizes: Optional[Sequence[Pair]] = None
) -> EncoderContract:
    """Call ``module`` at each size and infer its contract (see the module docstring).

    Raises:
        ValueError: nothing can be inferred (no conv to read the input channels from and no ``example``, no
            convention that runs, no stride that explains the grid); the message says why.
    """
    if example is not None and not _is_example(example):
        raise TypeError(
            f"example must be a tensor [N, C, H, W] or a (tensor, mask) tuple of the module's arguments, got "
            f"{type(example).__name__}"
        )
    x = example[0] if isinstance(example, tuple) else example
    in_channels = x.shape[1] if isinstance(x, Tensor) else _first_conv_channels(module)
    if in_channels is None:
        raise ValueError(f"{name} has no Conv2d to read its input channels from; pass example=torch.zeros(...)")
    parameter = next(iter(module.parameters()), None)
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    given: List[Pair] = [(int(x.shape[-2]), int(x.shape[-1]))] if isinstance(x, Tensor) else []
    wanted = list(dict.fromkeys(given + [(int(h), int(w)) for h, w in (sizes or DEFAULT_SIZES)]))
    call = _lock_call(module, wanted, in_channels, _calls(module, example), dtype)
    observations: Dict[Pair, Observation] = {}
    skipped: Dict[Pair, str] = {}
    for size in wanted:
        try:
            observations[size] = observe(module, size, in_channels, call, dtype)
        except Exception as error:  # sizes the module refuses are skipped, not fatal
            skipped[size] = _reason(error)
    first = next(iter(observations.values()))
    kinds = {(o.returns, len(o.shapes)) for o in observations.values()}
    if len(kinds) > 1:
        raise ValueError(f"{name} returns different structures at different sizes: {sorted(kinds)}")
    reference = next(iter(observations))
    axes = tuple(_axes(observations, reference, i) for i in range(len(first.shapes)))
    channels = tuple(shape[1] for shape in first.shapes)
    return EncoderContract(name, call, first.returns, in_channels, channels, axes, observations, skipped)
