"""`import backbones` stays as cheap as `import torch`: timm and torchvision load on first build."""

import subprocess
import sys


def test_timm_and_torchvision_load_only_when_a_family_builds_with_them():
    """`import backbones, backbones.adapters` loads neither; then densenet_hmer needs neither library, torchvision's
    DenseNet layers only torchvision, the ResNets timm's blocks (timm imports torchvision itself). One fresh
    process, each step in turn."""
    probe = (
        "import sys, backbones, backbones.adapters\n"
        "def loaded():\n"
        "    return ','.join(m for m in ('timm', 'torchvision') if m in sys.modules) or '-'\n"
        "steps = [loaded()]\n"
        "for name in ('densenet_hmer', 'densenet121', 'resnet18'):\n"
        "    backbones.build_backbone(name)\n"
        "    steps.append(loaded())\n"
        "print(' '.join(steps))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["-", "-", "torchvision", "timm,torchvision"]


def test_distribution_metadata_and_version():
    from importlib.metadata import distribution

    import backbones.adapters

    import backbones

    dist = distribution("backbone-swap")
    assert dist.version == backbones.__version__
    assert dist.metadata["License-Expression"] == "BSD-3-Clause" and "Typing :: Typed" in dist.metadata.get_all(
        "Classifier"
    )
    assert backbones.adapters.__name__ == "backbones.adapters"


def test_the_wheel_ships_one_top_level_package(tmp_path):
    """No top-level `adapters` (AdapterHub's import name): the folder is installed as backbones.adapters."""
    import shutil
    import zipfile
    from pathlib import Path

    import pytest

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building the wheel needs setuptools >= 77 (license expressions)")
    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    for name in ("backbones", "adapters"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(root / name, source / name)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, str(source), "-w", str(tmp_path)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("backbone_swap-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"backbones", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"backbones/py.typed", "backbones/adapters/masked.py", "backbones/families/timm/_backbone.py"} <= set(names)
    assert any(name.endswith("licenses/LICENSE") for name in names)
