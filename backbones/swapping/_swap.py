"""``swap``: replace the encoder inside someone's model in one call, and keep the rest of its checkpoint.

    >>> report = swap(model, "encoder.model", "resnet50")       # doctest: +SKIP
    >>> report.load_rest("epoch=123.ckpt")                       # doctest: +SKIP

Find the submodule at ``path``; infer its contract by probing (:mod:`backbones.probing`); build the backbone that
matches it (channels, stride, input channels; ``build_options`` override); wrap it to the old call convention
(``MaskedEncoder`` for ``(x, mask) -> (feature, mask)``); verify at every probe size that the new module returns the
same structure, dtypes, channels, grid and masks; replace it in place (same device, dtype and mode). Nothing is
replaced when any step fails. This module composes the core and the adapters: it sits above both.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from ..core import Backbone, Encoder, Pair, check_bool, check_pair
from ..registry import build_backbone, build_on_meta, format_spec, parse_spec
from ._probe import EncoderContract, Observation, observe, probe_contract
from ._report import EncoderSide, SwapReport, describe_side, grid_text
from ._wrappers import MaskedEncoder

__all__ = ["SwapReport", "swap"]

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def checked_sizes(sizes: object) -> Optional[List[Pair]]:
    """``sizes=`` as a list of ``(H, W)`` pairs of ints >= 1 (``None`` stays: the default probe sizes)."""
    if sizes is None:
        return None
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"sizes must be a non-empty list of (H, W) pairs, got {sizes!r}")
    return [check_pair(size, "each of sizes") for size in sizes]


def resolve_path(model: nn.Module, path: str) -> Tuple[nn.Module, str, nn.Module, str]:
    """``(parent, key, module, full_path)`` of the submodule at a dotted ``path`` (integers index ``Sequential`` and
    ``ModuleList``, keys ``ModuleDict``); a DataParallel/DDP model is searched inside its ``module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, str) or not path.strip(". "):
        raise ValueError(f"path must name a submodule such as 'encoder.model' or 'cnn', got {path!r}")
    if isinstance(model, _WRAPPERS) and not path.startswith("module."):
        path = f"module.{path}"
    parent, module, walked = model, model, cast(List[str], [])
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            _path_error(model, path, walked, children)
        parent, module = module, children[part]
        walked.append(part)
    return parent, walked[-1], module, path


def _path_error(model: nn.Module, path: str, walked: List[str], children: Dict[str, nn.Module]) -> None:
    where = ".".join(walked) or type(model).__name__
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(path, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"{type(model).__name__} has no submodule {path!r}: {where} has {', '.join(children) or 'no children'}{hint}"
    )


def _spec_parts(spec: Union[str, nn.Module]) -> Tuple[str, Dict[str, Any]]:
    if not isinstance(spec, str):
        raise TypeError(
            f"spec must be a backbone name, a spec string ('resnet50:dilate=true') or a built Backbone or "
            f"FeaturePyramid, got {type(spec).__name__}"
        )
    return parse_spec(spec)


def _stride_option(stride: Pair) -> Union[int, Pair]:
    return stride[0] if stride[0] == stride[1] else stride


def _pyramid_options(name: str, contract: EncoderContract, options: Dict[str, Any]) -> Dict[str, Any]:
    """out_indices: each old output's stride is the deepest stage of ``name`` at that stride (its native layout)."""
    native = build_on_meta(name, **{k: v for k, v in options.items() if k not in ("out_channels", "out_indices")})
    strides = {info.stride: info.index for info in native.feature_info}
    missing = [s for s in contract.strides if s not in strides]
    if missing:
        raise ValueError(
            f"the pyramid at {contract.name} has outputs at strides {list(contract.strides)}; {name}'s stages are at "
            f"{sorted(strides)}, without {missing}"
        )
    return {"out_indices": tuple(strides[s] for s in contract.strides), "out_channels": contract.out_channels}


def _build(
    spec: Union[str, nn.Module], contract: EncoderContract, build_options: Dict[str, Any]
) -> Tuple[Encoder, str]:
    """The replacement backbone and how the report names it."""
    if isinstance(spec, Encoder):
        return spec, type(spec).__name__
    name, spec_options = _spec_parts(spec)
    options: Dict[str, Any] = {"in_channels": contract.in_channels}
    if len(contract.axes) == 1:
        options.update(out_channels=contract.out_channels[0], output_stride=_stride_option(contract.strides[0]))
    options.update(spec_options, **build_options)
    given = {**spec_options, **build_options}
    if "strides" in given and "output_stride" not in given:  # the user's stages decide the stride
        options.pop("output_stride", None)
    if len(contract.axes) > 1 and "out_indices" not in options:
        options.update(_pyramid_options(name, contract, options))
    try:
        encoder = build_backbone(name, **options)
    except ValueError as error:
        raise ValueError(
            f"{contract.name} gives {_wanted(contract)} (inferred); {name} cannot be built to match: {error}"
        ) from error
    return encoder, format_spec(name, {k: v for k, v in options.items() if k != "pretrained" or v})


def _wanted(contract: EncoderContract) -> str:
    outputs = [f"{c} channels at stride {grid_text(s)}" for c, s in zip(contract.out_channels, contract.strides)]
    return f"{', '.join(outputs)} from {contract.in_channels} input channels"


def _wrap(encoder: nn.Module, contract: EncoderContract) -> nn.Module:
    """The new encoder in the old module's call convention."""
    if contract.returns == "(feature, mask)":
        if not isinstance(encoder, Backbone):
            raise ValueError(f"{contract.name} returns (feature, mask): the replacement must have one output")
        return MaskedEncoder(encoder)
    if contract.call.mask is not None:
        raise ValueError(
            f"{contract.name} takes (x, mask) but returns {contract.returns}, a call no wrapper of "
            f"backbones.adapters gives; wrap the backbone yourself"
        )
    return encoder


def _differences(
    old: EncoderContract, new: nn.Module
) -> Tuple[List[str], List[Tuple[Pair, str, str]], Dict[Pair, Observation]]:
    """What differs, at every probe size the old module took: real problems, grid changes (size, old, new), and
    what the new module gave."""
    problems, grid_changes, observations = [], [], {}
    for size, seen in old.observations.items():
        try:
            got = observations[size] = observe(new, size, old.in_channels, old.call, seen.dtype)
        except Exception as error:  # the replacement refuses a size the old module took
            problems.append(f"at {size[0]}x{size[1]} the new module fails: {type(error).__name__}: {error}")
            continue
        if got.returns != seen.returns or len(got.shapes) != len(seen.shapes):
            problems.append(f"at {size[0]}x{size[1]} it returns {got.returns}, not {seen.returns}")
        elif got.dtype != seen.dtype or [s[1] for s in got.shapes] != [s[1] for s in seen.shapes]:
            problems.append(f"at {size[0]}x{size[1]} it gives {got.shapes} {got.dtype}, not {seen.shapes} {seen.dtype}")
        elif [s[-2:] for s in got.shapes] != [s[-2:] for s in seen.shapes]:
            grid_changes.append((size, _grids(seen.shapes), _grids(got.shapes)))
        elif seen.mask is not None and (got.mask is None or not torch.equal(got.mask, seen.mask)):
            problems.append(f"at {size[0]}x{size[1]} the returned mask differs (dtype {seen.mask.dtype})")
    return problems, grid_changes, observations


def _grids(shapes: Sequence[Tuple[int, ...]]) -> str:
    return ", ".join(f"{s[-2]}x{s[-1]}" for s in shapes)


def _checked(
    old: EncoderContract, new: nn.Module, spec_text: str, allow_grid_change: bool
) -> Tuple[List[str], Dict[Pair, Observation]]:
    """The changes to report and the new module's observations; a ValueError for anything else that differs."""
    problems, grid_changes, observations = _differences(old, new)
    if problems:
        raise ValueError(f"{spec_text} does not fit the encoder at {old.name}: " + "; ".join(problems[:3]))
    if grid_changes and not allow_grid_change:
        (h, w), before, after = grid_changes[0]
        rounding = ", ".join(f"{a.text()} x {b.text()}" for a, b in old.axes)
        raise ValueError(
            f"the encoder at {old.name} does not give the ceil grid (its stride and rounding per axis: {rounding}): "
            f"at {h}x{w} it gives {before}, {spec_text} gives {after} ({len(grid_changes)} of "
            f"{len(old.observations)} probe sizes differ); pass allow_grid_change=True if the rest of the model "
            f"takes the new grid (a CTC head takes any sequence length)"
        )
    return [f"grid at {h}x{w}: {before} -> {after}" for (h, w), before, after in grid_changes], observations


def _replace(parent: nn.Module, key: str, old: nn.Module, new: nn.Module) -> None:
    """``new`` in ``old``'s place, on its device, in its dtype and mode."""
    tensor = next((t for t in [*old.parameters(), *old.buffers()] if t.is_floating_point()), None)
    if tensor is not None:
        new.to(device=tensor.device, dtype=tensor.dtype)
    new.train(old.training)
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and key.isdigit():
        parent[int(key)] = new
    else:
        setattr(parent, key, new)


def old_side(old: nn.Module, contract: EncoderContract) -> EncoderSide:
    """The probed encoder as one side of a report."""
    stride = "; ".join(f"{h.text()} x {w.text()}" for h, w in contract.axes)
    return describe_side(type(old).__name__, old, contract, contract.observations, stride)


def match_encoder(
    model: nn.Module,
    old: nn.Module,
    contract: EncoderContract,
    spec: Union[str, nn.Module],
    allow_grid_change: bool,
    dry_run: bool,
    build_options: Dict[str, Any],
) -> Tuple[SwapReport, nn.Module]:
    """Build ``spec`` to the probed ``contract``, wrap and verify it: the report and the module to put in place."""
    encoder, spec_text = _build(spec, contract, build_options)
    new = _wrap(encoder, contract)
    changes, observations = _checked(contract, new, spec_text, allow_grid_change)
    new_stride = "; ".join(f"{info.stride[0]} x {info.stride[1]}" for info in encoder.output_info)
    report = SwapReport(
        path=contract.name, changes=changes, dry_run=dry_run, model=model, old=old_side(old, contract),
        new=describe_side(spec_text, new, contract, observations, new_stride),
        skipped={grid_text(size): reason for size, reason in contract.skipped.items()},
    )  # fmt: skip
    return report, new


def swap(
    model: nn.Module,
    path: str,
    spec: Union[str, nn.Module],
    *,
    example: Any = None,
    sizes: Optional[Sequence[Pair]] = None,
    allow_grid_change: bool = False,
    dry_run: bool = False,
    **build_options: Any,
) -> SwapReport:
    """Replace the encoder at ``path`` inside ``model`` with the backbone ``spec`` built to its contract.

    Args:
        model: the user's model (a DataParallel/DDP wrapper is searched inside its ``module``).
        path: the encoder's dotted path, e.g. ``"encoder.model"`` (integers index ``Sequential``s).
        spec: a name (``"resnet50"``), a spec string (``"resnet50:dilate=true"``) or a built encoder.
        example: a tensor or a ``(x, mask)`` tuple of the module's arguments: its convention, channels, mask
            layout and size replace the guessing.
        sizes: ``(H, W)`` probe sizes (default: text-line and formula sizes; those the module refuses are skipped).
        allow_grid_change: accept a new grid where the old one is not the ceil grid (CRNN's extra column).
        dry_run: probe, build and verify, but do not replace.
        **build_options: ``build_backbone`` options that override the inferred ones (``pretrained=True``, ...).

    Returns:
        A :class:`SwapReport` (old and new side by side; ``load_rest`` loads the rest of an old checkpoint).

    Raises:
        ValueError, TypeError, KeyError: a wrong path, spec or option, a contract that cannot be inferred or met,
            or a grid change without ``allow_grid_change``. The model is unchanged then.
    """
    check_bool(allow_grid_change, "allow_grid_change")
    check_bool(dry_run, "dry_run")
    parent, key, old, full_path = resolve_path(model, path)
    contract = probe_contract(old, full_path, example=example, sizes=checked_sizes(sizes))
    report, new = match_encoder(model, old, contract, spec, allow_grid_change, dry_run, build_options)
    if not dry_run:
        _replace(parent, key, old, new)
    return report
