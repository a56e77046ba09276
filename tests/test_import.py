"""`import backbones` stays as cheap as `import torch`: timm and torchvision load on first build."""

import subprocess
import sys


def _modules_after(code: str) -> set:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in ('timm', 'torchvision') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_importing_the_package_loads_neither_timm_nor_torchvision():
    assert _modules_after("import backbones, backbones.adapters") == set()


def test_building_a_resnet_and_a_densenet_loads_them_on_demand():
    loaded = _modules_after("import backbones\nbackbones.build_backbone('densenet121')")
    assert "torchvision" in loaded
