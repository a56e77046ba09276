"""``backbones swap``: which encoders could replace the one inside my model, and at what cost? Never writes files."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from ..swapping import EncoderContract, gflops_text, grid_text, match_encoder, old_side, probe_contract, resolve_path
from ._common import UsageError

__all__ = ["cmd_swap", "load_target"]


def load_target(target: str, kwargs_json: str) -> nn.Module:
    """The model that ``package.module:callable`` or ``path/to/file.py:callable`` returns for ``--kwargs``."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"TARGET must be package.module:callable or path/to/file.py:callable, got {target!r}")
    try:
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
    except json.JSONDecodeError as error:
        raise UsageError(f"--kwargs must be a JSON object: {error}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {kwargs_json!r}")
    module = _import(where)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"{where} has no callable {name!r}")
    try:
        model = factory(**kwargs)
    except Exception as error:  # the user's own code: its failure is a usage error, in one line
        raise UsageError(f"{target}(**{kwargs}) failed: {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _import(where: str) -> Any:
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise UsageError(f"TARGET file {where!r} does not exist")
            spec = importlib.util.spec_from_file_location(f"_backbones_target_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise UsageError(f"TARGET file {where!r} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.parent.resolve()))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.pop(0)
            return module
        return importlib.import_module(where)
    except UsageError:
        raise
    except Exception as error:  # an import error inside the user's module
        raise UsageError(f"cannot import {where}: {type(error).__name__}: {error}") from None


def _example(module: nn.Module, shape: Tuple[int, ...]) -> Any:
    """``--input``'s zero image, with a no-padding bool mask for a forward that takes two arguments."""
    x = torch.zeros(shape)
    required = [p for p in inspect.signature(module.forward).parameters.values() if p.default is p.empty]
    return (x, torch.zeros(shape[0], *shape[2:], dtype=torch.bool)) if len(required) >= 2 else x


def _candidate(model: nn.Module, old: nn.Module, contract: EncoderContract, spec: str, allow: bool) -> Dict[str, Any]:
    try:
        report, _ = match_encoder(model, old, contract, spec, (allow, True, {}))
    except (KeyError, TypeError, ValueError) as error:
        return {"spec": spec, "fits": False, "reason": str(error.args[0] if isinstance(error, KeyError) else error)}
    size = grid_text(report.new.reference_size)
    grid = report.new.grids.get(size, "-")
    return {"spec": spec, "fits": True, "reason": "", "new": report.to_dict()["new"], "changes": report.changes,
            "arrangement": report.arrangement, "grid": {size: grid}}  # fmt: skip


def cmd_swap(args: argparse.Namespace) -> int:
    model = load_target(args.target, args.kwargs)
    try:
        old, full_path = resolve_path(model, args.at)
        example = _example(old, args.input) if args.input else None
        contract = probe_contract(old, full_path, example=example, grid=args.grid)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--at {args.at}: {error}") from None
    current = old_side(old, contract)
    rows = [_candidate(model, old, contract, spec, args.allow_grid_change) for spec in args.to]
    ok = all(row["fits"] for row in rows)
    if args.json:
        encoder = {**current.to_dict(), "returns": contract.returns()}
        print(json.dumps({"target": args.target, "at": full_path, "encoder": encoder, "candidates": rows, "ok": ok},
                         indent=2))  # fmt: skip
        return 0 if ok else 1
    _print(current, contract, rows)
    return 0 if ok else 1


def _print(old: Any, contract: EncoderContract, rows: List[Dict[str, Any]]) -> None:
    print(f"{contract.path}: {old.name}, {old.call}, mask {old.mask}")
    size = f"{old.reference_size[0]}x{old.reference_size[1]}"
    print(f"  in {old.in_channels}, out {', '.join(map(str, old.out_channels))}, stride {old.stride}, "
          f"{old.params / 1e6:.2f} M params, {gflops_text(old.count())} GFLOPs @ {size}")  # fmt: skip
    for row in rows:
        if not row["fits"]:
            print(f"  {row['spec']}: does not fit: {row['reason']}")
            continue
        new, changes = row["new"], row["changes"]
        grid = f"grid changes at {len(changes)} sizes" if changes else "same grids and masks"
        cost = f"{new['params'] / 1e6:.2f} M params, {gflops_text(new['gflops'])} GFLOPs"
        ((size, cells),) = row["grid"].items()
        print(f"  {row['spec']}: fits as {new['name']}: {cost}; {grid}; {cells} at {size}, {row['arrangement']}")
    fits = sum(row["fits"] for row in rows)
    print(f"{'OK' if fits == len(rows) else 'NOT ALL FIT'}: {fits} of {len(rows)} candidates fit")
