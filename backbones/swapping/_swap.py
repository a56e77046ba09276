"""``swap``: replace the encoder inside someone's model in one call, and keep the rest of its checkpoint.

    >>> report = swap(model, "encoder.model", "resnet50")       # doctest: +SKIP
    >>> report.load_rest("epoch=123.ckpt")                       # doctest: +SKIP

Find the submodule at ``path`` (and every other name the model holds it under); infer its contract by probing
(``_infer``); build the backbone that matches it (channels, stride, input channels; ``build_options`` override); wrap
it in the old call convention and output layout (``_wrappers``); verify at every probe size that the new module
returns the same structure, dtypes, channels, grid and masks; replace it under every name (same device, dtype and
mode). Nothing is replaced when any step fails.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

from torch import nn

from ..core import Encoder, Pair, check_bool, check_sizes
from ..registry import get_entry, parse_spec
from ._infer import probe_contract
from ._match import GridChange, arrangement, build_for, differences, wrap
from ._records import EncoderContract, Observation, OutputKind
from ._report import WRAPPERS, EncoderSide, SwapReport, describe_side, grid_text

__all__ = ["match_encoder", "old_side", "resolve_path", "swap"]


def resolve_path(model: nn.Module, path: str) -> Tuple[nn.Module, str]:
    """``(module, full_path)`` of the submodule at a dotted ``path`` (integers index ``Sequential`` and
    ``ModuleList``, keys ``ModuleDict``); a DataParallel/DDP model is searched inside its ``module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, str) or not path.strip(". "):
        raise ValueError(f"path must name a submodule such as 'encoder.model' or 'cnn', got {path!r}")
    if isinstance(model, WRAPPERS) and not path.startswith("module."):
        path = f"module.{path}"
    module, walked = model, cast(List[str], [])
    for part in path.split("."):
        children = dict(module.named_children())
        if part not in children:
            _path_error(model, path, walked, children)
        module = children[part]
        walked.append(part)
    return module, path


def _path_error(model: nn.Module, path: str, walked: List[str], children: Dict[str, nn.Module]) -> None:
    where = ".".join(walked) or type(model).__name__
    names = [name for name, _ in model.named_modules() if name]
    close = difflib.get_close_matches(path, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"{type(model).__name__} has no submodule {path!r}: {where} has {', '.join(children) or 'no children'}{hint}"
    )


def holders(model: nn.Module, module: nn.Module, path: str) -> List[str]:
    """Every name under which ``model`` holds ``module`` (by identity), ``path`` first: MASTER keeps its encoder as
    ``conv_embedding_gc`` and ``encode_stage.0``."""
    names = [name for name, m in model.named_modules(remove_duplicate=False) if m is module]
    return [path] + [name for name in names if name != path]


def _checked_spec(spec: Union[str, nn.Module]) -> None:
    """A spec string names a registered backbone (checked before anything is probed)."""
    if isinstance(spec, Encoder):
        return
    if not isinstance(spec, str):
        raise TypeError(
            f"spec must be a backbone name, a spec string ('resnet50:dilate=true') or a built Backbone or "
            f"FeaturePyramid, got {type(spec).__name__}"
        )
    get_entry(parse_spec(spec)[0])


def _checked(
    old: EncoderContract, new: nn.Module, spec_text: str, stride: str, allow_grid_change: bool
) -> Tuple[List[str], Dict[Pair, Observation]]:
    """The changes to report and the new module's observations; a ValueError for anything else that differs."""
    problems, grid_changes, observations = differences(old, new)
    if problems:
        raise ValueError(f"{spec_text} does not fit the encoder at {old.path}: " + "; ".join(problems[:3]))
    if grid_changes:
        _refuse_grid_change(old, grid_changes, spec_text, stride, allow_grid_change)
    return [f"grid at {grid_text(size)}: {before} -> {after}" for size, before, after in grid_changes], observations


def _refuse_grid_change(
    old: EncoderContract, changes: List[GridChange], spec_text: str, stride: str, allow_grid_change: bool
) -> None:
    """A grid change is a stride mismatch where the old grid is the ceil grid of its strides at every size it takes;
    elsewhere (CRNN's extra column) it needs ``allow_grid_change=True``."""
    (h, w), before, after = changes[0]
    counted = f"({len(changes)} of {len(old.observations)} probe sizes differ)"
    if all(old.ceil_grid_at(size) for size in old.observations):
        raise ValueError(
            f"{spec_text} gives another grid than the encoder at {old.path}: at {h}x{w} it gives {after}, not "
            f"{before} {counted}; the encoder's stride is {old.stride_text()}, {spec_text}'s {stride}: build it at "
            f"the encoder's stride"
        )
    if not allow_grid_change:
        raise ValueError(
            f"the encoder at {old.path} does not give the ceil grid (its stride and rounding per axis: "
            f"{old.stride_text()}): at {h}x{w} it gives {before}, {spec_text} gives {after} {counted}; pass "
            f"allow_grid_change=True if the rest of the model takes the new grid (a CTC head takes any sequence length)"
        )


def old_side(old: nn.Module, contract: EncoderContract) -> EncoderSide:
    """The probed encoder as one side of a report."""
    return describe_side(type(old).__name__, old, contract, contract.observations, contract.stride_text())


def match_encoder(
    model: nn.Module,
    old: nn.Module,
    contract: EncoderContract,
    spec: Union[str, nn.Module],
    options: Tuple[bool, bool, Dict[str, Any]],
    paths: Optional[List[str]] = None,
) -> Tuple[SwapReport, nn.Module]:
    """Build ``spec`` to the probed ``contract``, wrap and verify it: the report and the module to put in place.
    ``options``: ``(allow_grid_change, dry_run, build_options)``."""
    allow_grid_change, dry_run, build_options = options
    encoder, spec_text, pool_rows = build_for(spec, contract, build_options)
    new = wrap(encoder, contract, old, pool_rows)
    stride = "; ".join(f"{info.stride[0]} x {info.stride[1]}" for info in encoder.output_info)
    changes, observations = _checked(contract, new, spec_text, stride, allow_grid_change)
    if pool_rows and contract.kind is OutputKind.SEQUENCE:
        changes.append("the map's rows are averaged into the sequence")
    report = SwapReport(
        paths=paths or [contract.path], old=old_side(old, contract),
        new=describe_side(spec_text, new, contract, observations, stride), arrangement=arrangement(new),
        changes=changes, dry_run=dry_run, skipped={grid_text(size): why for size, why in contract.skipped.items()},
        model=model,
    )  # fmt: skip
    return report, new


def _replace(model: nn.Module, names: List[str], old: nn.Module, new: nn.Module) -> None:
    """``new`` in ``old``'s place under every name, on its device, in its dtype and mode."""
    tensor = next((t for t in [*old.parameters(), *old.buffers()] if t.is_floating_point()), None)
    if tensor is not None:
        new.to(device=tensor.device, dtype=tensor.dtype)
    new.train(old.training)
    for name in names:
        parent_name, _, key = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if isinstance(parent, (nn.Sequential, nn.ModuleList)) and key.isdigit():
            parent[int(key)] = new
        else:
            setattr(parent, key, new)


def swap(
    model: nn.Module,
    path: str,
    spec: Union[str, nn.Module],
    *,
    example: Any = None,
    sizes: Optional[Sequence[Pair]] = None,
    allow_grid_change: bool = False,
    dry_run: bool = False,
    grid: Optional[Pair] = None,
    **build_options: Any,
) -> SwapReport:
    """Replace the encoder at ``path`` inside ``model`` with the backbone ``spec`` built to its contract.

    Args:
        model: the user's model (a DataParallel/DDP wrapper is searched inside its ``module``).
        path: the encoder's dotted path, e.g. ``"encoder.model"``; other names of the same module are replaced too.
        spec: a name (``"resnet50"``), a spec string (``"resnet50:dilate=true"``) or a built encoder.
        example: a tensor or a ``(x, mask)`` tuple of the module's arguments: its convention, channels, mask
            layout and size replace the guessing.
        sizes: ``(H, W)`` probe sizes (default: the size the module declares, then text-line and formula sizes;
            those the module refuses are skipped).
        allow_grid_change: accept a new grid where the old one is not the ceil grid (CRNN's extra column).
        dry_run: probe, build and verify, but do not replace.
        grid: for an encoder that returns tokens, the ``(h, w)`` grid behind them at the first size it takes, where
            the probes cannot tell (the error says when).
        **build_options: ``build_backbone`` options that override the inferred ones (``pretrained=True``, ...).

    Returns:
        A :class:`SwapReport` (old and new side by side; ``load_rest`` loads the rest of an old checkpoint).

    Raises:
        ValueError, TypeError, KeyError: a wrong path, spec or option, a contract that cannot be inferred or met,
            or a grid change without ``allow_grid_change``. The model is unchanged then.
    """
    check_bool(allow_grid_change, "allow_grid_change")
    check_bool(dry_run, "dry_run")
    _checked_spec(spec)
    old, full_path = resolve_path(model, path)
    names = holders(model, old, full_path)
    probe_sizes = check_sizes(sizes, "sizes") if sizes is not None else None
    contract = probe_contract(old, full_path, example=example, sizes=probe_sizes, grid=grid)
    report, new = match_encoder(model, old, contract, spec, (allow_grid_change, dry_run, build_options), names)
    if not dry_run:
        _replace(model, names, old, new)
    return report
