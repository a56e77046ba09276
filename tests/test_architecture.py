"""The core's layering and seams: one pipeline, single-phase families, metadata that cannot drift."""

import ast
import inspect
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import backbones
from backbones import COMMON_OPTIONS, BackboneConfig, DenseNetHMER, SequentialBackbone, Stages, build_backbone
from backbones.layers import stride_of

CORE = Path(backbones.__file__).parent
ROOT = CORE.parent


def _imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.update({base} | {f"{base}.{alias.name}" for alias in node.names})
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_imports_neither_the_test_kit_nor_the_adapters(path):
    imports = _imports(path)
    if path.name != "testing.py":
        assert not any(name.endswith("testing") and "backbones" in name or name == ".testing" for name in imports)
    assert not any(name.startswith(("adapters", "backbones.adapters", ".adapters")) for name in imports)


def test_registry_imports_no_family_and_adapters_only_import_the_core():
    registry = _imports(CORE / "registry.py")
    assert not any("families" in name or "resnet" in name or "densenet" in name for name in registry)
    allowed = {"__future__", "math", "typing", "torch", "einops", "backbones", ""}
    for path in (ROOT / "adapters").glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path)}  # relative imports give ""
        assert roots <= allowed, (path.name, roots - allowed)


def test_common_options_are_the_config_fields_and_the_builder_keywords():
    keywords = [
        p.name
        for p in inspect.signature(build_backbone).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert tuple(keywords) == COMMON_OPTIONS


def test_a_family_class_uses_its_own_default_in_channels():
    encoder = DenseNetHMER(BackboneConfig())
    assert encoder.in_channels == 1 and encoder.features.conv1.in_channels == 1
    assert encoder.pretrained_report is None and encoder.out_channels == 684


class _Drifting(SequentialBackbone):
    """Declares /4 but its stage pools once more: the base's meta check must catch it."""

    def build(self, config: BackboneConfig, *, declared_channels: int = 8) -> Stages:
        stem = OrderedDict(conv=nn.Conv2d(self.in_channels, 8, 3, 2, 1))
        stages = [self.add_stage("stem", stem, 8, stride_of(*stem.values()))]
        stage = OrderedDict(pool=nn.MaxPool2d(2, 2, ceil_mode=True), extra=nn.MaxPool2d(2, 2, ceil_mode=True))
        stages.append(self.add_stage("stage1", stage, declared_channels, (4, 4)))
        return Stages(stages, 1)


def test_metadata_that_drifts_from_the_modules_is_refused_at_build():
    with pytest.raises(
        RuntimeError, match=r"_Drifting declares stage 1 \(stage1\) as \[N, 8, ceil\(H/4\), ceil\(W/4\)\]"
    ):
        _Drifting(BackboneConfig())
    with pytest.raises(RuntimeError, match=r"as \[N, 5, ceil\(H/4\)"):
        _Drifting(BackboneConfig(), declared_channels=5)


def test_timm_levels_report_their_dilation():
    encoder = build_backbone("timm:resnet18", output_stride=8, dilate=True)
    assert [info.stride[0] for info in encoder.feature_info] == [2, 4, 8, 8, 8]
    assert [info.dilation[0] for info in encoder.feature_info] == [1, 1, 1, 2, 4]


def test_building_does_not_touch_weights_outside_the_model():
    encoder = build_backbone("resnet18", out_channels=8)
    assert not any(p.is_meta for p in encoder.parameters()) and encoder.training
    assert all(isinstance(b, torch.Tensor) and not b.is_meta for b in encoder.buffers())
