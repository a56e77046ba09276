"""The CLI and import path: wall time and peak RSS of fresh processes.

- ``import torch`` vs ``import backbones`` (and what timm, torchvision add);
- ``backbones check resnet152 --input 1x3x4096x4096`` (meta device: shapes, parameters, FLOPs) vs a real
  eval forward of the same model at the same size.

    python benchmarks/startup.py [--repeats 5] [--size 4096] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
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


# Runs ``python -c CODE ...`` or ``python -m MODULE ...`` and reports the peak RSS of that process at exit
# (VmHWM: ru_maxrss would start at this parent's peak, which Linux carries across fork + exec).
WRAPPER = """
import atexit, runpy, sys
def _report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("\\nPEAK_KIB " + line.split()[1] + "\\n")
atexit.register(_report)
mode, target, *rest = sys.argv[1:]
if mode == "-m":
    sys.argv = [target, *rest]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def measure(arguments: List[str], repeats: int) -> Dict[str, float]:
    """Median wall seconds and max peak RSS (MiB) of ``python *arguments`` run ``repeats`` times."""
    walls, peaks = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", WRAPPER, *arguments], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        walls.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"python {' '.join(arguments)} failed: {result.stderr[-2000:]}")
        peaks.append(int(result.stderr.rsplit("PEAK_KIB ", 1)[1].split()[0]) / 1024)
    return {"wall s": statistics.median(walls), "peak RSS MiB": max(peaks)}


QUICK = ("python -c pass", "import torch", "import backbones")


def run(repeats: int, size: int, quick: bool = False) -> List[Dict[str, object]]:
    cases = [
        ("python -c pass", ["-c", "pass"]),
        ("import torch", ["-c", "import torch"]),
        ("import torch, torchvision", ["-c", "import torch, torchvision"]),
        ("import torch, timm", ["-c", "import torch, timm"]),
        ("import backbones", ["-c", "import backbones"]),
        (f"backbones check resnet152 --input 1x3x{size}x{size}",
         ["-m", "backbones", "check", "resnet152", "--input", f"1x3x{size}x{size}"]),
        (f"real forward, resnet152 at 1x3x{size}x{size}", ["-c", REAL_FORWARD, str(size)]),
    ]  # fmt: skip
    if quick:
        cases = [case for case in cases if case[0] in QUICK]
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
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (the smoke test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.repeats, args.size, args.quick)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header("Import and CLI start-up (fresh processes, median wall time, peak RSS)"))
    print(table(rows, ["command", "wall s", "wall over import torch s", "peak RSS MiB"]))


if __name__ == "__main__":
    main()
