"""What the ``backbones`` commands share: usage errors, argument types, building a spec, tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core import Encoder
from ..registry import build_on_meta, get_entry, parse_spec, parse_value
from ..weights import resolve_pretrained

Size = Tuple[int, int]


class UsageError(Exception):
    """Bad arguments: exit code 2."""


def report_error(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr and, under ``--json``, one JSON object on stdout; returns the exit code."""
    print(f"backbones {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit": code}))
    return code


def count(text: str) -> int:
    """A whole number >= 0 (``--verify``, ``--show``)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def opset(text: str) -> int:
    """An ONNX opset the exporter writes: 18 up to what the installed onnx knows."""
    from ..deploy import MIN_OPSET

    try:
        import onnx

        newest = onnx.defs.onnx_opset_version()
    except ImportError:
        newest = 10**6
    if not text.isdigit() or not MIN_OPSET <= int(text) <= newest:
        raise argparse.ArgumentTypeError(
            f"expected an opset in {MIN_OPSET}..{newest} (the dynamo exporter's), got {text!r}"
        )
    return int(text)


def pair_or_int(text: str) -> Any:
    value = parse_value(text)
    if isinstance(value, int) or (
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)
    ):
        return value
    raise argparse.ArgumentTypeError(f"expected an int or SHxSW, got {text!r}")


def shape(text: str) -> Tuple[int, ...]:
    value = parse_value(text)
    if not (isinstance(value, tuple) and len(value) == 4 and all(v >= 1 for v in value)):
        raise argparse.ArgumentTypeError(f"expected NxCxHxW with positive ints, got {text!r}")
    return value


def size_list(text: str) -> List[Size]:
    sizes = []
    for item in filter(None, text.split(",")):
        value = parse_value(item)
        if not (isinstance(value, tuple) and len(value) == 2 and min(value) >= 1):
            raise argparse.ArgumentTypeError(f"expected HxW[,HxW...] with positive ints, got {item!r}")
        sizes.append(value)
    return sizes


def check_pretrained(name: str, pretrained: Any) -> None:
    """``pretrained=`` of a spec: the file exists or the tag is known (nothing is read or downloaded)."""
    if pretrained in (None, False):
        return
    found = resolve_pretrained(name, get_entry(name).weights, pretrained)
    if isinstance(found, Path) and not found.is_file():
        raise ValueError(f"pretrained file {str(found)!r} does not exist or is not a file")


def build_spec(spec: str, overrides: Optional[Dict[str, Any]] = None) -> Tuple[str, Dict[str, Any], Encoder]:
    """``NAME:key=value,...`` (plus ``overrides`` that are not ``None``) built on the meta device: the name, the
    options and the encoder; a bad spec is a :class:`UsageError`."""
    try:
        name, kwargs = parse_spec(spec)
        kwargs.update({k: v for k, v in (overrides or {}).items() if v is not None})
        check_pretrained(name, kwargs.get("pretrained"))
        return name, kwargs, build_on_meta(name, **kwargs)
    except (KeyError, TypeError, ValueError, NotImplementedError) as error:
        raise UsageError(str(error) if not isinstance(error, KeyError) else error.args[0]) from error


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def stride_text(stride: Sequence[int]) -> str:
    return str(stride[0]) if stride[0] == stride[1] else f"{stride[0]}x{stride[1]}"
