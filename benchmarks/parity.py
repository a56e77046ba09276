"""Parity report: our encoders vs torchvision's and timm's own models given the same weights.

For each model, torchvision's randomly initialised network gets realistic BatchNorm statistics (a few
train-mode passes over noise), its state dict is saved to a ``.pth`` file, and that file is loaded three
ways: by ``build_backbone(name, pretrained=file)``, by torchvision, and by ``timm.create_model(name)``.
The table shows the max abs difference of the final features (and the largest feature value, for scale).
Extra rows: torchvision's ``replace_stride_with_dilation`` against ``output_stride=16, dilate=True``, and the
grayscale adaptation (1 input channel, summed RGB kernels) against the 3-channel model on a repeated image,
in float32 (summation order differs: about 1e-5 of the feature scale) and float64 (the identity is exact).

    python benchmarks/parity.py [--models resnet50,resnext50_32x4d,densenet121] [--size 64x96] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Dict, List

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from backbones import build_backbone
from backbones.weights import load_weights

MODELS = ("resnet50", "resnext50_32x4d", "densenet121")


def calibrated_torchvision(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """torchvision's ``name`` with random weights and BatchNorm running stats of real activations."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(**kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


def torchvision_features(name: str, model: nn.Module, x: Tensor) -> Tensor:
    if name.startswith("densenet"):
        return F.relu(model.features(x))
    return nn.Sequential(*list(model.children())[:-2])(x)


def _row(model: str, reference: str, ours: Tensor, theirs: Tensor) -> Dict[str, object]:
    return {
        "model": model,
        "reference": reference,
        "shape": list(ours.shape),
        "max_abs_diff": (ours - theirs).abs().max().item(),
        "max_abs_value": theirs.abs().max().item(),
    }


@torch.no_grad()
def parity_rows(names=MODELS, height: int = 64, width: int = 96, seed: int = 0) -> List[Dict[str, object]]:
    """One row per (model, reference) pair; ``max_abs_diff`` is what the tests assert."""
    rows = []
    torch.manual_seed(seed + 1)
    x = torch.rand(2, 3, height, width)
    gray = torch.rand(2, 1, height, width)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            reference = calibrated_torchvision(name, seed)
            path = Path(folder) / f"{name}.pth"
            torch.save(reference.state_dict(), path)
            ours = build_backbone(name, pretrained=str(path)).eval()
            features = ours(x)
            tv_features = torchvision_features(name, reference, x)
            rows.append(_row(name, f"torchvision {torchvision.__version__.split('+')[0]}", features, tv_features))
            theirs = timm.create_model(name, pretrained=False).eval()
            theirs.load_state_dict(torch.load(path, weights_only=True), strict=True)
            rows.append(_row(name, f"timm {timm.__version__}", features, theirs.forward_features(x)))
            if not name.startswith("densenet") and name not in ("resnet18", "resnet34"):  # BasicBlock: no dilation
                dilated = calibrated_torchvision(name, seed, replace_stride_with_dilation=[False, False, True])
                dilated.load_state_dict(reference.state_dict())
                ours16 = build_backbone(name, pretrained=str(path), output_stride=16, dilate=True).eval()
                tv16 = torchvision_features(name, dilated, x)
                rows.append(_row(f"{name} /16 dilated", "torchvision dilation", ours16(x), tv16))
            ours_gray = build_backbone(name, pretrained=str(path), in_channels=1).eval()
            repeated = gray.repeat(1, 3, 1, 1)
            rows.append(_row(f"{name} in_channels=1", "ours, RGB-repeated", ours_gray(gray), ours(repeated)))
            path64 = Path(folder) / f"{name}-float64.pth"
            state64 = {k: v.double() if v.is_floating_point() else v for k, v in reference.state_dict().items()}
            torch.save(state64, path64)
            gray64 = build_backbone(name, in_channels=1).double().eval()
            rgb64 = build_backbone(name).double().eval()
            load_weights(gray64, path64)  # into float64 parameters: no float32 rounding on the way
            load_weights(rgb64, path64)
            gray_out, rgb_out = gray64(gray.double()), rgb64(repeated.double())
            rows.append(_row(f"{name} in_channels=1 float64", "ours, RGB-repeated", gray_out, rgb_out))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", default="64x96", help="HxW of the 2-image batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    height, width = map(int, args.size.split("x"))
    rows = parity_rows(args.models.split(","), height, width)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"torch {torch.__version__.split('+')[0]}, input 2x3x{height}x{width} (float32, CPU)\n")
    print(f"| {'model':<37} | {'reference':<20} | {'output':<12} | max abs diff | max abs value |")
    print(f"|{'-' * 39}|{'-' * 22}|{'-' * 14}|-------------:|--------------:|")
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        print(
            f"| {row['model']:<37} | {row['reference']:<20} | {shape:<12} | "
            f"{row['max_abs_diff']:>12.2e} | {row['max_abs_value']:>13.3g} |"
        )


if __name__ == "__main__":
    main()
