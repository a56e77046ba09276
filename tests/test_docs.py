"""The documentation cannot drift from the code: the pictures' data is what docs/figures.py measures today, the
README is short and its family table is the registry's, and the API reference lists every public name."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

import backbones
from backbones import build_on_meta, list_backbones

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _figures_module()
STORED = json.loads((ROOT / "docs" / "images" / "figures.json").read_text())


@pytest.mark.parametrize("part", sorted(STORED))
def test_the_pictures_show_what_is_measured_today(part):
    """Run ``.venv/bin/python docs/figures.py`` when this fails: the code changed what a picture shows."""
    assert json.loads(json.dumps(getattr(figures, part)())) == STORED[part]


def test_the_pictures_are_drawn_from_the_data_and_used(tmp_path):
    paths = figures.draw(STORED, tmp_path)
    assert sorted(p.name for p in paths) == ["ceil_grid.svg", "formula_cost.svg", "layers.svg", "stride_plan.svg"]
    pages = "".join(page.read_text() for page in (ROOT / "docs").glob("*.md"))
    for path in paths:
        svg = path.read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "dc:date" not in svg
        assert (ROOT / "docs" / "images" / path.name).exists() and f"images/{path.name}" in pages
    assert "resnet50, strides 1,1,2,2" in (tmp_path / "formula_cost.svg").read_text()


def test_the_readme_is_short_and_starts_with_the_two_commands():
    assert len(README.splitlines()) <= 200
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick_start, re.DOTALL)
    assert len(commands) == 2 and commands[1].strip() == "bash .ci/run"
    assert "pip install" in commands[0] and ".venv/bin/backbones compare" in commands[0]
    assert len(re.findall(r"```(?:python|bash) \{\.runnable\}", README)) >= 3


def _stride(encoder) -> str:
    height, width = encoder.output_stride
    return str(height) if height == width else f"{height}x{width}"


def test_the_readme_family_table_is_the_registry():
    """Every registered name is in the table, with its native stride and its parameters (millions, no adapter)."""
    rows = re.findall(r"^\| (`[^|]*) \| ([^|]+) \| ([^|]+) \|$", README, re.MULTILINE)
    listed = {}
    for names, stride, params in rows:
        if "timm:" in names:
            continue
        for name, count in zip(re.findall(r"`(\w+)`", names), params.split(", "), strict=True):
            listed[name] = (stride.strip(), count.strip())
    assert sorted(listed) == sorted(list_backbones())
    for name, (stride, count) in listed.items():
        encoder = build_on_meta(name)
        measured = f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.2f} M"
        assert (stride, count) == (_stride(encoder), measured), name


def test_the_api_reference_lists_every_public_name():
    documented = set()
    for page in (ROOT / "docs" / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), re.MULTILINE))
    public = {f"backbones.{name}" for name in backbones.__all__}
    for module in ("adapters", "adapters.hf", "adapters.smp"):
        imported = pytest.importorskip(f"backbones.{module}")
        public |= {f"{module}.{name}" for name in imported.__all__}
    public = {name.replace("adapters.MaskedEncoder", "backbones.swapping.MaskedEncoder") for name in public}
    assert public <= documented, sorted(public - documented)
