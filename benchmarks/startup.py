"""Start-up costs: building a model, importing, the CLI.

- build time: ``build_backbone(name)`` against timm's ``create_model(name, features_only=True)`` (the same
  architecture with timm's feature wrapper), in one process, timed in alternation (ours, timm, timm again: the
  last is the noise yardstick); and the first build in a fresh process (median of ``--repeats`` processes), where
  nothing is cached yet;
- ``import torch`` vs ``import backbones`` (and what timm, torchvision add), wall time and peak RSS of fresh
  processes;
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
from common import header, interleaved_median_ms, table  # noqa: E402

BUILDS = [  # (our name, timm's architecture)
    ("resnet50", "resnet50"),
    ("densenet121", "densenet121"),
    ("timm:resnet50", "resnet50"),
    ("timm:convnext_tiny", "convnext_tiny"),
    ("timm:vit_small_patch16_224", "vit_small_patch16_224"),
]

FIRST_BUILD = """
import sys, time, timm, backbones
ours, theirs = sys.argv[1], sys.argv[2]
start = time.perf_counter()
backbones.build_backbone(ours) if sys.argv[3] == "ours" else timm.create_model(theirs, features_only=True)
print(time.perf_counter() - start)
"""


def build_rows(repeats: int, models: List[tuple], first_build: bool = True) -> List[Dict[str, object]]:
    """Median build times in one process, ours and timm's in alternation, and timm's again (noise)."""
    import timm

    from backbones import build_backbone

    rows = []
    for ours, theirs in models:
        fns = [
            lambda ours=ours: build_backbone(ours),
            lambda theirs=theirs: timm.create_model(theirs, features_only=True),
        ]
        fns.append(fns[1])
        mine, timm_ms, again = interleaved_median_ms(fns, warmup=1, repeats=repeats)
        first = [float("nan")] * 2
        if first_build:
            first = [
                statistics.median(_first_build(ours, theirs, who) for _ in range(repeats)) for who in ("ours", "timm")
            ]
        rows.append(
            {"model": ours, "ours ms": mine, "timm ms": timm_ms, "ours / timm": mine / timm_ms,
             "timm again / timm (noise)": again / timm_ms, "first build: ours ms": first[0],
             "first build: timm ms": first[1], "first build: ours / timm": first[0] / first[1]}
        )  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _first_build(ours: str, theirs: str, who: str) -> float:
    """The build in a fresh process (timm and backbones imported first): nothing cached yet."""
    result = subprocess.run([sys.executable, "-c", FIRST_BUILD, ours, theirs, who], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building {ours if who == 'ours' else theirs} failed: {result.stderr[-2000:]}")
    return 1000 * float(result.stdout.split()[-1])


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
    parser.add_argument("--models", help="comma-separated names of the build table (default: all of BUILDS)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)} (the smoke test)")
    parser.add_argument("--no-first-build", action="store_true", help="skip the fresh-process builds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    models = [row for row in BUILDS if not args.models or row[0] in args.models.split(",")]
    builds = build_rows(args.repeats, models, not args.no_first_build) if args.models or not args.quick else []
    rows = run(args.repeats, args.size, args.quick)
    if args.json:
        print(json.dumps({"builds": builds, "startup": rows}, indent=1))
        return
    print(header("Build time against timm's features_only model (medians; in one process, and first builds)"))
    columns = ["model", "ours ms", "timm ms", "ours / timm", "timm again / timm (noise)", "first build: ours ms",
               "first build: timm ms", "first build: ours / timm"]  # fmt: skip
    print(table(builds, columns) + "\n")
    print(header("Import and CLI start-up (fresh processes, median wall time, peak RSS)"))
    print(table(rows, ["command", "wall s", "wall over import torch s", "peak RSS MiB"]))


if __name__ == "__main__":
    main()
