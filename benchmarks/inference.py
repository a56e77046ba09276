"""Inference paths against eager float32: channels_last, fuse(), fuse() + channels_last, torch.compile, onnxruntime.

One process, the variants of one model and batch timed in alternation (eager, its copy, channels_last, ...; the
order rotated each round), so slow drifts of the machine hit all alike. "eager (copy)" is a second, identical
eager model: its ratio to eager is the noise yardstick of the run. onnxruntime gets as many threads as torch.

    python benchmarks/inference.py [--models resnet18,...,pphgnetv2_b4_rec] [--batches 1,8]
        [--size HxW] [--repeats 7] [--no-compile] [--no-onnx] [--json]

Each model runs at its own input by default: a 1-channel 128x316 formula for the formula encoders, a 3-channel
32x128 line for SVTRv2 and 48x320 for the PP-OCRv5 encoders (their training sizes); ``--size`` sets one for all.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

from backbones import build_backbone, export_onnx  # noqa: E402

FORMULA, LINE, PPOCR = (128, 316), (32, 128), (48, 320)
CONFIGS = {  # name: (build options, default input H x W)
    "resnet18": ({"in_channels": 1, "output_stride": 16, "out_channels": 684}, FORMULA),
    "resnet50": ({"in_channels": 1, "output_stride": 16, "out_channels": 684}, FORMULA),
    "densenet_hmer": ({}, FORMULA),
    "densenet121": ({"in_channels": 1}, FORMULA),
    "svtrv2_tiny": ({}, LINE),
    "pplcnetv3_rec": ({}, PPOCR),
    "pphgnetv2_b4_rec": ({}, PPOCR),
}
TARGET = 0.85  # fuse() + channels_last against eager, batch 8, ResNets


def _runner(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def variants(name: str, batch: int, size: List[int], compile_: bool, onnx: bool, folder: Path) -> Dict[str, Callable]:
    model = build_backbone(name, **CONFIGS[name][0]).eval()
    x = torch.randn(batch, model.in_channels, *size)
    x_last = x.to(memory_format=torch.channels_last)
    fused = copy.deepcopy(model).fuse()
    runs = {
        "eager": _runner(model, x),
        "eager (copy)": _runner(copy.deepcopy(model), x),
        "channels_last": _runner(copy.deepcopy(model).to(memory_format=torch.channels_last), x_last),
        "fuse()": _runner(fused, x),
        "fuse() + channels_last": _runner(copy.deepcopy(fused).to(memory_format=torch.channels_last), x_last),
    }
    if compile_:
        torch._dynamo.reset()
        runs["torch.compile"] = _runner(torch.compile(copy.deepcopy(model)), x)
    if onnx:
        import onnxruntime

        path = export_onnx(model, folder / f"{name}.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not spin
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {"image": x.numpy()}
        runs["onnxruntime"] = lambda: session.run(None, feeds)
    return runs


def rotated_median_ms(fns: List[Callable[[], object]], warmup: int, repeats: int) -> List[float]:
    """Medians of ``fns`` timed in alternation, the order rotated each round so that none always runs first."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for round_ in range(repeats):
        for step in range(len(fns)):
            i = (round_ + step) % len(fns)
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def run(
    models: List[str], batches: List[int], size: Optional[List[int]], repeats: int, compile_: bool, onnx: bool
) -> List[Dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            hw = size or list(CONFIGS[name][1])
            channels = CONFIGS[name][0].get("in_channels", 1 if name == "densenet_hmer" else 3)
            for batch in batches:
                runs = variants(name, batch, hw, compile_, onnx, Path(folder))
                times = rotated_median_ms(list(runs.values()), warmup=2, repeats=repeats)
                shape = f"{batch}x{channels}x{hw[0]}x{hw[1]}"
                for variant, ms in zip(runs, times):
                    rows.append({"model": name, "input": shape, "variant": variant, "ms": ms, "/ eager": ms / times[0]})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def summary(rows: List[Dict]) -> List[Dict]:
    """Per variant: the median ratio over models and batches, and the ResNets' batch-8 fuse() + channels_last."""
    out = []
    for variant in dict.fromkeys(row["variant"] for row in rows):
        ratios = [row["/ eager"] for row in rows if row["variant"] == variant]
        out.append({"variant": variant, "median / eager": statistics.median(ratios), "rows": len(ratios)})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", help="HxW of every model's input (default: each model's own, see above)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    unknown = sorted(set(models) - set(CONFIGS))
    if unknown:
        parser.error(f"--models takes {', '.join(CONFIGS)}, got {', '.join(unknown)}")
    size = [int(v) for v in args.size.split("x")] if args.size else None
    batches = [int(v) for v in args.batches.split(",")]
    rows = run(models, batches, size, args.repeats, not args.no_compile, not args.no_onnx)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header("Inference paths against eager float32 (median ms, interleaved; eager (copy) = the noise)"))
    print(table(rows, ["model", "input", "variant", "ms", "/ eager"]))
    print("\nMedian ratio to eager over the rows above\n")
    print(table(summary(rows), ["variant", "median / eager", "rows"]))
    target = [r for r in rows if r["variant"] == "fuse() + channels_last" and r["model"].startswith("resnet")]
    target = [r for r in target if r["input"].startswith("8x")]
    if target:
        verdict = ", ".join(f"{r['model']} {r['/ eager']:.2f}" for r in target)
        print(f"\nfuse() + channels_last at batch 8, ResNets: {verdict} (target <= {TARGET})")


if __name__ == "__main__":
    main()
