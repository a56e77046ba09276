"""Peak training memory (CPU RSS) of DenseNets with and without memory_efficient (gradient checkpointing).

Each configuration runs in a fresh subprocess (forward + backward, train mode) and reports its peak RSS
minus the RSS after building the model, so the weights are not counted.

    python benchmarks/densenet_memory.py [--models densenet121,densenet_hmer] [--batch 8] [--size 256x1024]
        [--channels 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import torch

CHILD = """
import resource, sys, torch
from backbones import build_backbone
name, efficient, n, c, h, w = sys.argv[1], sys.argv[2] == "1", *map(int, sys.argv[3:7])
torch.manual_seed(0)
model = build_backbone(name, in_channels=c, memory_efficient=efficient).train()
x = torch.randn(n, c, h, w)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model(x).mean().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def peak_mib(name: str, efficient: bool, shape: tuple) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, "1" if efficient else "0", *map(str, shape)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="256x1024", help="HxW")
    parser.add_argument("--channels", type=int, default=1, help="input channels (1: grayscale formulas)")
    parser.add_argument("--models", default="densenet121,densenet_hmer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    h, w = map(int, args.size.split("x"))
    rows = []
    for name in args.models.split(","):
        shape = (args.batch, args.channels, h, w)
        plain, efficient = peak_mib(name, False, shape), peak_mib(name, True, shape)
        rows.append(
            {
                "model": name,
                "input": list(shape),
                "plain_mib": round(plain),
                "memory_efficient_mib": round(efficient),
                "ratio": round(efficient / plain, 3),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print("| model | input | peak MiB | peak MiB memory_efficient | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['plain_mib']} | "
            f"{r['memory_efficient_mib']} | {r['ratio']} |"
        )


if __name__ == "__main__":
    main()
