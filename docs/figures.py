"""The documentation's pictures, drawn from data this script measures (never by hand):

- ``stride_plan.svg``: which stages of resnet50 downsample, lose their stride or dilate for a few ``output_stride``
  choices (from the built encoders' ``feature_info``);
- ``ceil_grid.svg``: the columns torchvision's DenseNet-121 gives (floor rounding) against ours (the ceil contract) at
  every input width up to 96 (real forwards);
- ``formula_cost.svg``: parameters and GFLOPs of candidate encoders at the formula contract, 684 channels at /16 from
  one channel, for a 128x316 image (meta-device builds, ``torch.utils.flop_counter``);
- ``layers.svg``: the package's layers and the imports between them (read from the source).

    .venv/bin/python docs/figures.py            # measure, write docs/images/*.svg and docs/images/figures.json
    .venv/bin/python docs/figures.py --check    # measure, compare with figures.json (exit 1 when it drifted)
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
LAYERS = ["core", "weights", "registry", "families", "deploy", "testing", "swapping", "cli", "adapters"]
PLANS = {
    "native": {},
    "output_stride=16": {"output_stride": 16},
    "output_stride=16, dilate": {"output_stride": 16, "dilate": True},
    "output_stride=8, dilate": {"output_stride": 8, "dilate": True},
    "output_stride=(32, 4)": {"output_stride": (32, 4)},
}
CANDIDATES = {
    "densenet_hmer": {},
    "resnet18": {"output_stride": 16},
    "resnet34": {"output_stride": 16},
    "resnet50": {"output_stride": 16},
    "resnet50, strides 1,1,2,2": {"strides": (1, 1, 2, 2)},
    "resnext50_32x4d": {"output_stride": 16},
    "densenet121": {"output_stride": 16},
    "timm:convnext_atto": {"output_stride": 16},
    "timm:efficientnet_b0": {"output_stride": 16},
    "timm:mobilenetv3_large_100": {"output_stride": 16},
}
FORMULA_SIZE = (128, 316)


def stride_plans() -> Dict[str, List[Dict[str, Any]]]:
    """Per configuration of resnet50, per stage: its own stride step, the native one and its dilation."""
    from backbones import build_on_meta

    native = build_on_meta("resnet50").feature_info
    plans = {}
    for label, options in PLANS.items():
        stages, before = [], (1, 1)
        for info, base in zip(build_on_meta("resnet50", **options).feature_info, native):
            base_before = native[base.index - 1].stride if base.index else (1, 1)
            step = [info.stride[axis] // before[axis] for axis in (0, 1)]
            native_step = [base.stride[axis] // base_before[axis] for axis in (0, 1)]
            stages.append(
                {"name": info.name, "step": step, "native_step": native_step, "dilation": list(info.dilation)}
            )
            before = info.stride
        plans[label] = stages
    return plans


def ceil_against_floor(widths: range = range(1, 97), height: int = 33) -> Dict[str, List[int]]:
    """Output columns of torchvision's DenseNet-121 features and of ours at each width (0: the input is refused)."""
    import torch
    import torchvision

    from backbones import build_backbone

    torch.manual_seed(0)
    theirs, ours = torchvision.models.densenet121().features.eval(), build_backbone("densenet121").eval()
    columns: Dict[str, List[int]] = {"widths": list(widths), "torchvision": [], "ours": []}
    with torch.no_grad():
        for width in widths:
            x = torch.zeros(1, 3, height, width)
            try:
                columns["torchvision"].append(int(theirs(x).shape[-1]))
            except RuntimeError:  # an average pool of a 1-pixel map
                columns["torchvision"].append(0)
            columns["ours"].append(int(ours(x).shape[-1]))
    return columns


def formula_candidates() -> Dict[str, Dict[str, float]]:
    """Parameters (millions) and GFLOPs (multiply and add counted apart) at 684 channels, /16, one input channel."""
    from backbones import build_on_meta
    from backbones.core import count_flops

    figures = {}
    for label, options in CANDIDATES.items():
        name = label.split(",")[0]
        contract = {} if name == "densenet_hmer" else {"out_channels": 684, "in_channels": 1, **options}
        encoder = build_on_meta(name, **contract)
        assert encoder.out_channels == 684 and encoder.output_stride == (16, 16), label
        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        gflops = count_flops(encoder, (1, 1, *FORMULA_SIZE)) / 1e9
        figures[label] = {"params_m": round(params, 2), "gflops": round(gflops, 2)}
    return figures


def layer_imports() -> Dict[str, Any]:
    """How many modules of each layer import from each other layer (``backbones/<layer>`` and ``adapters/``)."""
    edges: Dict[str, int] = {}
    sources = [*sorted((ROOT / "backbones").rglob("*.py")), *sorted((ROOT / "adapters").glob("*.py"))]
    for path in sources:
        source_layer = _layer_of(path.relative_to(ROOT).with_suffix("").parts)
        if source_layer is None:
            continue
        for target in {_imported_layer(node, path) for node in ast.walk(ast.parse(path.read_text()))} - {None}:
            if target != source_layer:
                key = f"{source_layer} -> {target}"
                edges[key] = edges.get(key, 0) + 1
    return {"layers": LAYERS, "edges": dict(sorted(edges.items()))}


def _layer_of(parts: tuple) -> str | None:
    """``("backbones", "core", "_backbone")`` -> ``"core"``; ``adapters/`` -> ``"adapters"``; ``None`` outside."""
    if parts[0] == "adapters":
        return "adapters"
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else None


def _imported_layer(node: ast.AST, path: Path) -> str | None:
    """The layer an import statement reaches (relative imports resolved against ``path``), or ``None``."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = list(path.relative_to(ROOT).with_suffix("").parts)[: -node.level]
            if package and package[0] == "adapters":
                package = ["backbones", "adapters", *package[1:]]
            names = package + (node.module.split(".") if node.module else [])
        else:
            names = (node.module or "").split(".")
    elif isinstance(node, ast.Import):
        names = node.names[0].name.split(".")
    else:
        return None
    if names[0] != "backbones" or len(names) < 2:
        return None
    return names[1] if names[1] in LAYERS else None


def measure() -> Dict[str, Any]:
    return {
        "stride_plans": stride_plans(),
        "ceil_against_floor": ceil_against_floor(),
        "formula_candidates": formula_candidates(),
        "layer_imports": layer_imports(),
    }


def draw(data: Dict[str, Any], folder: Path) -> List[Path]:
    """Write the four SVGs into ``folder`` (matplotlib, no fonts or dates embedded that change between runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "backbones", "svg.fonttype": "none", "font.size": 9})
    folder.mkdir(parents=True, exist_ok=True)
    painters = {"stride_plan": _draw_plans, "ceil_grid": _draw_grid, "formula_cost": _draw_cost, "layers": _draw_layers}
    paths = []
    for name, painter in painters.items():
        figure = painter(plt, data)
        path = folder / f"{name}.svg"
        figure.savefig(path, metadata={"Date": None}, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


COLOURS = {"downsamples": "#4c72b0", "removed": "#dddddd", "dilated": "#dd8452", "none": "#ffffff"}


def _status(stage: Dict[str, Any]) -> str:
    if max(stage["step"]) > 1:
        return "downsamples"
    if max(stage["native_step"]) == 1:
        return "none"
    return "dilated" if max(stage["dilation"]) > 1 else "removed"


def _draw_plans(plt: Any, data: Dict[str, Any]) -> Any:
    plans = data["stride_plans"]
    figure, axes = plt.subplots(figsize=(7.5, 0.45 * len(plans) + 0.9))
    for row, stages in enumerate(plans.values()):
        for column, stage in enumerate(stages):
            status = _status(stage)
            axes.add_patch(plt.Rectangle((column, -row - 1), 0.95, 0.9, color=COLOURS[status], ec="#888888"))
            text = "x".join(map(str, stage["step"])) if status == "downsamples" else status
            if status == "dilated":
                text = "dilation " + "x".join(map(str, stage["dilation"]))
            axes.text(column + 0.475, -row - 0.55, text, ha="center", va="center", fontsize=8)
    stages = next(iter(plans.values()))
    axes.set_xticks([i + 0.475 for i in range(len(stages))], [s["name"] for s in stages])
    axes.set_yticks([-r - 0.55 for r in range(len(plans))], list(plans))
    axes.xaxis.tick_top()
    axes.set_xlim(0, len(stages))
    axes.set_ylim(-len(plans) - 0.1, 0)
    axes.set_frame_on(False)
    axes.tick_params(length=0)
    axes.set_title("resnet50: the stride step of each stage (H x W)", pad=24)
    return figure


def _draw_grid(plt: Any, data: Dict[str, Any]) -> Any:
    grid = data["ceil_against_floor"]
    figure, axes = plt.subplots(figsize=(7.5, 3))
    axes.step(grid["widths"], grid["ours"], where="post", label="ours: ceil(W / 32)", lw=2)
    axes.step(grid["widths"], grid["torchvision"], where="post", label="torchvision's DenseNet-121 (floor)", lw=1.5)
    axes.fill_between(grid["widths"], grid["torchvision"], grid["ours"], step="post", alpha=0.15, color="#c44e52",
                      label="where they differ: floor drops the last partial cell")  # fmt: skip
    axes.set_xlabel("input width W (pixels)")
    axes.set_ylabel("output columns at /32")
    axes.legend(loc="upper left", frameon=False)
    return figure


def _draw_cost(plt: Any, data: Dict[str, Any]) -> Any:
    figures = sorted(data["formula_candidates"].items(), key=lambda item: item[1]["gflops"])
    labels = [label for label, _ in figures]
    colours = ["#dd8452" if label == "densenet_hmer" else "#4c72b0" for label in labels]
    figure, (flops, params) = plt.subplots(1, 2, figsize=(7.5, 0.3 * len(labels) + 0.9), sharey=True)
    for axes, key, title in ((flops, "gflops", f"GFLOPs at 1x1x{FORMULA_SIZE[0]}x{FORMULA_SIZE[1]}"),
                             (params, "params_m", "parameters (millions)")):  # fmt: skip
        values = [point[key] for _, point in figures]
        axes.barh(labels, values, color=colours)
        for row, value in enumerate(values):
            axes.text(value, row, f" {value:g}", va="center", fontsize=8)
        axes.set_title(title)
        axes.set_xlim(0, max(values) * 1.2)
        axes.spines[["top", "right"]].set_visible(False)
    figure.suptitle("684 channels at /16 from one channel (orange: the formula projects' DenseNet)", y=1.03)
    return figure


def _draw_layers(plt: Any, data: Dict[str, Any]) -> Any:
    layers, edges = data["layer_imports"]["layers"], data["layer_imports"]["edges"]
    figure, axes = plt.subplots(figsize=(7.5, 0.55 * len(layers) + 0.4))
    for level, layer in enumerate(layers):
        axes.add_patch(plt.Rectangle((0, level), 1.6, 0.7, color="#e8eef7", ec="#4c72b0"))
        name = "adapters/ (backbones.adapters)" if layer == "adapters" else f"backbones/{layer}"
        axes.text(0.8, level + 0.35, name, ha="center", va="center")
    for key, count in edges.items():
        source, target = key.split(" -> ")
        start, end = layers.index(source), layers.index(target)
        bend = 0.15 + 0.09 * (start - end)
        axes.annotate("", xy=(1.6, end + 0.35), xytext=(1.6, start + 0.35),
                      arrowprops={"arrowstyle": "->", "color": "#888888", "lw": 0.5 + 0.15 * count,
                                  "connectionstyle": f"arc3,rad=-{bend:.2f}"})  # fmt: skip
    axes.set_xlim(-0.1, 3.4)
    axes.set_ylim(-0.2, len(layers))
    axes.axis("off")
    axes.set_title("layers, bottom up; an arrow is an import (width: how many modules)")
    return figure


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the measured data with figures.json")
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the SVGs and figures.json")
    args = parser.parse_args(argv)
    data = measure()
    stored = args.out / "figures.json"
    if args.check:
        same = stored.exists() and json.loads(stored.read_text()) == json.loads(json.dumps(data))
        print("figures.json matches the measurement" if same else f"{stored} differs: run docs/figures.py")
        return 0 if same else 1
    paths = draw(data, args.out)
    stored.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in data.items()) + "\n}\n")
    print("\n".join(str(p) for p in [*paths, stored]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
