"""The examples in the docstrings (``>>>``) run and print what they say."""

import ast
import doctest
import importlib
import inspect
import textwrap
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


PUBLIC_MODULES = ("backbones", "backbones.adapters", "backbones.adapters.hf", "backbones.adapters.smp")
"""What the API reference (docs/reference/) documents: every name of these modules' ``__all__``."""
NOT_DOCUMENTED_HERE = {"extra_repr", "train"}
"""nn.Module's own methods, which the overrides do not change in meaning."""


def _public_callables():
    """(qualified name, object, owner class or None) for each public name and each public method or property a
    class of them defines itself."""
    for module_name in PUBLIC_MODULES:
        module = pytest.importorskip(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            yield f"{module_name}.{name}", value, None
            if inspect.isclass(value):
                for member, attribute in vars(value).items():
                    if member.startswith("_") or member in NOT_DOCUMENTED_HERE:
                        continue
                    function = attribute.fget if isinstance(attribute, property) else attribute
                    function = getattr(function, "__func__", function)
                    if inspect.isfunction(function):
                        yield f"{module_name}.{name}.{member}", attribute, value


def _format_problems(value, owner) -> list:
    """What is missing from a docstring: the docstring itself, or the ``Args:`` / ``Returns:`` / ``Raises:`` section
    that the signature and body call for (a property needs none; ``raise NotImplementedError`` needs no Raises)."""
    function = getattr(value, "__func__", value)
    if isinstance(value, property):
        return [] if value.__doc__ else ["a docstring"]
    if inspect.isclass(value):
        return [] if value.__doc__ else ["a docstring"]
    name = function.__name__
    inherited = owner is not None and any(name in vars(base) for base in owner.__mro__[1:])
    if not function.__doc__:
        return [] if inherited else ["a docstring"]
    doc, tree = function.__doc__, ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    missing = []
    if [p for p in inspect.signature(function).parameters if p not in ("self", "cls")] and "Args:" not in doc:
        missing.append("Args:")
    body = [node for statement in tree.body for node in ast.walk(statement)]
    if any(isinstance(node, ast.Return) and node.value is not None for node in body) and "Returns:" not in doc:
        missing.append("Returns:")
    raises = [node for node in body if isinstance(node, ast.Raise) and "NotImplementedError" not in ast.unparse(node)]
    if raises and "Raises:" not in doc:
        missing.append("Raises:")
    return missing


def test_the_public_api_documents_args_returns_and_raises():
    """The reference is generated from these docstrings (Google style, as mkdocstrings reads them)."""
    problems = {
        name: missing for name, value, owner in _public_callables() if (missing := _format_problems(value, owner))
    }
    assert not problems, "\n".join(f"{name}: needs {', '.join(missing)}" for name, missing in sorted(problems.items()))


def test_the_docstring_check_can_fail():
    def documented(x: int) -> int:
        """Twice x."""
        if x < 0:
            raise ValueError("x")
        return 2 * x

    assert _format_problems(documented, None) == ["Args:", "Returns:", "Raises:"]
