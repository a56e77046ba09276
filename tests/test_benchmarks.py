"""Each benchmark script runs at its tiniest setting, in this process through its ``main(argv)`` (the scripts
that measure fresh processes or peak memory still start their own children)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _main(capsys, script, *args):
    spec = importlib.util.spec_from_file_location(f"benchmark_{script[:-3]}", ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    module.main(list(args))
    return capsys.readouterr().out


def test_densenet_memory_script(capsys):
    out = _main(capsys, "densenet_memory.py", "--batch", "1", "--size", "64x64", "--models", "densenet_hmer", "--json")
    rows = json.loads(out)
    assert [row["model"] for row in rows] == ["densenet_hmer"]
    assert all(row["peak MiB"] > 0 and row["peak MiB memory_efficient"] > 0 for row in rows), rows


def test_parity_script(capsys):
    """The script runs and reports each comparison; resnet18 agrees with torchvision, timm and itself on repeated
    gray channels within test_parity.py's tolerance (1e-5 of the output's scale)."""
    rows = json.loads(_main(capsys, "parity.py", "--models", "resnet18", "--size", "32x32", "--json"))
    assert [row["model"].split()[0] for row in rows] == ["resnet18"] * len(rows) and len(rows) == 4
    assert all(row["shape"] == [2, 512, 1, 1] and row["max_abs_value"] > 0 for row in rows)
    assert all(row["max_abs_diff"] <= 1e-5 * row["max_abs_value"] for row in rows), rows


def test_overhead_script(capsys):
    rows = json.loads(
        _main(capsys, "overhead.py", "--models", "resnet18", "--shapes", "formula b1", "--repeats", "1", "--json")
    )
    assert [row["variant"] for row in rows] == ["eager", "channels_last"]
    assert all(row["ours ms"] > 0 and row["ours / torchvision"] > 0 for row in rows)
    assert rows[0]["same output shape as torchvision"]


def test_routes_script(capsys):
    options = ["--models", "resnet18", "--sizes", "32x80", "--batch", "1", "--repeats", "1", "--no-memory", "--json"]
    rows = json.loads(_main(capsys, "routes.py", *options))
    assert [row["route"] for row in rows][-1] == "native /16" and len(rows) == 4
    assert {row["output"] for row in rows} == {"2x5"}
    assert rows[2]["GFLOPs"] > rows[0]["GFLOPs"]  # the layer2 layout costs more than dropping the last stride


def test_startup_script(capsys):
    options = ["--repeats", "1", "--quick", "--models", "densenet121", "--no-first-build", "--json"]
    result = json.loads(_main(capsys, "startup.py", *options))
    rows, (build,) = result["startup"], result["builds"]
    assert [row["command"] for row in rows] == ["python -c pass", "import torch", "import backbones"]
    assert all(row["wall s"] > 0 and row["peak RSS MiB"] > 0 for row in rows)
    assert build["model"] == "densenet121" and build["ours ms"] > 0 and build["ours / timm"] > 0


def test_gpu_script_runs_or_says_it_skipped(capsys):
    import torch

    result = json.loads(
        _main(capsys, "gpu.py", "--json", "--batch", "1", "--size", "32x64", "--no-compile", "--repeats", "1")
    )
    if torch.cuda.is_available():
        assert isinstance(result, list) and result and all(isinstance(row, dict) for row in result)
    else:
        assert result == {"skipped": "skipped: CUDA is not available on this machine"}


def test_inference_script(capsys):
    options = ["--models", "resnet18", "--batches", "1", "--size", "32x64", "--repeats", "1", "--no-compile"]
    rows = json.loads(_main(capsys, "inference.py", *options, "--no-onnx", "--json"))
    variants = ["eager", "eager (copy)", "channels_last", "fuse()", "fuse() + channels_last"]
    assert [row["variant"] for row in rows] == variants and rows[0]["/ eager"] == 1.0
    assert all(row["ms"] > 0 for row in rows)


def test_meta_shapes_script(capsys):
    rows = json.loads(
        _main(capsys, "meta_shapes.py", "--models", "resnet18", "--size", "32x32", "--repeats", "1", "--json")
    )
    assert [row["model"] for row in rows] == ["resnet18"] and rows[0]["input"] == "1x3x32x32"
    assert all(
        row[key] > 0 for row in rows for key in ("shortcut ms", "decompositions ms", "decompositions / shortcut")
    )


def test_swap_cost_script(capsys):
    rows = json.loads(_main(capsys, "swap_cost.py", "--repeats", "1", "--targets", "resnet18", "--quick", "--json"))
    assert [row["old encoder"].split(",")[0] for row in rows] == [
        "CoMER-sized DenseNet-B",
        "PARSeq-sized ViT-S at 32x128",
    ]
    assert all(row["swap ms"] > 0 and row["swap / build"] > 0 for row in rows)
