"""One-word backbone specs: ``NAME:key=value,key=value`` with the keywords of ``build_backbone``.

    >>> parse_spec("resnet50:out_channels=684,output_stride=16,in_channels=1")
    ('resnet50', {'out_channels': 684, 'output_stride': 16, 'in_channels': 1})
    >>> parse_spec("resnet34:strides=1/2x1/2x1/2x1")
    ('resnet34', {'strides': (1, (2, 1), (2, 1), (2, 1))})

Values: ints, floats, ``true``/``false``, ``none``; ``AxB[xC...]`` is a tuple of ints (``16x4``,
``1x1x2x2``); ``/`` separates the items of a tuple whose items may be ``AxB`` pairs; anything else
is a string. ``pretrained=`` keeps its value as written (a path or a tag), except ``true``/``false``/``none``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Tuple

__all__ = ["format_spec", "parse_spec", "parse_value"]

_INT = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE]-?\d+)$")
_KEY = re.compile(r"^[A-Za-z_]\w*$")
_RAW_KEYS = ("pretrained",)  # a file path or a tag: kept as written (paths hold "/", tags may look like "16x4")


def parse_value(text: str) -> Any:
    """``"16x4"`` -> ``(16, 4)``, ``"1/2x1"`` -> ``(1, (2, 1))``, ``"true"`` -> ``True``, ``"0.2"`` -> ``0.2``."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    if "/" in text:
        return tuple(parse_value(part) for part in text.split("/"))
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    parts = lowered.split("x")
    if len(parts) > 1 and all(_INT.match(p) for p in parts):
        return tuple(int(p) for p in parts)
    return text


def parse_spec(spec: str) -> Tuple[str, Dict[str, Any]]:
    """Split ``NAME:key=value,...`` into the name and ``build_backbone`` keywords.

    ``timm:NAME:...`` keeps ``timm:NAME`` as the name. Raises ``ValueError`` naming the bad part.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be NAME or NAME:key=value,..., got {spec!r}")
    head, _, options = spec.partition(":")
    if head == "timm":
        name_rest, _, options = options.partition(":")
        head = f"timm:{name_rest}"
    kwargs: Dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not _KEY.match(key) or not value:
            raise ValueError(f"spec {spec!r}: options must look like key=value, got {item!r}")
        if key in kwargs:
            raise ValueError(f"spec {spec!r}: option {key!r} is given twice")
        raw = key in _RAW_KEYS and value.lower() not in ("true", "false", "none")
        kwargs[key] = value if raw else parse_value(value)
    return head, kwargs


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        if all(isinstance(v, int) for v in value):
            return "x".join(map(str, value))
        return "/".join(_format_value(v) for v in value)
    if value is None or isinstance(value, bool):
        return str(value).lower()
    return str(value)


def format_spec(name: str, kwargs: Dict[str, Any]) -> str:
    """The inverse of :func:`parse_spec`."""
    options = ",".join(f"{key}={_format_value(value)}" for key, value in kwargs.items())
    return f"{name}:{options}" if options else name
