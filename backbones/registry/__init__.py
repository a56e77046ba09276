"""The registry: names and namespaces (``timm:``) to builders, ``build_backbone`` (the one build pipeline: options,
entry, weights read, family built, weights loaded) and the one-word specs of the CLI (``NAME:key=value,...``).
"""

from ._build import build_backbone, build_on_meta, weight_sets
from ._registry import (
    BackboneEntry,
    Builder,
    Namespace,
    UnknownBackboneError,
    get_entry,
    list_backbones,
    natural_key,
    register_backbone,
    register_namespace,
    unregister_backbone,
    unregister_namespace,
)
from ._spec import format_spec, parse_spec, parse_value

__all__ = [
    "BackboneEntry",
    "Builder",
    "Namespace",
    "UnknownBackboneError",
    "build_backbone",
    "build_on_meta",
    "format_spec",
    "get_entry",
    "list_backbones",
    "natural_key",
    "parse_spec",
    "parse_value",
    "register_backbone",
    "register_namespace",
    "unregister_backbone",
    "unregister_namespace",
    "weight_sets",
]
