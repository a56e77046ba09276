"""Building the replacement to a probed contract, wrapping it in the old call convention, and checking it gives
what the old module gave at every size the old module took."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..core import Backbone, Encoder, MetaCaller, Pair
from ..registry import build_backbone, build_on_meta, format_spec, get_entry, parse_spec
from ._probe import observe
from ._reading import grids_text
from ._records import EncoderContract, MaskLayout, Observation, OutputKind, SequenceHeight
from ._wrappers import MaskedEncoder, ModelOutputEncoder, SequenceEncoder, TokenEncoder

__all__ = ["GridChange", "build_for", "differences", "wrap"]

GridChange = Tuple[Pair, str, str]  # size, the old grid, the new one
_SHAPE_ONLY = ("out_channels", "out_indices", "output_stride", "strides")


def _stride_option(stride: Pair) -> Union[int, Pair]:
    return stride[0] if stride[0] == stride[1] else stride


def _native_strides(name: str, options: Dict[str, Any]) -> List[Pair]:
    """The strides the stages of ``name`` reach with ``options`` (besides the shape options)."""
    native = build_on_meta(name, **{k: v for k, v in options.items() if k not in _SHAPE_ONLY})
    return [info.stride for info in native.feature_info]


def _pyramid_options(name: str, contract: EncoderContract, options: Dict[str, Any]) -> Dict[str, Any]:
    """out_indices: each old output's stride is the deepest stage of ``name`` at that stride (its native layout)."""
    strides = {stride: index for index, stride in enumerate(_native_strides(name, options))}
    missing = [s for s in contract.strides if s not in strides]
    if missing:
        raise ValueError(
            f"the pyramid at {contract.path} has outputs at strides {list(contract.strides)}; {name}'s stages are at "
            f"{sorted(strides)}, without {missing}"
        )
    return {"out_indices": tuple(strides[s] for s in contract.strides), "out_channels": contract.out_channels}


def sequence_height(name: str, contract: EncoderContract, options: Dict[str, Any]) -> Tuple[int, bool]:
    """The height stride for a sequence and whether the rows must be pooled: one row at the height the old module
    took (the smallest stride of ``name`` that reaches it), else the family's deepest, pooled."""
    heights = sorted({stride[0] for stride in _native_strides(name, options)})
    height = contract.axes[0][0]
    if contract.sequence is SequenceHeight.SQUEEZED and height.reference is not None:
        one_row = [s for s in heights if s >= height.reference]
        if one_row:
            return one_row[0], False
    return heights[-1], True


def _options(name: str, contract: EncoderContract, given: Dict[str, Any]) -> Tuple[Dict[str, Any], bool]:
    """The build options that meet the contract (``given`` override them), and whether a sequence's rows are
    pooled."""
    options: Dict[str, Any] = {"in_channels": contract.in_channels, **given}
    pool_rows = False
    if contract.kind is OutputKind.PYRAMID:
        if "out_indices" not in given:
            options = {**_pyramid_options(name, contract, options), **options}
        return options, pool_rows
    width, stride = contract.axes[0][1], contract.strides[0]
    if contract.kind is OutputKind.SEQUENCE:
        sh, pool_rows = sequence_height(name, contract, options)
        stride = (sh, width.stride)
    defaults = {"out_channels": contract.out_channels[0], "output_stride": _stride_option(stride)}
    if "strides" in given and "output_stride" not in given:  # the user's stages decide the stride
        defaults.pop("output_stride")
    return {"in_channels": contract.in_channels, **defaults, **given}, pool_rows


def build_for(
    spec: Union[str, nn.Module], contract: EncoderContract, build_options: Dict[str, Any]
) -> Tuple[Encoder, str, bool]:
    """The replacement for ``contract``, how the report names it, and whether a sequence's rows are pooled."""
    if not isinstance(spec, str):
        if not isinstance(spec, Encoder):
            raise TypeError(
                f"spec must be a backbone name, a spec string or a built encoder, got {type(spec).__name__}"
            )
        return spec, type(spec).__name__, contract.sequence is SequenceHeight.POOLED
    name, spec_options = parse_spec(spec)
    get_entry(name)  # an unknown name fails here, before anything is built
    options, pool_rows = _options(name, contract, {**spec_options, **build_options})
    try:
        encoder = build_backbone(name, **options)
    except ValueError as error:
        raise ValueError(
            f"{contract.path} gives {_wanted(contract)} (inferred); {name} cannot be built to match: {error}"
        ) from error
    return encoder, format_spec(name, {k: v for k, v in options.items() if k != "pretrained" or v}), pool_rows


def _wanted(contract: EncoderContract) -> str:
    outputs = [
        f"{c} channels at stride {h.stride}x{w.stride}" for c, (h, w) in zip(contract.out_channels, contract.axes)
    ]
    if contract.kind is OutputKind.SEQUENCE:
        outputs = [f"a sequence of {contract.out_channels[0]} channels at width stride {contract.axes[0][1].stride}"]
    return f"{', '.join(outputs)} from {contract.in_channels} input channels"


def _single(encoder: Encoder, contract: EncoderContract) -> Backbone:
    if not isinstance(encoder, Backbone):
        raise ValueError(f"{contract.path} returns {contract.returns()}: the replacement must have one output")
    return encoder


def wrap(encoder: Encoder, contract: EncoderContract, old: nn.Module, pool_rows: bool) -> nn.Module:
    """The new encoder in the old module's call convention and output layout."""
    inner: nn.Module = encoder
    if contract.call.mask is not MaskLayout.NONE and contract.kind is not OutputKind.MAP_AND_MASK:
        raise ValueError(
            f"{contract.path} takes (x, mask) but returns {contract.returns()}: the next module cannot take what a "
            f"wrapper of backbones.swapping gives for that call (a (map, mask) pair); wrap the backbone yourself"
        )
    if contract.kind is OutputKind.MAP_AND_MASK:
        inner = MaskedEncoder(_single(encoder, contract))
    elif contract.kind is OutputKind.TOKENS:
        inner = TokenEncoder(_single(encoder, contract), contract.tokens.prefix if contract.tokens else 0)
    elif contract.kind is OutputKind.SEQUENCE:
        inner = SequenceEncoder(_single(encoder, contract), pool_rows)
    if contract.model_output is None:
        return inner
    if not isinstance(inner, (Backbone, TokenEncoder, SequenceEncoder)):
        raise ValueError(f"{contract.path} returns {contract.returns()}, which no wrapper of backbones.swapping gives")
    main_input_name = getattr(old, "main_input_name", contract.call.input_name)
    config = getattr(old, "config", None)
    return ModelOutputEncoder(inner, contract.model_output, contract.fields, config, main_input_name)


def arrangement(module: nn.Module) -> str:
    """How the wrapper hands on the backbone's map (for the report)."""
    inner = module.inner if isinstance(module, ModelOutputEncoder) else module
    if isinstance(inner, (TokenEncoder, SequenceEncoder)):
        return inner.extra_repr()
    return "the mask sliced as the map: mask[..., ::sh, ::sw]" if isinstance(inner, MaskedEncoder) else "as it is"


def _split(kind: OutputKind, shape: Tuple[int, ...]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """``((N, C), grid)`` of an output shape: ``(h, w)`` of a map, ``(L,)`` of tokens or a sequence."""
    if kind in (OutputKind.TOKENS, OutputKind.SEQUENCE):
        return (shape[0], shape[2]), shape[1:2]
    return shape[:2], shape[2:]


def _compare(size: Pair, seen: Observation, got: Observation) -> Tuple[Optional[str], bool]:
    """A problem at one size (or ``None``), and whether the grids differ."""
    where = f"at {size[0]}x{size[1]}"
    if got.structure != seen.structure:
        return f"{where} it returns {got.kind} ({len(got.shapes)}), not {seen.kind} ({len(seen.shapes)})", False
    old, new = ([_split(seen.kind, s) for s in o.shapes] for o in (seen, got))
    if got.dtype != seen.dtype or [n for n, _ in new] != [n for n, _ in old]:
        return f"{where} it gives {list(got.shapes)} {got.dtype}, not {list(seen.shapes)} {seen.dtype}", False
    if [g for _, g in new] != [g for _, g in old]:
        return None, True
    if seen.mask is not None and (got.mask is None or not torch.equal(got.mask, seen.mask)):
        return f"{where} the returned mask differs (dtype {seen.mask.dtype})", False
    return None, False


def differences(old: EncoderContract, new: nn.Module) -> Tuple[List[str], List[GridChange], Dict[Pair, Observation]]:
    """What differs, at every probe size the old module took: real problems, grid changes (size, old, new), and what
    the new module gave."""
    problems: List[str] = []
    grid_changes: List[GridChange] = []
    observations: Dict[Pair, Observation] = {}
    caller = MetaCaller(new)
    for size, seen in old.observations.items():
        try:
            got = observations[size] = observe(caller, size, old.in_channels, old.call, seen.dtype)
        except Exception as error:  # the replacement refuses a size the old module took
            problems.append(f"at {size[0]}x{size[1]} the new module fails: {type(error).__name__}: {error}")
            continue
        problem, grid_changed = _compare(size, seen, got)
        if problem:
            problems.append(problem)
        elif grid_changed:
            grid_changes.append((size, grids_text(seen), grids_text(got)))
    return problems, grid_changes, observations
