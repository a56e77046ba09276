"""``backbones export``: ONNX with dynamic sizes, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core import RELATIVE_TOLERANCE, size_problem
from ..registry import build_backbone, format_spec
from ..weights import CheckpointReadError
from ._common import UsageError, build_spec, report_error, table


def _writable(path: str) -> Path:
    """``--onnx``'s file: its folder exists or can be made, and it is not a folder itself."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--onnx {path}: is a folder; name the .onnx file to write")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--onnx {path}: its folder cannot be made ({error.strerror or error})") from None
    return target


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import check_onnx, export_onnx

    name, kwargs, model = build_spec(args.spec)
    _writable(args.onnx)
    if args.check:
        bounds = model.input_limits.bounds()
        problems = [f"{h}x{w}: {size_problem(h, w, bounds)}" for h, w in args.check if size_problem(h, w, bounds)]
        if problems:
            raise UsageError(f"--check {'; '.join(problems)}")
    try:
        model = build_backbone(name, **kwargs).eval()
        if args.fuse:
            model.fuse()
        encoder: Any = model
    except (FileNotFoundError, CheckpointReadError, KeyError, TypeError, ValueError) as error:
        raise UsageError(str(error) if not isinstance(error, KeyError) else error.args[0]) from error
    try:
        path = export_onnx(encoder, args.onnx, opset=args.opset)
    except (ImportError, ValueError) as error:
        return report_error(args, f"{format_spec(name, kwargs)} cannot be exported: {error}", 1)
    checks = check_onnx(encoder, path, args.check) if args.check else []
    ok = all(check.ok for check in checks)
    if args.json:
        checked = [{**vars(check), "ok": check.ok} for check in checks]
        print(json.dumps({"spec": format_spec(name, kwargs), "onnx": str(path), "ok": ok, "checks": checked}, indent=2))
        return 0 if ok else 1
    print(f"{format_spec(name, kwargs)} -> {path} ({path.stat().st_size / 2**20:.1f} MiB, dynamic batch, H and W)")
    if checks:
        rows = [
            (f"{c.size[0]}x{c.size[1]}", " ".join("x".join(map(str, s)) for s in c.shapes), f"{c.max_abs_diff:.2e}",
             f"{c.max_abs_diff / max(c.max_abs_value, 1e-12):.2e}", "ok" if c.ok else "FAILED")
            for c in checks
        ]  # fmt: skip
        print(table(rows, ["input", "onnxruntime output", "max abs diff", "relative", "verdict"]))
        print(f"{'OK' if ok else 'MISMATCH'}: shapes against output_size, differences within {RELATIVE_TOLERANCE:g} "
              f"of each output's max abs value")  # fmt: skip
    return 0 if ok else 1
