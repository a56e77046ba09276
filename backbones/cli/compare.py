"""``backbones compare``: can the candidate replace the reference (channels, grid, masks, real forwards)?"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

import torch

from ..base import Backbone
from ..images import image_sizes
from ..meta import count_flops, meta_call
from ..spec import format_spec, parse_spec
from .common import Size, UsageError, build, stride_text, table

DEFAULT_SIZES = [(54, 46), (128, 316), (311, 1734), (97, 401), (16, 16), (255, 1023)]


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


def cmd_compare(args: argparse.Namespace) -> int:
    specs = [build(spec) for spec in (args.reference, args.candidate)]
    models = [m for _, _, m in specs]
    if not all(isinstance(m, Backbone) for m in models):
        raise UsageError("compare takes single-output specs (no out_indices)")
    if args.images:
        try:
            found = image_sizes(args.images)
        except (OSError, ValueError) as error:
            raise UsageError(f"--images {args.images}: {error}") from error
        sizes = sorted(set(found))
    else:
        found = args.sizes or DEFAULT_SIZES
        sizes = list(dict.fromkeys(found))
    typical = sorted(found, key=lambda s: s[0] * s[1])[len(found) // 2]  # median by area, a size that occurs
    mismatches: List[Dict[str, Any]] = []
    reference, candidate = models
    channels_match = reference.in_channels == candidate.in_channels and reference.out_channels == candidate.out_channels
    generator = torch.Generator().manual_seed(0)
    for h, w in sizes:
        grids = [m.output_size(h, w) for m in models]
        if grids[0] != grids[1]:
            mismatches.append(
                {"size": [h, w], "what": "grid", "reference": list(grids[0]), "candidate": list(grids[1])}
            )
            continue
        mask = torch.rand(1, h, w, generator=generator) > 0.5
        if not torch.equal(reference.downsample_mask(mask), candidate.downsample_mask(mask)):
            mismatches.append(
                {"size": [h, w], "what": "mask", "reference": list(grids[0]), "candidate": list(grids[1])}
            )
    verified = _verify_sample(sizes, args.verify)
    for h, w in verified:
        shapes = [
            tuple(meta_call(m, "forward", torch.empty(1, m.in_channels, h, w, device="meta")).shape) for m in models
        ]
        for model, shape in zip(models, shapes):
            if shape[2:] != model.output_size(h, w):
                mismatches.append(
                    {"size": [h, w], "what": "forward", "reference": list(shapes[0]), "candidate": list(shapes[1])}
                )
    sides = []
    for name, kwargs, model in specs:
        sides.append(
            {
                "spec": format_spec(name, kwargs),
                "in_channels": model.in_channels,
                "out_channels": model.out_channels,
                "output_stride": list(model.output_stride),
                "params": sum(p.numel() for p in model.parameters()),
                "gflops": round(count_flops(model, (1, model.in_channels, *typical)) / 1e9, 4),
            }
        )
    ok = channels_match and not mismatches
    result = {
        "ok": ok,
        "channels_match": channels_match,
        "reference": sides[0],
        "candidate": sides[1],
        "sizes_checked": len(sizes),
        "images": len(found) if args.images else 0,
        "forward_verified": len(verified),
        "typical_size": list(typical),
        "mismatches": mismatches,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        rows = [
            (
                label,
                s["spec"],
                s["in_channels"],
                s["out_channels"],
                stride_text(s["output_stride"]),
                f"{s['params'] / 1e6:.2f} M",
                f"{s['gflops']:.2f}",
            )
            for label, s in zip(("reference", "candidate"), sides)
        ]
        print(table(rows, ["", "spec", "in", "out", "stride", "params", f"GFLOPs @ {typical[0]}x{typical[1]}"]))
        if not channels_match:
            print(_channels_hint(*sides))
        for m in mismatches[: args.show]:
            print(
                f"mismatch at {m['size'][0]}x{m['size'][1]} ({m['what']}): "
                f"reference {m['reference']}, candidate {m['candidate']}"
            )
        source = f"{len(found)} images, " if args.images else ""
        print(
            f"{'OK' if ok else 'NOT SWAPPABLE'}: {source}{len(sizes)} distinct sizes, grids and masks compared on all, "
            f"forward shapes verified on {len(verified)}; {len(mismatches)} mismatches"
        )
    return 0 if ok else 1
