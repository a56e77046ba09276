"""Shape-only forwards on the meta device: ``meta_call`` (behind ``output_shapes``, ``assert_contract``,
``backbones check`` / ``compare``, ``swap``'s probes and the checks of meta-built models) with its shortcut for the
shape-keeping norms and activations, against torch's own meta kernels (Python decompositions) for them.

Per model, one forward of a ``build_on_meta`` model at ``--size``, timed in alternation: the shortcut, the
decompositions, the shortcut again (the noise yardstick: two identical runs).

    python benchmarks/meta_shapes.py [--models resnet50,densenet121,...] [--size 320x1800] [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, interleaved_median_ms, table  # noqa: E402

from backbones import build_on_meta  # noqa: E402
from backbones.core import meta_call  # noqa: E402
from backbones.core._meta_device import _ShapeOnlyOps  # noqa: E402

MODELS = "resnet50,densenet121,densenet_hmer,pplcnetv3_rec,pphgnetv2_b4_rec,svtrv2_tiny,timm:convnext_tiny"


def _timings(name: str, height: int, width: int, repeats: int) -> dict:
    model = build_on_meta(name)
    x = torch.empty(1, model.in_channels, height, width, device="meta")

    def shortcut() -> None:
        meta_call(model, "forward", x)

    def decomposed() -> None:
        with mock.patch.dict(_ShapeOnlyOps._SHORTCUTS, clear=True):
            meta_call(model, "forward", x)

    fast, slow, again = interleaved_median_ms([shortcut, decomposed, shortcut], repeats=repeats)
    return {
        "model": name, "input": f"1x{model.in_channels}x{height}x{width}", "shortcut ms": fast,
        "decompositions ms": slow, "decompositions / shortcut": round(slow / fast, 2),
        "noise (shortcut / shortcut)": round(again / fast, 2),
    }  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--size", default="320x1800", help="HxW")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    height, width = map(int, args.size.split("x"))
    rows = [_timings(name, height, width, args.repeats) for name in args.models.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(header("Meta-device forward: the shortcut for norms and activations against torch's decompositions"))
    columns = ["model", "input", "shortcut ms", "decompositions ms", "decompositions / shortcut"]
    print(table(rows, [*columns, "noise (shortcut / shortcut)"]))


if __name__ == "__main__":
    main()
