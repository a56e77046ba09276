"""Deployment: ONNX export with dynamic batch, H and W, and an onnxruntime check against PyTorch.

The exporter is torch's dynamo-based one (``torch.onnx.export(..., dynamo=True)``, the default and the
maintained path in torch 2.14; it needs ``onnxscript``): the model is captured with ``torch.export`` (the
ceil-mode pooling of this library is written so that it exports with dynamic sizes) and translated to ONNX.
Install the ``export`` extra (``pip install "backbone-swap[export]"``) for onnx, onnxruntime and onnxscript.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .base import Backbone
from .meta import eval_mode

__all__ = ["ExportCheck", "check_onnx", "export_onnx"]

_logger = logging.getLogger(__name__)
RELATIVE_TOLERANCE = 1e-4
"""ONNX Runtime against PyTorch: max abs difference <= this times the PyTorch output's max abs value."""


def _unwrap(model: nn.Module) -> Tuple[Backbone, bool]:
    """The backbone, and whether ``model`` is a masked wrapper (``forward(x, mask)`` around ``model.encoder``,
    as ``backbones.adapters.MaskedEncoder``)."""
    if isinstance(model, Backbone):
        return model, False
    inner = getattr(model, "encoder", None)
    if isinstance(model, nn.Module) and isinstance(inner, Backbone):
        if len(inspect.signature(model.forward).parameters) == 2:
            return inner, True
    raise TypeError(f"encoder must be a backbones.Backbone or a MaskedEncoder, got {type(model).__name__}")


def _example(encoder: Backbone, masked: bool, size: Tuple[int, int]) -> Tuple[Tensor, ...]:
    parameter = next(iter(encoder.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.randn(2, encoder.in_channels, *size, dtype=encoder.weights_dtype.dtype, device=device)
    return (x, torch.zeros(2, *size, dtype=torch.bool, device=device)) if masked else (x,)


def _names(encoder: Backbone, masked: bool) -> Tuple[List[str], List[str]]:
    outputs = [f"feature{i}" for i in range(len(encoder.output_info))] if encoder.multi_output else ["feature"]
    return (["image", "mask"], outputs + ["feature_mask"]) if masked else (["image"], outputs)


def export_onnx(
    encoder: nn.Module,
    path: Union[str, os.PathLike],
    *,
    dynamic: bool = True,
    opset: Optional[int] = None,
    example_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Export a backbone (or a :class:`~backbones.adapters.MaskedEncoder`) to an ONNX file.

    Inputs are named ``image`` ``[N, C, H, W]`` (and ``mask``, bool ``[N, H, W]``, True = padding, for a
    ``MaskedEncoder``); outputs ``feature`` (``feature0``, ``feature1``, ... with ``out_indices``) and
    ``feature_mask``. With ``dynamic`` the batch, H and W are free: any ``H, W >= 2`` gives the contract's
    ``ceil(H/sh) x ceil(W/sw)`` grid. The encoder is exported in eval mode and left in its mode.

    Args:
        encoder: a built backbone, any family and stride configuration, ``timm:`` models included.
        path: the ``.onnx`` file to write (its folder is created).
        dynamic: free batch, H and W (else fixed at ``example_size``).
        opset: the ONNX opset; ``None`` = the exporter's default.
        example_size: ``(H, W)`` of the example input used for tracing (default: a few times the stride).

    Returns:
        The path of the file, validated with ``onnx.checker``.

    Raises:
        ImportError: onnx or onnxscript is missing (install the ``export`` extra).
        ValueError: the model cannot be exported; the message names the failing module or operator.
    """
    backbone, masked = _unwrap(encoder)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be an int >= 7 (or None for the exporter's default), got {opset!r}")
    if not isinstance(dynamic, bool):
        raise TypeError(f"dynamic must be a bool, got {dynamic!r}")
    stride = backbone.output_info[-1].stride
    size = example_size or (4 * stride[0] + 3, 6 * stride[1] + 5)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and v >= 2 for v in size)):
        raise ValueError(f"example_size must be an (H, W) tuple of ints >= 2, got {example_size!r}")
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"export_onnx needs onnx and onnxscript: pip install 'backbone-swap[export]' ({error})"
        ) from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _example(backbone, masked, tuple(size))
    input_names, output_names = _names(backbone, masked)
    dynamic_shapes = None
    if dynamic:
        free = torch.export.Dim.DYNAMIC
        image_dims = {0: free, 2: free, 3: free}
        dynamic_shapes = (image_dims, {0: free, 1: free, 2: free}) if masked else (image_dims,)
    try:
        with eval_mode(encoder), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder, example, str(path), dynamo=True, dynamic_shapes=dynamic_shapes, opset_version=opset,
                input_names=input_names, output_names=output_names, external_data=False,
            )  # fmt: skip
    except Exception as error:
        raise ValueError(f"{type(backbone).__name__} cannot be exported to ONNX: {_first_line(error)}") from error
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    _logger.info("exported %s to %s", type(backbone).__name__, path)
    return path


def _first_line(error: Exception) -> str:
    cause = error.__cause__ or error
    lines = [line for line in str(cause).splitlines() if line.strip()]
    detail = next((line for line in lines if "Error" in line or "error" in line), lines[0] if lines else "")
    return f"{type(cause).__name__}: {detail[:500]}"


@dataclass(frozen=True)
class ExportCheck:
    """One size of :func:`check_onnx`: ONNX Runtime's outputs against PyTorch's.

    Attributes:
        size: ``(H, W)`` of the input.
        shapes: ONNX Runtime's output shapes; expected_shapes: ``[N, C, ceil(H/sh), ceil(W/sw)]`` per output.
        max_abs_diff, max_abs_value: of the output whose difference is largest relative to its scale.
        masks_equal: the downsampled mask equals PyTorch's (always True without a mask).
    """

    size: Tuple[int, int]
    shapes: Tuple[Tuple[int, ...], ...]
    expected_shapes: Tuple[Tuple[int, ...], ...]
    max_abs_diff: float
    max_abs_value: float
    masks_equal: bool = True

    @property
    def ok(self) -> bool:
        within = self.max_abs_diff <= RELATIVE_TOLERANCE * max(self.max_abs_value, 1e-12)
        return self.shapes == self.expected_shapes and within and self.masks_equal


def check_onnx(
    encoder: nn.Module,
    path: Union[str, os.PathLike],
    sizes: Sequence[Tuple[int, int]],
    *,
    batch: int = 2,
    threads: int = 0,
) -> List[ExportCheck]:
    """Run the ONNX file with onnxruntime at ``sizes`` and compare with the encoder (eval mode).

    ``ok`` means every output's shape is the contract's and its max abs difference is within
    :data:`RELATIVE_TOLERANCE` of that output's max abs value (random weights give outputs from 1 to 1e6, so
    a fixed absolute tolerance would fail on rounding alone).
    """
    import numpy as np
    import onnxruntime

    backbone, masked = _unwrap(encoder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    checks = []
    with eval_mode(encoder):
        for height, width in sizes:
            x = torch.randn(batch, backbone.in_channels, height, width, generator=generator)
            feeds: Dict[str, np.ndarray] = {"image": x.numpy()}
            with torch.no_grad():
                if masked:
                    mask = torch.rand(batch, height, width, generator=generator) > 0.5
                    feeds["mask"] = mask.numpy()
                    feature, expected_mask = encoder(x, mask)
                    expected = [feature]
                else:
                    out = backbone(x)
                    expected = out if isinstance(out, list) else [out]
            got = session.run(None, feeds)
            grids = backbone.output_size(height, width)
            grids = grids if isinstance(grids, list) else [grids]
            worst = (0.0, 0.0, -1.0)
            for result, reference in zip(got, expected):
                scale = float(reference.abs().max())
                diff = (
                    float(np.abs(result - reference.numpy()).max())
                    if result.shape == tuple(reference.shape)
                    else float("inf")
                )
                worst = max(worst, (diff, scale, diff / max(scale, 1e-12)), key=lambda item: item[2])
            checks.append(
                ExportCheck(
                    size=(height, width),
                    shapes=tuple(tuple(result.shape) for result in got[: len(expected)]),
                    expected_shapes=tuple((batch, ref.shape[1], *grid) for ref, grid in zip(expected, grids)),
                    max_abs_diff=worst[0],
                    max_abs_value=worst[1],
                    masks_equal=bool((got[-1] == expected_mask.numpy()).all()) if masked else True,
                )
            )
    return checks
