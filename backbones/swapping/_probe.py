"""What an encoder inside someone's model takes and gives, found by calling it: the contract that
:func:`backbones.swap` builds a replacement for.

A probe calls the module on the meta device (shapes only; its weights are replaced by meta stand-ins for the call
and never touched), with a real padding mask where one is taken so that the returned mask can be compared by
value; a module that cannot run on the meta device is called on its own device with the same small inputs, in
eval mode and without gradients. Every submodule's train/eval mode is put back exactly, and nothing else changes.

The sizes come first from what the module declares (timm's ``img_size``, a Hugging Face ``config.image_size``), then
from ``sizes`` (text lines and formulas by default); a module that takes one size only is matched at that size. The
call convention is the first of ``module(x)``, ``module(x, bool mask)``, ``module(x, float mask)`` that gives a
readable output (``_reading``); the contract then follows from the outputs across the sizes (``_fit``).
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..core import MetaCaller, Pair, eval_mode
from ._reading import UnreadableOutput, read_output
from ._records import Call, MaskLayout, Observation

__all__ = ["PROBE_SIZES", "declared", "observe"]

PROBE_SIZES: Tuple[Pair, ...] = (
    (32, 128), (97, 401), (128, 320), (32, 100), (32, 97), (48, 160), (64, 256), (54, 46), (128, 316), (311, 871),
)  # fmt: skip
"""The default probe sizes, text lines and formulas, in an order that pins the grid down early: the first three
have, per axis, a size divisible by 64 and an odd one (ceil, floor and floor+1 of every stride up to 64 differ on
them); the module is probed until its grid is determined, or at all of them."""
_REAL_PROBE_PIXELS = 256 * 1024  # the largest input probed for real when the meta device cannot run the module
_BATCH = 2


def _padding_mask(size: Pair, call: Call) -> Tensor:
    """A padded batch's mask in the module's layout: the last image's bottom third and right third are padding."""
    padding = torch.zeros(_BATCH, *size, dtype=torch.bool)
    padding[-1, (2 * size[0]) // 3 + 1 :, :] = True
    padding[-1, :, (2 * size[1]) // 3 + 1 :] = True
    if call.mask is MaskLayout.FLOAT_VALID:
        return (~padding).to(call.mask_dtype)[:, None]
    return padding.to(call.mask_dtype)


def _run(caller: MetaCaller, x: Tensor, mask: Optional[Tensor]) -> Tuple[Any, bool]:
    """The call's result and whether a mask it returns has real values: on the meta device with a real mask,
    then with a meta mask, then (small sizes) for real on the module's device."""
    errors, module = [], caller.module
    for given in [None] if mask is None else [mask, mask.to("meta")]:
        try:
            return caller("forward", *([x] if given is None else [x, given])), given is not None
        except Exception as error:  # any failure on the meta device: try the next way
            errors.append(error)
    parameter = next(iter(module.parameters()), None)
    if parameter is None or parameter.is_meta or x.shape[-2] * x.shape[-1] > _REAL_PROBE_PIXELS:
        raise errors[-1]
    real = torch.zeros(x.shape, dtype=x.dtype, device=parameter.device)
    with torch.no_grad():
        return module(*([real] if mask is None else [real, mask.to(parameter.device)])), mask is not None


def observe(caller: MetaCaller, size: Pair, in_channels: int, call: Call, dtype: torch.dtype) -> Observation:
    """Call the module once at ``size`` (batch 2) in eval mode; raises what the module raises, or
    :class:`~backbones.swapping._reading.UnreadableOutput`."""
    x = torch.empty(_BATCH, in_channels, *size, dtype=dtype, device="meta")
    mask = _padding_mask(size, call) if call.mask is not MaskLayout.NONE else None
    with eval_mode(caller.module):
        result, real_mask = _run(caller, x, mask)
    found = read_output(result, call)
    if found.mask is not None:
        found.mask = found.mask.cpu() if real_mask and not found.mask.is_meta else None
    return found


def _calls(module: nn.Module, example: Any) -> List[Call]:
    """The conventions to try: the example's, else the plain call first, then the two mask layouts."""
    name = next(iter(inspect.signature(module.forward).parameters), "x")
    if isinstance(example, Tensor):
        return [Call(input_name=name)]
    if isinstance(example, tuple):
        layout = MaskLayout.BOOL_PADDING if example[1].dim() == 3 else MaskLayout.FLOAT_VALID
        return [Call(input_name=name, mask=layout, mask_dtype=example[1].dtype)]
    masks = [
        (MaskLayout.NONE, torch.bool),
        (MaskLayout.BOOL_PADDING, torch.bool),
        (MaskLayout.FLOAT_VALID, torch.float32),
    ]
    return [Call(input_name=name, mask=layout, mask_dtype=dtype) for layout, dtype in masks]


def _fits(observation: Observation, call: Call) -> bool:
    """A masked convention fits when the returned mask (if any) lies on the feature grid."""
    if call.mask is MaskLayout.NONE or observation.mask_shape is None:
        return True
    return observation.mask_shape[-2:] == observation.shapes[0][-2:]


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


Locked = Tuple[Call, Pair, Observation, Dict[Pair, str]]


def _lock_call(
    caller: MetaCaller, sizes: List[Pair], in_channels: int, calls: List[Call], dtype: torch.dtype
) -> Locked:
    """The first convention that gives a readable output (with the mask on the grid) at the first size that does,
    that size, what the module gave there, and what it said at the sizes before.

    Raises:
        ValueError: none does at any size; the most likely reason first (an output it could not read), then per
            size tried the module's own complaint.
    """
    refused: Dict[Pair, str] = {}
    unreadable = ""
    for size in sizes:
        for call in calls:
            try:
                found = observe(caller, size, in_channels, call, dtype)
                if _fits(found, call):
                    return call, size, found, refused
            except UnreadableOutput as error:
                unreadable = unreadable or f"at {size[0]}x{size[1]} it {error}"
            except Exception as error:  # the module's own refusal (a size it does not take, another call)
                refused.setdefault(size, f"{call} at {size[0]}x{size[1]}: {_reason(error)}")
    tried = "; ".join(list(refused.values())[:6])
    lead = f"{unreadable}; " if unreadable else "it cannot be called at any probe size: "
    raise ValueError(f"{lead}what each size gave: {tried}" if tried else lead.rstrip("; "))


def _input_channels(module: nn.Module, example: Any) -> Optional[int]:
    x = example[0] if isinstance(example, tuple) else example
    if isinstance(x, Tensor):
        return int(x.shape[1])
    return next((m.in_channels for m in module.modules() if isinstance(m, nn.Conv2d)), None)


def _pair(value: Any) -> Optional[Pair]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def declared(module: nn.Module) -> Tuple[Optional[Pair], Optional[Pair]]:
    """``(size, grid)`` the module says it is made for: timm's ``patch_embed.img_size`` / ``grid_size`` (or an
    ``img_size`` of its own), a Hugging Face ``config.image_size`` / ``patch_size``; ``None`` where it says nothing."""
    for candidate in module.modules():
        size, grid = _pair(getattr(candidate, "img_size", None)), _pair(getattr(candidate, "grid_size", None))
        if size is not None:
            return size, grid
    config = getattr(module, "config", None)
    size, patch = _pair(getattr(config, "image_size", None)), _pair(getattr(config, "patch_size", None))
    if size is not None and patch is not None and size[0] % patch[0] == 0 and size[1] % patch[1] == 0:
        return size, (size[0] // patch[0], size[1] // patch[1])
    return size, None
