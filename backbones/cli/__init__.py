"""``backbones`` command line: ``list``, ``check``, ``compare``, ``weights``, ``export``, ``swap``. Exit 0 = the
contract holds (the file loads, every candidate fits), 1 = it does not, 2 = usage error. ``--json`` prints one JSON
object for machines, errors included (``{"error": ..., "exit": 2}``, with the line on stderr). Never a traceback
(``BACKBONES_TRACEBACK=1`` shows one for an unexpected failure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn, Optional, Sequence

from ._catalog import cmd_check, cmd_list, cmd_weights
from ._common import UsageError, count, opset, pair_or_int, report_error, shape, size_list
from ._compare import cmd_compare
from ._export import cmd_export
from ._swap import cmd_swap

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors are one JSON object on stdout as well when ``--json`` is on the command line."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            print(json.dumps({"error": message, "exit": 2}))
        super().error(message)


def _list_and_check(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("list", help="registered backbones with native channels, stride and parameters")
    p.add_argument("pattern", nargs="?", help="shell-style filter such as 'resnet*' or 'timm:conv*'")
    p.add_argument("--family", help="only this family: resnet, densenet, densenet_hmer, ocr, ...")
    p.set_defaults(run=cmd_list)
    p = commands.add_parser("check", help="per-stage shapes, parameters and GFLOPs for one input (meta device)")
    p.add_argument("spec", help="NAME or NAME:key=value,...")
    p.add_argument("--out-channels", type=int, help="channels of the 1x1 adapter's output")
    p.add_argument("--output-stride", type=pair_or_int, help="S or SHxSW")
    p.add_argument("--strides", type=pair_or_int, nargs="+", metavar="S", help="per-stage strides, e.g. 1 2x1 2x1 2x1")
    p.add_argument("--dilate", action="store_true", help="turn removed strides into dilation")
    p.add_argument("--in-channels", type=int, help="input channels")
    p.add_argument("--input", type=shape, metavar="NxCxHxW", help="input shape (default 1xCx224x224)")
    p.set_defaults(run=cmd_check)
    p = commands.add_parser("weights", help="weight tags of a backbone and their cache state, or test-load a file")
    p.add_argument("spec", help="NAME or NAME:key=value,... (the model a --file is loaded into)")
    p.add_argument("--file", metavar="PATH", help="load this .pth/.pt/.safetensors file and report what fitted")
    p.set_defaults(run=cmd_weights)


def _compare_and_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="does CANDIDATE give REFERENCE's channels, output grid and masks?")
    p.add_argument("reference", help="SPEC of the encoder in use")
    p.add_argument("candidate", help="SPEC of the replacement")
    p.add_argument("--sizes", type=size_list, metavar="HxW,...", help="input sizes to compare")
    p.add_argument("--images", metavar="PATH", help="folder or .tar[.gz] of images; their header sizes are compared")
    p.add_argument("--verify", type=count, default=24, metavar="N", help="sizes run through both forwards (24)")
    p.add_argument("--show", type=count, default=10, metavar="N", help="mismatches to print (default 10)")
    p.set_defaults(run=cmd_compare)
    p = commands.add_parser("export", help="export to ONNX (dynamic batch, H, W) and check it with onnxruntime")
    p.add_argument("spec", help="NAME or NAME:key=value,... (pretrained=... loads weights first)")
    p.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    p.add_argument("--opset", type=opset, help="ONNX opset, 18 or newer (default: the exporter's)")
    p.add_argument("--check", type=size_list, metavar="HxW,...", help="compare onnxruntime with PyTorch at these sizes")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorms into convs first (Backbone.fuse)")
    p.set_defaults(run=cmd_export)


def _swap(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("swap", help="which encoders could replace the one inside a model, at what cost")
    p.add_argument("target", metavar="TARGET", help="package.module:callable or path/to/file.py:callable (the model)")
    p.add_argument("--at", required=True, metavar="PATH", help="the encoder's path in the model, e.g. encoder.model")
    p.add_argument("--to", required=True, nargs="+", metavar="SPEC", help="candidate backbones (NAME:key=value,...)")
    p.add_argument("--kwargs", default="", metavar="JSON", help="keyword arguments of the callable, a JSON object")
    p.add_argument("--input", type=shape, metavar="NxCxHxW", help="the input the encoder is used with")
    p.add_argument("--allow-grid-change", action="store_true", help="accept a new grid where the old is not ceil")
    p.add_argument("--grid", type=pair_or_int, metavar="HxW", help="the token grid where the probes cannot tell it")
    p.set_defaults(run=cmd_swap)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="backbones",
        description="Check that a backbone swap fits before training. SPEC = NAME or NAME:key=value,... "
        "(build_backbone keywords; tuples as 1x1x2x2 or 16x4; per-stage tuples as 1/2x1/2x1/2x1).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_list_and_check, _compare_and_export, _swap):
        add(commands)
    for command in commands.choices.values():
        command.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in argv
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        return report_error(args, str(error), 2)
    except Exception as error:  # never a traceback: an unexpected failure is one line, exit 1
        if os.environ.get("BACKBONES_TRACEBACK"):
            raise
        return report_error(args, f"{type(error).__name__}: {error}", 1)


if __name__ == "__main__":
    sys.exit(main())
