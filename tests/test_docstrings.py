"""The examples in the docstrings (``>>>``) run and print what they say."""

import doctest
import importlib
from pathlib import Path

import pytest

import backbones

ROOT = Path(backbones.__file__).parent.parent


def _modules():
    for path in sorted(ROOT.joinpath("backbones").rglob("*.py")) + sorted(ROOT.joinpath("adapters").glob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "adapters":
            parts.insert(0, "backbones")
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if ">>>" in path.read_text():
            yield name


MODULES = list(_modules())


def test_there_are_examples():
    assert {"backbones", "backbones.core", "backbones.core._contract", "backbones.core._strides"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [test for test in finder.find(module, name) if test.examples]
    assert tests, f"{name} has '>>>' in its source but no example doctest can find"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} fail (see the output above)"
