"""Routes to 1/16 for a 1-channel formula encoder with 684 output channels: what each one costs.

(a) ``output_stride=16``: remove the last stride; (b) ``output_stride=16, dilate=True``: dilate instead;
(c) ``strides=(1, 1, 2, 2)``: the seeds' layer2 layout; against ``densenet_hmer``. Parameters, GFLOPs of one
image (torch.utils.flop_counter), eval forward latency (batch 1, median) and peak training memory (forward +
backward of a batch, fresh process, RSS above the built model).

    python benchmarks/routes.py [--models resnet34,resnet50,densenet121] [--sizes 128x316,256x1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, median_ms, peak_training_mib, table  # noqa: E402

from backbones import build_backbone, build_on_meta  # noqa: E402
from backbones.core import count_flops  # noqa: E402

ROUTES = {
    "(a) output_stride=16": {"output_stride": 16},
    "(b) output_stride=16, dilate": {"output_stride": 16, "dilate": True},
    "(c) strides=(1, 1, 2, 2)": {"strides": [1, 1, 2, 2]},
}


def configurations(models: List[str]):
    for name in models:
        for route, options in ROUTES.items():
            yield name, route, {"in_channels": 1, "out_channels": 684, **options}
    yield "densenet_hmer", "native /16", {}


def run(models: List[str], sizes: List[str], batch: int, repeats: int, memory: bool) -> List[Dict[str, object]]:
    rows = []
    for size in sizes:
        height, width = map(int, size.split("x"))
        for name, route, kwargs in configurations(models):
            meta = build_on_meta(name, **kwargs)
            model = build_backbone(name, **kwargs).eval()
            x = torch.randn(1, 1, height, width)
            with torch.no_grad():
                latency = median_ms(lambda m=model, x=x: m(x), warmup=1, repeats=repeats)
            row = {
                "model": name, "route": route, "input": f"1x{height}x{width}",
                "output": "x".join(map(str, meta.output_size(height, width))),
                "params M": sum(p.numel() for p in meta.parameters()) / 1e6,
                "GFLOPs": count_flops(meta, (1, 1, height, width)) / 1e9,
                "latency ms": latency,
            }  # fmt: skip
            if memory:
                row[f"train peak MiB (batch {batch})"] = peak_training_mib(name, kwargs, (batch, 1, height, width))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet34,resnet50,densenet121")
    parser.add_argument("--sizes", default="128x316,256x1024")
    parser.add_argument("--batch", type=int, default=4, help="batch of the training-memory column")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the training-memory column")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.models.split(","), args.sizes.split(","), args.batch, args.repeats, not args.no_memory)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header("Routes to 1/16 (1 input channel, 684 output channels)"))
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
