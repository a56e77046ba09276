"""The core's layering and seams: one pipeline, single-phase families, metadata that cannot drift."""

import ast
import inspect
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import backbones
from backbones import BackboneConfig, build_backbone
from backbones.core import COMMON_OPTIONS, SequentialBackbone, Stages, stride_of
from backbones.families import DenseNetHMER

PACKAGE = Path(backbones.__file__).parent
ROOT = PACKAGE.parent

LAYERS = (
    "backbones.core",
    "backbones.weights",
    "backbones.registry",
    "backbones.families",
    "backbones.deploy",
    "backbones.testing",
    "backbones.swapping",
    "backbones.cli",
)
"""The layers, bottom up: a module imports from its own layer and the ones below, never above. ``backbones`` (its
``__init__``, ``__main__``) gathers them all; ``backbones.adapters`` sits above it and nothing under ``backbones/``
imports it."""


def _module(path: Path) -> str:
    """The installed module name of a source file (``adapters/`` is installed as ``backbones.adapters``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "adapters":
        parts.insert(0, "backbones")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _under_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path, runtime_only: bool = False) -> set:
    """Every module a file imports, as absolute names (``from ..testing import x`` in ``backbones/cli/a.py`` is
    ``backbones.testing`` and ``backbones.testing.x``). ``runtime_only``: only what runs when the module is imported
    (its top-level statements, not ``if TYPE_CHECKING:`` blocks nor imports inside functions)."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names = set()
    for node in ast.walk(tree):
        if runtime_only and (parents.get(node) is not tree or _under_type_checking(node, parents)):
            if not (isinstance(parents.get(node), ast.If) and not _under_type_checking(node, parents)):
                continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parents_ = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(parents_ + ([node.module] if node.module else []))
            names.update({f"{base}.{alias.name}" for alias in node.names})
            if node.module:  # `from . import x` imports the submodule x, `from .m import x` the module m
                names.add(base)
    return names


SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "adapters").glob("*.py"))
MODULES = {_module(path): path for path in SOURCES}


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(name: str) -> int:
    """The index of the layer ``name`` belongs to; -1 outside the layers (``backbones``, adapters, third parties)."""
    return next((i for i, layer in enumerate(LAYERS) if _is_under(name, layer)), -1)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_downward(path):
    """A module imports its own layer and those below it; nothing under backbones/ imports the adapters; nothing in
    production imports the test kit."""
    module, imports = _module(path), {name for name in _imports(path) if _is_under(name, "backbones")}
    if _is_under(module, "backbones.adapters"):
        return  # above everything: it may import any public part of backbones
    assert not any(_is_under(name, "backbones.adapters") for name in imports), module
    if module in ("backbones", "backbones.__main__"):
        return
    own = _layer(module)
    assert own >= 0, f"{module} is in no layer: add its package to LAYERS"
    above = sorted(name for name in imports if _layer(name) > own)
    assert not above, (module, above)
    if module != "backbones.testing":
        assert not any(_is_under(name, "backbones.testing") for name in imports), module


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 50


def _too_long(path: Path) -> list:
    """What in ``path`` is past the house's sizes: the file's lines, each function's lines (decorators excluded)."""
    source = path.read_text()
    found = [f"{len(source.splitlines())} lines"] if len(source.splitlines()) > MAX_FILE_LINES else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{node.name} (line {node.lineno}): {length} lines")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_past_400_lines_and_no_function_past_50(path):
    assert not _too_long(path), _too_long(path)


def test_the_size_check_can_fail(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * 50 + "\n" * 360)
    assert _too_long(long) == ["411 lines", "f (line 1): 51 lines"]


def _cycle(graph: dict) -> list:
    """One import cycle of ``graph`` (module -> modules it imports), or ``[]``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for child in graph.get(node, ()):
            if state.get(child) == "open":
                return stack[stack.index(child) :] + [child]
            if child not in state:
                found = visit(child)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle_between_modules_or_packages():
    """What runs at import time (top-level imports, not TYPE_CHECKING blocks) forms no cycle, neither between
    modules nor between the packages that hold them."""
    graph = {
        module: {name for name in _imports(path, runtime_only=True) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }
    assert _cycle(graph) == [], _cycle(graph)
    packages = {}
    for module, imports in graph.items():
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        for name in imports:
            target = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
            if target != package and not _is_under(package, target):
                packages.setdefault(package, set()).add(target)
    assert _cycle(packages) == [], _cycle(packages)


def test_the_layer_checks_can_fail():
    """The resolver sees relative imports (``cli`` does import the registry; a family, the core); the cycle finder
    finds a cycle; the layer test would refuse a core module importing the registry."""
    assert "backbones.registry" in _imports(PACKAGE / "cli" / "_common.py")
    assert "backbones.core" in _imports(PACKAGE / "families" / "resnet.py")
    assert "backbones.core.check_mask" in _imports(ROOT / "adapters" / "sequence.py")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _layer("backbones.registry._build") > _layer("backbones.core._backbone") >= 0
    assert "backbones.core._backbone" not in _imports(PACKAGE / "core" / "_encoder.py", runtime_only=True)
    assert "backbones.core._backbone" in _imports(PACKAGE / "core" / "_encoder.py")


def _registers(path: Path) -> bool:
    return bool(re.search(r"register_(backbone|namespace)\(", path.read_text()))


FAMILY_MODULES = {_module(path) for path in (PACKAGE / "families").rglob("*.py") if _registers(path)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "families").rglob("*.py")), ids=lambda p: p.name)
def test_families_do_not_import_each_other(path):
    """Shared blocks live in the core or in a family package's private helpers; a family module imports no other
    family module (the packages' ``__init__`` gather them)."""
    module = _module(path)
    if path.name == "__init__.py":
        return
    imports = _imports(path)
    imported = {name for name in imports if name in FAMILY_MODULES} | {
        name.rsplit(".", 1)[0] for name in imports if name not in MODULES and name.rsplit(".", 1)[0] in FAMILY_MODULES
    }
    assert not imported - {module}, (module, sorted(imported))


def test_the_family_modules_are_found():
    assert {"backbones.families.resnet", "backbones.families.timm", "backbones.families.ocr.svtrv2"} <= FAMILY_MODULES
    assert "backbones.families.timm._grid" not in FAMILY_MODULES


def test_registry_imports_no_family_and_adapters_import_only_backbones():
    registry = set().union(*(_imports(path) for path in (PACKAGE / "registry").glob("*.py")))
    assert not any(_is_under(name, "backbones.families") for name in registry)
    allowed = set(sys.stdlib_module_names) | {"torch", "torchvision", "einops", "backbones"}
    framework = {"hf.py": {"transformers"}, "smp.py": {"segmentation_models_pytorch"}}
    for path in (ROOT / "adapters").glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path) if not name.startswith(".")}
        assert roots <= allowed | framework.get(path.name, set()), (path.name, roots - allowed)


def test_the_source_checkout_imports_without_the_install():
    """``backbones`` and its swap import from a source checkout: nothing under backbones/ needs the install's
    mapping of ``adapters/`` (a fresh interpreter with only the checkout on the path)."""
    probe = (
        "import sys, backbones; backbones.swap; assert 'backbones.adapters' not in sys.modules; "
        "print(backbones.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {[str(ROOT)] + _site_packages()!r}; {probe}"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == (PACKAGE / "__init__.py").resolve()


def _site_packages() -> list:
    """The venv's site-packages without the editable install's finder (torch, timm, ... but not backbones)."""
    import site

    return [path for path in site.getsitepackages() if Path(path).is_dir()]


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

    def __init__(self, config: BackboneConfig, *, declared_channels: int = 8) -> None:
        self.declared_channels = declared_channels
        super().__init__(config, family_options={"declared_channels": declared_channels})

    def build(self, config: BackboneConfig) -> Stages:
        stem = OrderedDict(conv=nn.Conv2d(self.in_channels, 8, 3, 2, 1))
        stages = [self.add_stage("stem", stem, 8, stride_of(*stem.values()))]
        stage = OrderedDict(pool=nn.MaxPool2d(2, 2, ceil_mode=True), extra=nn.MaxPool2d(2, 2, ceil_mode=True))
        stages.append(self.add_stage("stage1", stage, self.declared_channels, (4, 4)))
        return Stages(1, stages)


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
