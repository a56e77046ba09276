"""Wrapper overhead: forward latency of build_backbone(name) vs torchvision's feature path and timm's
features_only model, all three holding the same weights, timed in alternation in one process.

    python benchmarks/overhead.py [--models resnet18,resnet50,densenet121] [--repeats 7] [--compile] [--json]

Inputs: 3x224x224 (batch 1 and 8) and the formula size 1x128x316 grayscale (batch 1 and 8; torchvision's
and timm's first conv get the same summed kernels). Eval mode, no grad, float32; ``channels_last`` rows
convert models and input; ``--compile`` adds torch.compile rows (slow to build on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, interleaved_median_ms, table  # noqa: E402

from backbones import build_backbone  # noqa: E402
from backbones.weights import load_weights  # noqa: E402

SHAPES = {"224 b1": (1, 3, 224, 224), "224 b8": (8, 3, 224, 224), "formula b1": (1, 1, 128, 316),
          "formula b8": (8, 1, 128, 316)}  # fmt: skip


def torchvision_body(name: str, in_channels: int, state: Dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    model = getattr(torchvision.models, name)()
    model.load_state_dict(state)
    first = "features.conv0" if name.startswith("densenet") else "conv1"
    conv = model.get_submodule(first)
    if in_channels != 3:
        gray = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        gray.weight.data = conv.weight.data.sum(1, keepdim=True)
        parent, child = first.rsplit(".", 1) if "." in first else ("", first)
        setattr(model.get_submodule(parent) if parent else model, child, gray)
    model.eval()
    if name.startswith("densenet"):
        return nn.Sequential(model.features, nn.ReLU())
    return nn.Sequential(*list(model.children())[:-2])


def models_for(name: str, in_channels: int, state: Dict[str, Tensor]) -> Dict[str, nn.Module]:
    ours = build_backbone(name, in_channels=in_channels).eval()
    load_weights(ours, state)
    theirs = timm.create_model(name, features_only=True, out_indices=(-1,), in_chans=in_channels, pretrained=True,
                               pretrained_cfg_overlay=dict(state_dict=state)).eval()  # fmt: skip
    return {"ours": ours, "torchvision": torchvision_body(name, in_channels, state), "timm": TimmLast(theirs)}


class TimmLast(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[-1]


def run(names: List[str], repeats: int, compile_too: bool) -> List[Dict[str, object]]:
    rows = []
    for name in names:
        state = getattr(torchvision.models, name)().state_dict()
        for label, shape in SHAPES.items():
            models = models_for(name, shape[1], state)
            x = torch.randn(*shape)
            variants = {"eager": (models, x)}
            last = {k: copy.deepcopy(m).to(memory_format=torch.channels_last) for k, m in models.items()}
            variants["channels_last"] = (last, x.to(memory_format=torch.channels_last))
            if compile_too:
                torch._dynamo.reset()  # one cache per shape: sharing it hits the recompile limit and runs eager
                variants["compile"] = ({k: torch.compile(m) for k, m in models.items()}, x)
            for variant, (group, inputs) in variants.items():
                with torch.no_grad():
                    outputs = {k: m(inputs) for k, m in group.items()}
                    same_shape = outputs["ours"].shape == outputs["torchvision"].shape
                    times = interleaved_median_ms(
                        [lambda m=m, x=inputs: m(x) for m in group.values()], warmup=2, repeats=repeats
                    )
                ms = dict(zip(group, times))
                rows.append({
                    "model": name, "input": label + f" ({'x'.join(map(str, shape))})", "variant": variant,
                    "ours ms": ms["ours"], "torchvision ms": ms["torchvision"], "timm ms": ms["timm"],
                    "ours / torchvision": ms["ours"] / ms["torchvision"], "ours / timm": ms["ours"] / ms["timm"],
                    "same output shape as torchvision": same_shape,
                })  # fmt: skip
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def summary(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Geometric means of the ratios per model and input size, over batch sizes and variants.

    ``timm / torchvision`` is the yardstick: two implementations of one graph, so its spread is the noise.
    """
    groups: Dict[tuple, List[Dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["model"], str(row["input"]).split(" b")[0]), []).append(row)
    out = []
    for (model, size), group in groups.items():
        ratios = {
            "ours / torchvision": [r["ours / torchvision"] for r in group],
            "ours / timm": [r["ours / timm"] for r in group],
            "timm / torchvision": [r["timm ms"] / r["torchvision ms"] for r in group],
        }
        out.append({"model": model, "input": size, "rows": len(group),
                    **{k: math.exp(statistics.fmean(map(math.log, v))) for k, v in ratios.items()},
                    "same output shape": all(r["same output shape as torchvision"] for r in group)})  # fmt: skip
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="resnet18,resnet50,densenet121")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="subset of: " + ", ".join(SHAPES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for label in list(SHAPES):
        if label not in args.shapes.split(","):
            del SHAPES[label]
    rows = run(args.models.split(","), args.repeats, args.compile)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header("Wrapper overhead: forward latency, median ms (eval, no grad, float32)"))
    columns = ["model", "input", "variant", "ours ms", "torchvision ms", "timm ms", "ours / torchvision", "ours / timm"]
    print(table(rows, columns))
    print("\nGeometric means over batch sizes and variants (timm / torchvision: the noise yardstick)\n")
    print(table(summary(rows), ["model", "input", "rows", "ours / torchvision", "ours / timm", "timm / torchvision",
                                "same output shape"]))  # fmt: skip


if __name__ == "__main__":
    main()
