"""The registry: a table of names -> entries, and namespaces that resolve prefixed names on demand.

    @register_backbone("tiny_cnn", family="custom")
    def tiny_cnn(config: BackboneConfig, *, width: int = 16) -> Backbone:
        return TinyCNN(config, width=width)

A builder ``fn(config: BackboneConfig, *, <family options>) -> Backbone`` takes the family's options
as keyword-only parameters (a ``Backbone`` class registered as it is: those of its ``__init__``). A namespace
(``timm:``) resolves ``"<prefix>:<name>"`` to an entry and lists its names; :func:`register_namespace` adds one of
your own. This module imports no family. Lookups, listing and building are safe while another thread registers or
unregisters: the tables change under one lock, and readers take a snapshot.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

from ..core import Backbone
from ..weights import WeightSource

__all__ = [
    "BackboneEntry",
    "Namespace",
    "UnknownBackboneError",
    "get_entry",
    "list_backbones",
    "register_backbone",
    "register_namespace",
    "unregister_backbone",
    "unregister_namespace",
]

Builder = Callable[..., Backbone]
B = TypeVar("B", bound=Builder)


class UnknownBackboneError(KeyError):
    """A name that is not registered; the message suggests the closest registered names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneEntry:
    """One registered name.

    Attributes:
        name: the name users pass (``"resnet50"``, ``"timm:convnext_atto"``).
        builder: ``fn(config, **options) -> Backbone``.
        family: the family's label (``"resnet"``).
        options: the family's own keyword options; ``None`` = the builder checks them itself.
        description: one line for ``backbones list``.
        weights: where its published weights come from (``pretrained=True`` takes the first's default).
    """

    name: str
    builder: Builder
    family: str
    options: Optional[Tuple[str, ...]]
    description: str = ""
    weights: Tuple[WeightSource, ...] = ()


@dataclass(frozen=True)
class Namespace:
    """Names ``"<prefix>:<name>"`` resolved on demand.

    Attributes:
        prefix: ``"timm"``.
        resolve: ``name -> BackboneEntry`` (the name without the prefix); raises ``KeyError`` when unknown.
        list_names: ``pattern -> names`` (without the prefix) for a shell-style pattern or ``None``.
    """

    prefix: str
    resolve: Callable[[str], BackboneEntry]
    list_names: Callable[[Optional[str]], List[str]]


_TABLE: Dict[str, BackboneEntry] = {}
_NAMESPACES: Dict[str, Namespace] = {}
_LOCK = threading.RLock()  # every change of the two tables; readers copy under it


def _entries() -> Dict[str, BackboneEntry]:
    with _LOCK:
        return dict(_TABLE)


def _namespaces() -> Dict[str, Namespace]:
    with _LOCK:
        return dict(_NAMESPACES)


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ValueError(f"{what} must be a non-empty string without ':' or surrounding spaces, got {name!r}")
    return name


def register_backbone(
    name: str, *, family: Optional[str] = None, description: str = "", weights: Tuple[WeightSource, ...] = ()
) -> Callable[[B], B]:
    """Decorator that registers ``fn(config: BackboneConfig, *, **options) -> Backbone`` under ``name``.

    A :class:`~backbones.Backbone` subclass can be registered as it is: its options are the keyword-only
    parameters of its ``__init__``.

    Args:
        name: the registered name; a duplicate is refused (:func:`unregister_backbone` first).
        family: the family's label (default: ``name``).
        description: one line (default: the first line of the builder's docstring).
        weights: published weight sources, e.g. ``(TorchvisionWeights("resnet50"), TimmWeights("resnet50"))``.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        TypeError: a family, description or weights of the wrong type, or a builder that is not callable.
        ValueError: ``name`` is empty or holds ``:``, or is already registered (when the decorator is applied).
    """
    _check_name(name, "name")
    if family is not None and not isinstance(family, str):
        raise TypeError(f"family must be a string (the family's label) or None, got {family!r}")
    if not isinstance(description, str):
        raise TypeError(f"description must be a string, got {description!r}")
    if not isinstance(weights, (tuple, list)) or not all(isinstance(w, WeightSource) for w in weights):
        raise TypeError(
            f"weights must be a tuple of weight sources such as (TorchvisionWeights('resnet50'), "
            f"TimmWeights('resnet50')), got {weights!r}"
        )

    def decorator(builder: B) -> B:
        if not callable(builder):
            raise TypeError(
                f"register_backbone({name!r}) decorates a builder function or a Backbone class, got {builder!r}"
            )
        parameters = inspect.signature(builder).parameters.values()  # a Backbone class: its __init__'s
        options = tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        with _LOCK:
            if name in _TABLE:
                raise ValueError(f"a backbone named {name!r} is already registered (family {_TABLE[name].family!r})")
            _TABLE[name] = BackboneEntry(name, builder, family or name, options, doc, tuple(weights))
        return builder

    return decorator


def unregister_backbone(name: str) -> BackboneEntry:
    """Remove ``name`` from the table (test suites that register a family call this in their teardown).

    Args:
        name: a registered name.

    Returns:
        The removed entry.

    Raises:
        UnknownBackboneError: ``name`` is not registered.
    """
    with _LOCK:
        if name not in _TABLE:
            raise UnknownBackboneError(f"cannot unregister {name!r}: it is not registered")
        return _TABLE.pop(name)


def register_namespace(
    prefix: str, resolve: Callable[[str], BackboneEntry], list_names: Callable[[Optional[str]], List[str]]
) -> Namespace:
    """Make ``"<prefix>:<name>"`` resolve through ``resolve(name)`` (as ``timm:`` does).

    Args:
        prefix: the namespace, without the colon.
        resolve: ``name -> BackboneEntry``, raising ``KeyError`` for names it does not know.
        list_names: ``pattern or None -> names`` (without the prefix), for :func:`list_backbones`.

    Returns:
        The registered namespace.

    Raises:
        TypeError: ``resolve`` or ``list_names`` is not callable.
        ValueError: ``prefix`` is empty or holds ``:``, or is already registered.
    """
    _check_name(prefix, "prefix")
    for what, function in (("resolve", resolve), ("list_names", list_names)):
        if not callable(function):
            raise TypeError(f"register_namespace({prefix!r}): {what} must be a function, got {function!r}")
    with _LOCK:
        if prefix in _NAMESPACES:
            raise ValueError(f"a namespace {prefix + ':'!r} is already registered")
        _NAMESPACES[prefix] = Namespace(prefix, resolve, list_names)
        return _NAMESPACES[prefix]


def unregister_namespace(prefix: str) -> Namespace:
    """Remove the namespace ``prefix``.

    Args:
        prefix: a registered namespace, without the colon.

    Returns:
        The removed namespace.

    Raises:
        UnknownBackboneError: ``prefix`` is not registered.
    """
    with _LOCK:
        if prefix not in _NAMESPACES:
            raise UnknownBackboneError(f"cannot unregister namespace {prefix!r}: it is not registered")
        return _NAMESPACES.pop(prefix)


def natural_key(name: str) -> Tuple[object, ...]:
    """Sort key that puts ``resnet18`` before ``resnet101``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower()))


def list_backbones(pattern: Optional[str] = None) -> List[str]:
    """Registered names in natural order (``resnet18`` before ``resnet101``).

    Args:
        pattern: a shell-style wildcard such as ``"resnet*"``; with a namespace prefix it lists that namespace:
            ``list_backbones("timm:convnext*")``. ``None``: every registered name.

    Returns:
        The matching names.

    Raises:
        TypeError: ``pattern`` is not a string, or a namespace lists something else than names.
        UnknownBackboneError: the pattern's namespace is not registered.
    """
    if pattern is not None and not isinstance(pattern, str):
        raise TypeError(f"pattern must be a shell-style string such as 'resnet*' or None, got {pattern!r}")
    if pattern is not None and ":" in pattern:
        prefix, rest = pattern.split(":", 1)
        namespace = _namespaces().get(prefix)
        if namespace is None:
            raise UnknownBackboneError(
                f"unknown namespace {prefix + ':'!r} in pattern {pattern!r}; namespaces: {_namespace_list()}"
            )
        names = namespace.list_names(rest or None)
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"the list_names of namespace {prefix + ':'!r} must return a list of names, got {names!r}")
        return sorted((f"{prefix}:{n}" for n in names), key=natural_key)
    names = sorted(_entries(), key=natural_key)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def _namespace_list() -> str:
    return ", ".join(f"{p}:" for p in sorted(_namespaces())) or "none"


def get_entry(name: str) -> BackboneEntry:
    """The registry's entry for a name.

    Args:
        name: a registered name or ``"<prefix>:<name>"`` (``timm:convnext_atto``).

    Returns:
        Its :class:`~backbones.registry.BackboneEntry` (builder, family, options, description, weights).

    Raises:
        TypeError: ``name`` is not a string.
        UnknownBackboneError: (a ``KeyError``) the name is not registered; the message suggests close names.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'resnet50' or 'timm:convnext_atto', got {name!r}")
    table = _entries()
    if name in table:
        return table[name]
    if ":" in name:
        prefix, rest = name.split(":", 1)
        namespace = _namespaces().get(prefix)
        if namespace is not None:
            entry = namespace.resolve(rest)
            if not isinstance(entry, BackboneEntry):
                raise TypeError(
                    f"the resolve function of namespace {prefix + ':'!r} returned {type(entry).__name__} for {rest!r}, "
                    f"not a BackboneEntry (it raises KeyError for names it does not know)"
                )
            return entry
        raise UnknownBackboneError(f"unknown namespace {prefix + ':'!r} in {name!r}; namespaces: {_namespace_list()}")
    folded = {n.lower(): n for n in table}
    key = name.strip().lower().replace("-", "_")
    prefixed = [n for n in sorted(table, key=natural_key) if n.lower().startswith(key)] if key else []
    close = prefixed[:5] or [folded[n] for n in difflib.get_close_matches(key, list(folded), n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownBackboneError(
        f"unknown backbone name {name!r}{hint} (`backbones list` or list_backbones() shows all {len(table)} names)"
    )
