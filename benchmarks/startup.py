"""The CLI and import path: wall time and peak RSS of fresh processes.

- ``import torch`` vs ``import backbones`` (and what timm, torchvision add);
- ``backbones check resnet152 --input 1x3x4096x4096`` (meta device: shapes, parameters, FLOPs) vs a real
  eval forward of the same model at the same size.

    python benchmarks/startup.py [--repeats 5] [--size 4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, table  # noqa: E402

REAL_FORWARD = """
import sys, torch
from backbones import build_backbone
size = int(sys.argv[1])
model = build_backbone("resnet152").eval()
with torch.no_grad():
    print(model(torch.zeros(1, 3, size, size)).shape)
"""


def measure(command: List[str], repeats: int) -> Dict[str, float]:
    """Median wall seconds and max peak RSS (MiB) of ``command`` run ``repeats`` times."""
    walls, peaks = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
        walls.append(time.perf_counter() - start)
        if status != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
        peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
    return {"wall s": statistics.median(walls), "peak RSS MiB": max(peaks)}


def run(repeats: int, size: int) -> List[Dict[str, object]]:
    python = sys.executable
    cases = [
        ("python -c pass", [python, "-c", "pass"]),
        ("import torch", [python, "-c", "import torch"]),
        ("import torch, torchvision", [python, "-c", "import torch, torchvision"]),
        ("import torch, timm", [python, "-c", "import torch, timm"]),
        ("import backbones", [python, "-c", "import backbones"]),
        (f"backbones check resnet152 --input 1x3x{size}x{size}",
         [python, "-m", "backbones", "check", "resnet152", "--input", f"1x3x{size}x{size}"]),
        (f"real forward, resnet152 at 1x3x{size}x{size}", [python, "-c", REAL_FORWARD, str(size)]),
    ]  # fmt: skip
    rows = []
    for label, command in cases:
        heavy = label.startswith("real forward")
        row = {"command": label, **measure(command, 1 if heavy else repeats)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    base = rows[1]["wall s"]
    for row in rows:
        row["wall over import torch s"] = row["wall s"] - base
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=4096, help="H = W of the resnet152 input")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.size)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header("Import and CLI start-up (fresh processes, median wall time, peak RSS)"))
    print(table(rows, ["command", "wall s", "wall over import torch s", "peak RSS MiB"]))


if __name__ == "__main__":
    main()
