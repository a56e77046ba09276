"""Shared by the benchmark scripts: the machine header, median timing, peak memory in a fresh process, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch


def machine() -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: Dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def header(title: str) -> str:
    info = machine()
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (
        f"## {title}\n\n{info['cpu']} ({info['cores']} cores), torch {info['torch']}, {info['threads']} threads, "
        f"Python {info['python']}{gpu}\n"
    )


def median_ms(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 7, cuda: bool = False) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def interleaved_median_ms(fns: Sequence[Callable[[], object]], *, warmup: int = 2, repeats: int = 7) -> List[float]:
    """Medians for several functions timed in alternation (slow drifts of the machine hit all alike)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


# Peak RSS of a phase in a child process. ru_maxrss is no good here: Linux carries the parent's peak across
# fork + exec, so a child of a process that imported torch starts at the parent's peak. Writing 5 to
# /proc/self/clear_refs resets VmHWM (the peak) to the current RSS instead.
PEAK_HELPERS = """
def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
def reset_peak_kib():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")
def peak_kib():
    return _status_kib("VmHWM")
"""

PEAK_CHILD = (
    PEAK_HELPERS
    + """
import json, sys, torch
from backbones import build_backbone
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
model = build_backbone(spec.pop("name"), **spec.pop("kwargs")).train()
# a tiny warm-up step first: lazy imports (checkpointing pulls in torch._dynamo, ~150 MiB) are not activations
model(torch.randn(1, *spec["shape"][1:2], 64, 64)).float().mean().backward()
model.zero_grad(set_to_none=True)
x = torch.randn(*spec["shape"])
base = reset_peak_kib()
model(x).float().mean().backward()
print(peak_kib() - base)
"""
)


def peak_training_mib(name: str, kwargs: Dict[str, object], shape: Sequence[int]) -> float:
    """Peak RSS of one forward + backward (train mode) in a fresh process, above the RSS after building the model
    and a 64x64 warm-up step (Linux)."""
    spec = json.dumps({"name": name, "kwargs": kwargs, "shape": list(shape)})
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, spec], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def table(rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
