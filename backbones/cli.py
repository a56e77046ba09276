"""``backbones`` command line: ``list``, ``check``, ``compare``, ``weights``. Exit 0 = contract holds (the
file loads), 1 = it does not, 2 = usage error. ``--json`` prints one JSON object for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .build import build_backbone, weight_sets
from .images import image_sizes
from .loading import WeightsMismatchError
from .meta import count_flops, meta_call
from .registry import get_entry, list_backbones
from .report import build_on_meta, describe
from .sources import CheckpointReadError, cache_dir, choose_weight_set, is_checkpoint_path
from .spec import format_spec, parse_spec, parse_value

__all__ = ["main"]

Size = Tuple[int, int]


class UsageError(Exception):
    """Bad arguments: exit code 2."""


def _pair_or_int(text: str) -> Any:
    value = parse_value(text)
    if isinstance(value, int) or (
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    ):
        return value
    raise argparse.ArgumentTypeError(f"expected an int or SHxSW, got {text!r}")


def _shape(text: str) -> Tuple[int, ...]:
    value = parse_value(text)
    if not (isinstance(value, tuple) and len(value) == 4 and all(v >= 1 for v in value)):
        raise argparse.ArgumentTypeError(f"expected NxCxHxW with positive ints, got {text!r}")
    return value


def _sizes(text: str) -> List[Size]:
    sizes = []
    for item in filter(None, text.split(",")):
        value = parse_value(item)
        if not (isinstance(value, tuple) and len(value) == 2 and min(value) >= 1):
            raise argparse.ArgumentTypeError(f"expected HxW[,HxW...] with positive ints, got {item!r}")
        sizes.append(value)
    return sizes


def _check_pretrained(name: str, pretrained: Any) -> None:
    """``pretrained=`` of a spec: the file exists or the tag is known (nothing is read or downloaded)."""
    if pretrained in (None, False, True):
        return
    if is_checkpoint_path(pretrained):
        if not Path(pretrained).is_file():
            raise ValueError(f"pretrained file {str(pretrained)!r} does not exist or is not a file")
        return
    choose_weight_set(name, get_entry(name).weights, pretrained)


def _build(spec: str, overrides: Optional[Dict[str, Any]] = None):
    try:
        name, kwargs = parse_spec(spec)
        kwargs.update({k: v for k, v in (overrides or {}).items() if v is not None})
        _check_pretrained(name, kwargs.get("pretrained"))
        return name, kwargs, build_on_meta(name, **kwargs)
    except (KeyError, TypeError, ValueError, NotImplementedError) as error:
        raise UsageError(str(error) if not isinstance(error, KeyError) else error.args[0]) from error


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _stride_text(stride: Sequence[int]) -> str:
    return str(stride[0]) if stride[0] == stride[1] else f"{stride[0]}x{stride[1]}"


# -- list ---------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    try:
        names = list_backbones(args.pattern)
    except KeyError as error:
        raise UsageError(error.args[0]) from error
    if not names:
        every = len(list_backbones())
        print(
            f"backbones list: no backbone matches {args.pattern!r} (`backbones list` shows all {every}; "
            f"timm's models: `backbones list 'timm:{args.pattern or '*'}'`)",
            file=sys.stderr,
        )
        return 1
    if args.pattern is not None and ":" in args.pattern:  # a namespace: names only, nothing built
        print(json.dumps({"backbones": names}, indent=2) if args.json else "\n".join(names))
        return 0
    rows = []
    for name in names:
        model = build_on_meta(name)
        entry = get_entry(name)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "in_channels": model.in_channels,
                "out_channels": model.out_channels,
                "output_stride": list(model.output_stride),
                "params": sum(p.numel() for p in model.parameters()),
                "description": entry.description,
            }
        )
    if args.json:
        print(json.dumps({"backbones": rows}, indent=2))
        return 0
    table = [
        (r["name"], r["family"], r["in_channels"], r["out_channels"], _stride_text(r["output_stride"]),
         f"{r['params'] / 1e6:.2f} M")
        for r in rows
    ]  # fmt: skip
    print(_table(table, ["name", "family", "in", "out channels", "stride", "params"]))
    return 0


# -- check --------------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    overrides = {
        "out_channels": args.out_channels,
        "output_stride": args.output_stride,
        "strides": tuple(args.strides) if args.strides else None,
        "dilate": True if args.dilate else None,
        "in_channels": args.in_channels,
    }
    name, kwargs, model = _build(args.spec, overrides)
    input_shape = args.input or (1, model.in_channels, 224, 224)
    if input_shape[1] != model.in_channels:
        raise UsageError(f"--input has {input_shape[1]} channels but {name} takes in_channels={model.in_channels}")
    report = describe(model, input_shape, name, kwargs)
    if args.json:
        print(json.dumps({"spec": format_spec(name, kwargs), **report.to_dict()}, indent=2))
    else:
        print(f"{format_spec(name, kwargs)}  input {'x'.join(map(str, input_shape))}")
        rows = [
            (s.index, s.name, s.channels, _stride_text(s.stride), _stride_text(s.dilation), list(s.shape))
            for s in report.stages
        ]
        print(_table(rows, ["stage", "name", "channels", "stride", "dilation", "output shape"]))
        for got, expected in zip(report.output_shapes, report.expected_shapes):
            verdict = "ok" if got == expected else f"BROKEN (contract says {list(expected)})"
            print(f"output {list(got)}: {verdict}")
        print(f"params {report.params:,}   GFLOPs {report.gflops:.2f}")
    return 0 if report.contract_ok else 1


# -- weights ------------------------------------------------------------------------------------------
def cmd_weights(args: argparse.Namespace) -> int:
    try:
        name, kwargs = parse_spec(args.spec)
        entry = get_entry(name)
        sets = weight_sets(name)
    except (KeyError, ValueError) as error:
        raise UsageError(str(error) if not isinstance(error, KeyError) else error.args[0]) from error
    if args.file is None:
        default = choose_weight_set(name, entry.weights, True).tag if sets else None
        rows = [
            {"tag": s.tag, "source": s.source, "default": s.tag == default, "cached": s.cached_path.is_file(),
             "file": str(s.cached_path), "url": s.url}
            for s in sets.values()
        ]  # fmt: skip
        if args.json:
            print(json.dumps({"name": name, "cache_dir": str(cache_dir()), "weights": rows}, indent=2))
        elif not rows:
            print(f"{name} has no published weights; load a checkpoint with --file PATH (pretrained=PATH)")
        else:
            table = [(r["tag"] + (" (True)" if r["default"] else ""), r["source"], "yes" if r["cached"] else "no",
                      Path(r["file"]).name) for r in rows]  # fmt: skip
            print(_table(table, ["pretrained=", "source", "cached", f"file in {cache_dir()}"]))
        return 0
    try:
        model = build_backbone(name, **{**kwargs, "pretrained": args.file})
    except (FileNotFoundError, CheckpointReadError) as error:
        raise UsageError(f"--file {args.file}: {error}") from error
    except (WeightsMismatchError, ValueError, TypeError) as error:
        if args.json:
            print(json.dumps({"spec": args.spec, "file": args.file, "ok": False, "error": str(error)}, indent=2))
        else:
            print(f"{format_spec(name, kwargs)} cannot load {args.file}:\n{error}")
        return 1
    report = model.pretrained_report
    if args.json:
        print(json.dumps({"spec": args.spec, "file": args.file, "ok": True, "report": vars(report)}, indent=2))
    else:
        print(f"{format_spec(name, kwargs)}: {report}")
    return 0


# -- compare ------------------------------------------------------------------------------------------
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
    specs = [_build(spec) for spec in (args.reference, args.candidate)]
    models = [m for _, _, m in specs]
    if any(m.multi_output for m in models):
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
                _stride_text(s["output_stride"]),
                f"{s['params'] / 1e6:.2f} M",
                f"{s['gflops']:.2f}",
            )
            for label, s in zip(("reference", "candidate"), sides)
        ]
        print(_table(rows, ["", "spec", "in", "out", "stride", "params", f"GFLOPs @ {typical[0]}x{typical[1]}"]))
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


# -- entry point --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backbones",
        description="Check that a backbone swap fits before training. SPEC = NAME or NAME:key=value,... "
        "(build_backbone keywords; tuples as 1x1x2x2 or 16x4; per-stage tuples as 1/2x1/2x1/2x1).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="registered backbones with native channels, stride and parameters")
    p.add_argument("pattern", nargs="?", help="shell-style filter such as 'resnet*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_list)

    p = commands.add_parser("check", help="per-stage shapes, parameters and GFLOPs for one input (meta device)")
    p.add_argument("spec", help="NAME or NAME:key=value,...")
    p.add_argument("--out-channels", type=int, help="channels of the 1x1 adapter's output")
    p.add_argument("--output-stride", type=_pair_or_int, help="S or SHxSW")
    p.add_argument("--strides", type=_pair_or_int, nargs="+", metavar="S", help="per-stage strides, e.g. 1 2x1 2x1 2x1")
    p.add_argument("--dilate", action="store_true", help="turn removed strides into dilation")
    p.add_argument("--in-channels", type=int, help="input channels")
    p.add_argument("--input", type=_shape, metavar="NxCxHxW", help="input shape (default 1xCx224x224)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_check)

    p = commands.add_parser("weights", help="weight tags of a backbone and their cache state, or test-load a file")
    p.add_argument("spec", help="NAME or NAME:key=value,... (the model a --file is loaded into)")
    p.add_argument("--file", metavar="PATH", help="load this .pth/.pt/.safetensors file and report what fitted")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_weights)

    p = commands.add_parser("compare", help="does CANDIDATE give REFERENCE's channels, output grid and masks?")
    p.add_argument("reference", help="SPEC of the encoder in use")
    p.add_argument("candidate", help="SPEC of the replacement")
    p.add_argument("--sizes", type=_sizes, metavar="HxW,...", help="input sizes to compare")
    p.add_argument("--images", metavar="PATH", help="folder or .tar[.gz] of images; their header sizes are compared")
    p.add_argument(
        "--verify", type=int, default=24, metavar="N", help="sizes also run through both forwards (default 24)"
    )
    p.add_argument("--show", type=int, default=10, metavar="N", help="mismatches to print (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_compare)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"backbones {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
