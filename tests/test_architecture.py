"""The core's layering and seams: one pipeline, single-phase families, metadata that cannot drift."""

import ast
import inspect
import re
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


def _module(path: Path) -> str:
    """The installed module name of a source file (``adapters/`` is installed as ``backbones.adapters``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "adapters":
        parts.insert(0, "backbones")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    """Every module a file imports, as absolute names (``from ..testing import x`` in ``backbones/cli/a.py`` is
    ``backbones.testing`` and ``backbones.testing.x``)."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parents = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parents + ([node.module] if node.module else []))
            names.update({base} | {f"{base}.{alias.name}" for alias in node.names})
    return names


SOURCES = sorted(CORE.rglob("*.py")) + sorted((ROOT / "adapters").glob("*.py"))
TOP = (  # the layer above the core and the adapters
    "backbones.cli", "backbones.swapping", "backbones.swap_report", "backbones.probing", "backbones.__main__",
)  # fmt: skip


def _is_under(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_downward(path):
    """The core imports neither the adapters, nor the test kit, nor the top layer; the adapters import the core
    only; nothing in production imports the test kit."""
    module, imports = _module(path), _imports(path)
    if module != "backbones.testing":
        assert not any(_is_under(name, ["backbones.testing"]) for name in imports), module
    if _is_under(module, TOP) or module == "backbones":
        return
    forbidden = list(TOP) + ([] if _is_under(module, ["backbones.adapters"]) else ["backbones.adapters"])
    assert not any(_is_under(name, forbidden) for name in imports), (module, sorted(imports))


def test_the_import_resolver_sees_relative_imports():
    """The layering test would pass vacuously if relative imports were missed: ``cli`` does import the core."""
    assert "backbones.build" in _imports(CORE / "cli" / "common.py")
    assert "backbones.base" in _imports(CORE / "families" / "resnet.py")
    assert "backbones.contract.check_mask" in _imports(ROOT / "adapters" / "masked.py")


FAMILY_MODULES = {  # the modules that register something; the others are helpers (timm_grid, ocr_checkpoints)
    _module(path)
    for path in (CORE / "families").glob("*.py")
    if re.search(r"register_(backbone|namespace)\(", path.read_text())
}


@pytest.mark.parametrize("path", sorted((CORE / "families").glob("*.py")), ids=lambda p: p.name)
def test_families_do_not_import_each_other(path):
    """Shared blocks live in backbones/layers.py; a family may use helper modules, not another family."""
    module = _module(path)
    if path.name == "__init__.py":
        return
    others = {name.rsplit(".", 1)[0] if name not in FAMILY_MODULES else name for name in _imports(path)}
    assert not (others & FAMILY_MODULES) - {module}, (module, sorted(others & FAMILY_MODULES))


def test_the_family_modules_are_found():
    assert {"backbones.families.resnet", "backbones.families.timm", "backbones.families.svtrv2"} <= FAMILY_MODULES
    assert "backbones.families.timm_grid" not in FAMILY_MODULES


def test_registry_imports_no_family_and_adapters_import_only_the_core():
    registry = _imports(CORE / "registry.py")
    assert not any("families" in name or "resnet" in name or "densenet" in name for name in registry)
    allowed = {"__future__", "math", "typing", "collections", "torch", "torchvision", "einops", "backbones"}
    for path in (ROOT / "adapters").glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path)}
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


def test_a_meta_build_leaves_the_default_device_alone():
    """build_on_meta builds under torch.device("meta"); afterwards tensors and models are real again."""
    from backbones import build_on_meta

    meta = build_on_meta("resnet18", out_channels=8)
    assert all(p.is_meta for p in meta.parameters()) and not meta.training
    assert torch.empty(1).device.type == "cpu"
    encoder = build_backbone("resnet18", out_channels=8)
    assert encoder.training and all(t.device.type == "cpu" for t in [*encoder.parameters(), *encoder.buffers()])
