"""Peak training memory (CPU RSS) of DenseNets with and without memory_efficient (gradient checkpointing).

Each configuration runs in a fresh subprocess (forward + backward, train mode) and reports its peak RSS
minus the RSS after building the model and the input, so the weights are not counted (Linux: VmHWM).

    python benchmarks/densenet_memory.py [--models densenet121,densenet_hmer] [--batch 8] [--size 256x1024]
        [--channels 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, peak_training_mib, table  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="256x1024", help="HxW")
    parser.add_argument("--channels", type=int, default=1, help="input channels (1: grayscale formulas)")
    parser.add_argument("--models", default="densenet121,densenet_hmer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    height, width = map(int, args.size.split("x"))
    shape = (args.batch, args.channels, height, width)
    rows = []
    for name in args.models.split(","):
        plain, efficient = (
            peak_training_mib(name, {"in_channels": args.channels, "memory_efficient": flag}, shape)
            for flag in (False, True)
        )
        rows.append({
            "model": name, "input": "x".join(map(str, shape)), "peak MiB": round(plain),
            "peak MiB memory_efficient": round(efficient), "ratio": round(efficient / plain, 3),
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(header("DenseNet training memory: forward + backward, peak RSS above the built model"))
    print(table(rows, ["model", "input", "peak MiB", "peak MiB memory_efficient", "ratio"]))


if __name__ == "__main__":
    main()
