"""What a swap costs on top of building the replacement: ``swap(model, path, spec)`` (probing the old encoder,
building, wrapping, verifying, replacing) against ``build_backbone(...)`` of the same replacement alone, timed in
alternation, with the build timed twice (the second is the noise yardstick).

Two encoders: a CoMER-sized formula encoder (DenseNet-B, growth 24, three blocks of 16 layers, both norms,
``(image, mask) -> (feature, mask)``) and a PARSeq-sized line encoder (a timm ViT-S, 4x8 patches, made for 32x128
only, returning its tokens).

    python benchmarks/swap_cost.py [--repeats 5] [--targets resnet18,resnet34] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, interleaved_median_ms, table  # noqa: E402


class _ViTLineEncoder(nn.Module):
    """PARSeq's encoder: the ViT's ``forward_features`` (all tokens), 32x128 with 4x8 patches."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(
            img_size=(32, 128), patch_size=(4, 8), embed_dim=384, depth=depth, num_heads=6, class_token=False,
            global_pool="", num_classes=0,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


def encoders(quick: bool) -> Dict[str, Tuple[Callable[[], nn.Module], Dict[str, Any]]]:
    """name -> (a model holding the old encoder at ``encoder``, the build options the swap infers)."""
    from backbones.adapters import MaskedEncoder

    from backbones import build_backbone

    layers = (4, 4, 4) if quick else (16, 16, 16)

    def formula() -> nn.Module:
        model = nn.Module()
        hmer = build_backbone("densenet_hmer", block_layers=layers, stem_norm=True, post_norm=True)
        model.encoder = MaskedEncoder(hmer)
        return model

    def line() -> nn.Module:
        model = nn.Module()
        model.encoder = _ViTLineEncoder(1 if quick else 12)
        return model

    hmer_out = build_backbone("densenet_hmer", block_layers=layers, post_norm=True).out_channels
    formula_options = {"in_channels": 1, "out_channels": hmer_out, "output_stride": 16}
    line_options = {"in_channels": 3, "out_channels": 384, "output_stride": (4, 8)}
    return {
        "CoMER-sized DenseNet-B, (x, mask)": (formula, formula_options),
        "PARSeq-sized ViT-S at 32x128, tokens": (line, line_options),
    }


def _measure(template: nn.Module, target: str, options: Dict[str, Any], repeats: int) -> List[float]:
    """Median ms of building ``target``, swapping it into a copy of ``template``, and building it again."""
    from backbones import build_backbone, swap

    fresh = [copy.deepcopy(template) for _ in range(repeats + 2)]  # a copy per swap, made before the timing

    def swap_once() -> None:
        swap(fresh.pop(), "encoder", target)

    def build_once() -> None:
        build_backbone(target, **options)

    return interleaved_median_ms([build_once, swap_once, build_once], repeats=repeats)


def rows(repeats: int, targets: List[str], quick: bool) -> List[Dict[str, object]]:
    results: List[Dict[str, object]] = []
    for label, (make, options) in encoders(quick).items():
        template = make()
        for target in targets:
            build, swap_ms, again = _measure(template, target, options, repeats)
            results.append(
                {"old encoder": label, "replacement": target, "build ms": build, "swap ms": swap_ms,
                 "swap / build": swap_ms / build, "build again / build": again / build}
            )  # fmt: skip
    return results


def main(argv: List[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--targets", default="resnet18,resnet34")
    parser.add_argument("--quick", action="store_true", help="smaller old encoders (for the smoke test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = rows(args.repeats, args.targets.split(","), args.quick)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(header("Swap cost: swap() against building the replacement alone"))
    columns = ["old encoder", "replacement", "build ms", "swap ms", "swap / build", "build again / build"]
    print(table(result, columns))
    print("\nCommand: python benchmarks/swap_cost.py " + " ".join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
