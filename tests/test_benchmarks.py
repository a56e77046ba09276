"""Each benchmark script runs at its tiniest setting."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_densenet_memory_script():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "densenet_memory.py"), "--batch", "2", "--size", "64x64", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (row,) = json.loads(result.stdout)
    assert row["model"] == "densenet121" and row["plain_mib"] >= 0 and row["memory_efficient_mib"] >= 0


def test_parity_script_rows_within_tolerance():
    """Same weights, same features: 1e-5 against torchvision and timm; float64 grayscale identity 1e-9;
    float32 grayscale within 2e-5 of the feature scale (summation order differs)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "parity.py"), "--models", "resnet18,densenet121",
         "--size", "64x64", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    rows = json.loads(result.stdout)
    assert len(rows) == 8
    for row in rows:
        if row["model"].endswith("float64"):
            assert row["max_abs_diff"] <= 1e-9, row
        elif "in_channels=1" in row["model"]:
            assert row["max_abs_diff"] <= 2e-5 * row["max_abs_value"], row
        else:
            assert row["max_abs_diff"] <= 1e-5, row
