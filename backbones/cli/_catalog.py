"""``backbones list``, ``check`` and ``weights``: what is registered, per-stage shapes, weight tags and files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from ..core import size_problem
from ..registry import build_backbone, build_on_meta, format_spec, get_entry, list_backbones, weight_sets
from ..weights import CheckpointReadError, WeightsMismatchError, cache_dir, default_weight_set
from ._common import UsageError, build_spec, report_error, stride_text, table
from ._report import describe


def cmd_list(args: argparse.Namespace) -> int:
    try:
        names = list_backbones(args.pattern)
    except KeyError as error:
        raise UsageError(error.args[0]) from error
    if args.family:
        families = sorted({get_entry(name).family for name in list_backbones()})
        if args.family not in families:
            raise UsageError(f"--family must be one of {', '.join(families)}, got {args.family!r}")
        names = [name for name in names if ":" not in name and get_entry(name).family == args.family]
    if not names:
        pattern, every = args.pattern or "*", len(list_backbones())
        family = f" in family {args.family!r}" if args.family else ""
        timm = "" if ":" in pattern else f"; timm's models: `backbones list 'timm:{pattern}'`"
        return report_error(
            args, f"no backbone matches {pattern!r}{family} (`backbones list` shows all {every}{timm})", 1
        )
    if args.pattern is not None and ":" in args.pattern:  # a namespace: names only, nothing built
        print(json.dumps({"backbones": names}, indent=2) if args.json else "\n".join(names))
        return 0
    rows = [_row(name) for name in names]
    if args.json:
        print(json.dumps({"backbones": rows}, indent=2))
        return 0
    lines = [
        (r["name"], r["family"], r["in_channels"], r["out_channels"], stride_text(r["output_stride"]),
         f"{r['params'] / 1e6:.2f} M")
        for r in rows
    ]  # fmt: skip
    print(table(lines, ["name", "family", "in", "out channels", "stride", "params"]))
    return 0


def _row(name: str) -> Dict[str, Any]:
    """What ``backbones list`` says of a name: its family and native output, built on the meta device."""
    model, entry = build_on_meta(name), get_entry(name)
    output = model.output_info[0]
    return {
        "name": name,
        "family": entry.family,
        "in_channels": model.in_channels,
        "out_channels": output.channels,
        "output_stride": list(output.stride),
        "params": sum(p.numel() for p in model.parameters()),
        "description": entry.description,
    }


def cmd_check(args: argparse.Namespace) -> int:
    overrides = {
        "out_channels": args.out_channels,
        "output_stride": args.output_stride,
        "strides": tuple(args.strides) if args.strides else None,
        "dilate": True if args.dilate else None,
        "in_channels": args.in_channels,
    }
    name, kwargs, model = build_spec(args.spec, overrides)
    input_shape = args.input or (1, model.in_channels, 224, 224)
    if input_shape[1] != model.in_channels:
        raise UsageError(f"--input has {input_shape[1]} channels but {name} takes in_channels={model.in_channels}")
    problem = size_problem(input_shape[2], input_shape[3], model.input_limits.bounds())
    if problem:
        raise UsageError(f"--input {'x'.join(map(str, input_shape))}: {problem} for {name}")
    report = describe(model, input_shape, name, kwargs)
    if args.json:
        print(json.dumps({"spec": format_spec(name, kwargs), **report.to_dict()}, indent=2))
    else:
        print(f"{format_spec(name, kwargs)}  input {'x'.join(map(str, input_shape))}")
        rows = [
            (s.index, s.name, s.channels, stride_text(s.stride), stride_text(s.dilation), list(s.shape))
            for s in report.stages
        ]
        print(table(rows, ["stage", "name", "channels", "stride", "dilation", "output shape"]))
        for got, expected in zip(report.output_shapes, report.expected_shapes):
            verdict = "ok" if got == expected else f"BROKEN (contract says {list(expected)})"
            print(f"output {list(got)}: {verdict}")
        print(f"params {report.params:,}   GFLOPs {report.gflops:.2f}")
        limits = model.input_limits
        made_for = " (made for one size: smaller inputs are padded to it)" if limits.max_size is not None else ""
        print(f"{limits}{made_for}" + ("; attention takes the padding mask" if model.attends_to_mask else ""))
    return 0 if report.contract_ok else 1


def cmd_weights(args: argparse.Namespace) -> int:
    name, kwargs, _ = build_spec(args.spec)  # the options checked on the meta device: a misspelt one is exit 2
    entry, sets = get_entry(name), weight_sets(name)
    if args.file is None:
        default = default_weight_set(entry.weights)
        rows: List[Dict[str, Any]] = [
            {"tag": s.tag, "source": s.source, "default": default is not None and s.tag == default.tag,
             "cached": s.cached_path.is_file(), "file": str(s.cached_path), "url": s.url,
             "preprocess": s.preprocess.to_dict() if s.preprocess else None}
            for s in sets.values()
        ]  # fmt: skip
        if args.json:
            print(json.dumps({"name": name, "cache_dir": str(cache_dir()), "weights": rows}, indent=2))
        elif not rows:
            print(f"{name} has no published weights; load a checkpoint with --file PATH (pretrained=PATH)")
        else:
            lines = [
                (s.tag + (" (True)" if row["default"] else ""), s.source, "yes" if row["cached"] else "no",
                 Path(row["file"]).name, str(s.preprocess or "-"))
                for s, row in zip(sets.values(), rows)
            ]  # fmt: skip
            print(table(lines, ["pretrained=", "source", "cached", f"file in {cache_dir()}", "preprocess"]))
        return 0
    try:
        options: Dict[str, Any] = {**kwargs, "pretrained": Path(args.file)}  # a path, never a tag
        model = build_backbone(name, **options)
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
        print(json.dumps({"spec": args.spec, "file": args.file, "ok": True, "report": report.to_dict()}, indent=2))
    else:
        print(f"{format_spec(name, kwargs)}: {report}")
    return 0
