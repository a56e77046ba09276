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
