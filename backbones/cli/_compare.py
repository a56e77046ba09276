"""``backbones compare``: can the candidate replace the reference (channels, grid, masks, real forwards)?"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..core import Encoder, count_flops, meta_call, size_problem
from ..registry import format_spec, parse_spec
from ._common import Size, UsageError, build_spec, stride_text, table
from ._images import image_sizes

COMPARE_SIZES = [(54, 46), (128, 316), (311, 1734), (97, 401), (16, 16), (255, 1023)]
"""What `compare` checks without --sizes or --images: formula-like sizes, a tiny and a wide one."""


def _channels_hint(reference: Dict[str, Any], candidate: Dict[str, Any]) -> str:
    """Says which channels differ and the candidate spec that makes them agree."""
    name, options = parse_spec(candidate["spec"])
    for option in ("in_channels", "out_channels"):
        if reference[option] != candidate[option] and isinstance(reference[option], int):
            options[option] = reference[option]
    stride = tuple(reference["output_stride"])
    if stride != tuple(candidate["output_stride"]):
        options["output_stride"] = stride[0] if stride[0] == stride[1] else stride
    return (
        f"channels differ: reference in={reference['in_channels']} out={reference['out_channels']}, candidate "
        f"in={candidate['in_channels']} out={candidate['out_channels']}; try {format_spec(name, options)}"
    )


def _verify_sample(sizes: List[Size], limit: int) -> List[Size]:
    if len(sizes) <= limit:
        return sizes
    ordered = sorted(sizes, key=lambda s: s[0] * s[1])
    step = (len(ordered) - 1) / max(limit - 1, 1)
    return sorted({ordered[round(i * step)] for i in range(limit)})


def _sizes(args: argparse.Namespace) -> Tuple[List[Size], List[Size]]:
    """Every size found (with repeats) and the distinct ones, from ``--images`` or ``--sizes``."""
    if not args.images:
        found = args.sizes or COMPARE_SIZES
        return found, list(dict.fromkeys(found))
    try:
        found = image_sizes(args.images)
    except (OSError, ValueError) as error:
        raise UsageError(f"--images {args.images}: {error}") from error
    return found, sorted(set(found))


def _mismatch(size: Size, what: str, reference: Any, candidate: Any) -> Dict[str, Any]:
    return {"size": list(size), "what": what, "reference": reference, "candidate": candidate}


def _limits_problem(models: List[Encoder], h: int, w: int) -> Optional[Dict[str, Any]]:
    """A size that one side cannot take (above a maximum input size): a mismatch, not a crash."""
    problems = [size_problem(h, w, m.input_limits.bounds()) or "ok" for m in models]
    if problems == ["ok", "ok"]:
        return None
    return _mismatch((h, w), "input limits", *problems)


def _grid_and_mask_mismatches(models: List[Encoder], sizes: List[Size]) -> List[Dict[str, Any]]:
    mismatches = []
    generator = torch.Generator().manual_seed(0)
    reference, candidate = models
    for h, w in sizes:
        limits = _limits_problem(models, h, w)
        if limits is not None:
            mismatches.append(limits)
            continue
        grids = [list(m.output_sizes(h, w)[0]) for m in models]
        mask = torch.rand(1, h, w, generator=generator) > 0.5
        if grids[0] != grids[1]:
            mismatches.append(_mismatch((h, w), "grid", *grids))
        elif not torch.equal(reference.downsample_masks(mask)[0], candidate.downsample_masks(mask)[0]):
            mismatches.append(_mismatch((h, w), "mask", *grids))
    return mismatches


def _forward_mismatches(models: List[Encoder], sizes: List[Size]) -> List[Dict[str, Any]]:
    mismatches = []
    for h, w in sizes:
        if _limits_problem(models, h, w) is not None:
            continue
        shapes = [
            list(meta_call(m, "forward_outputs", torch.empty(1, m.in_channels, h, w, device="meta"))[0].shape)
            for m in models
        ]
        if any(tuple(shape[2:]) != m.output_sizes(h, w)[0] for m, shape in zip(models, shapes)):
            mismatches.append(_mismatch((h, w), "forward", *shapes))
    return mismatches


def _side(spec: Tuple[str, Dict[str, Any], Encoder], typical: Size) -> Dict[str, Any]:
    name, kwargs, model = spec
    return {
        "spec": format_spec(name, kwargs),
        "in_channels": model.in_channels,
        "out_channels": model.output_info[0].channels,
        "output_stride": list(model.output_info[0].stride),
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": round(count_flops(model, (1, model.in_channels, *typical)) / 1e9, 4),
    }


def _print(result: Dict[str, Any], show: int) -> None:
    sides = [result["reference"], result["candidate"]]
    rows = [
        (label, s["spec"], s["in_channels"], s["out_channels"], stride_text(s["output_stride"]),
         f"{s['params'] / 1e6:.2f} M", f"{s['gflops']:.2f}")
        for label, s in zip(("reference", "candidate"), sides)
    ]  # fmt: skip
    typical = result["typical_size"]
    print(table(rows, ["", "spec", "in", "out", "stride", "params", f"GFLOPs @ {typical[0]}x{typical[1]}"]))
    if not result["channels_match"]:
        print(_channels_hint(*sides))
    for m in result["mismatches"][:show]:
        size = f"{m['size'][0]}x{m['size'][1]}"
        print(f"mismatch at {size} ({m['what']}): reference {m['reference']}, candidate {m['candidate']}")
    source = f"{result['images']} images, " if result["images"] else ""
    print(
        f"{'OK' if result['ok'] else 'NOT SWAPPABLE'}: {source}{result['sizes_checked']} distinct sizes, grids and "
        f"masks compared on all, forward shapes verified on {result['forward_verified']}; "
        f"{len(result['mismatches'])} mismatches"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    specs = [build_spec(spec) for spec in (args.reference, args.candidate)]
    models = [m for _, _, m in specs]
    if any(len(m.output_info) != 1 for m in models):
        raise UsageError("compare takes single-output specs (no out_indices)")
    found, sizes = _sizes(args)
    taken = [size for size in found if _limits_problem(models, *size) is None] or [
        min(found, key=lambda s: s[0] * s[1])
    ]
    typical = sorted(taken, key=lambda s: s[0] * s[1])[len(taken) // 2]  # median by area of sizes both sides take
    verified = _verify_sample(sizes, args.verify)
    mismatches = _grid_and_mask_mismatches(models, sizes) + _forward_mismatches(models, verified)
    channels = [(m.in_channels, m.output_info[0].channels) for m in models]
    channels_match = channels[0] == channels[1]
    result = {
        "ok": channels_match and not mismatches,
        "channels_match": channels_match,
        "reference": _side(specs[0], typical),
        "candidate": _side(specs[1], typical),
        "sizes_checked": len(sizes),
        "images": len(found) if args.images else 0,
        "forward_verified": len(verified),
        "typical_size": list(typical),
        "mismatches": mismatches,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result, args.show)
    return 0 if result["ok"] else 1
