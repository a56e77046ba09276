"""Deployment: ONNX export with dynamic batch, H and W, and an onnxruntime check against PyTorch.

The exporter is torch's dynamo-based one (``torch.onnx.export(..., dynamo=True)``, the default and the
maintained path in torch 2.14; it needs ``onnxscript`` and writes opset 18 or newer): the model is captured with
``torch.export`` (the ceil-mode pooling of this library is written so that it exports with dynamic sizes) and
translated to ONNX. Install the ``export`` extra (``pip install "backbone-swap[export]"``) for onnx, onnxruntime and
onnxscript.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..core import (
    RELATIVE_TOLERANCE,
    Encoder,
    MaskedEncoderBase,
    Pair,
    check_bool,
    check_input_size,
    check_int,
    check_pair,
    check_sizes,
    eval_mode,
)

__all__ = ["MIN_OPSET", "ExportCheck", "check_onnx", "export_onnx"]

_logger = logging.getLogger(__name__)
MIN_OPSET = 18
"""The oldest opset the dynamo exporter writes."""


def _encoder_of(model: object) -> Tuple[Encoder, bool]:
    """The encoder, and whether ``model`` is a masked wrapper (:class:`~backbones.base.MaskedEncoderBase`)."""
    if isinstance(model, Encoder):
        return model, False
    if isinstance(model, MaskedEncoderBase):
        return model.encoder, True
    raise TypeError(
        f"encoder must be a backbones.Backbone, FeaturePyramid or MaskedEncoder, got {type(model).__name__}"
    )


def _checked_model(model: nn.Module) -> Tuple[Encoder, bool]:
    encoder, masked = _encoder_of(model)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ValueError(
            f"{type(encoder).__name__} is on the meta device (shapes only, no weights), which cannot be exported; "
            f"build it on the CPU (or move it with .to_empty(device='cpu') and load its weights) first"
        )
    return encoder, masked


def _example(encoder: Encoder, masked: bool, size: Tuple[int, int]) -> Tuple[Tensor, ...]:
    parameter = next(iter(encoder.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    x = torch.randn(2, encoder.in_channels, *size, dtype=dtype, device=device)
    return (x, torch.zeros(2, *size, dtype=torch.bool, device=device)) if masked else (x,)


def _io_names(encoder: Encoder, masked: bool) -> Tuple[List[str], List[str]]:
    outputs = encoder.output_names()
    return (["image", "mask"], outputs + ["feature_mask"]) if masked else (["image"], outputs)


def _checked_options(
    path: object, dynamic: object, opset: object, example_size: object, encoder: Encoder
) -> Tuple[Path, Tuple[int, int]]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming the .onnx file to write, got {path!r}")
    check_bool(dynamic, "dynamic")
    if opset is not None:
        import onnx

        check_int(opset, "opset", MIN_OPSET, onnx.defs.onnx_opset_version())
    if example_size is None:
        stride = encoder.output_info[-1].stride
        return Path(path), (4 * stride[0] + 3, 6 * stride[1] + 5)
    size = check_pair(example_size, "example_size", minimum=2)
    check_input_size(size[0], size[1], encoder.input_limits)
    return Path(path), size


def export_onnx(
    encoder: nn.Module,
    path: Union[str, os.PathLike],
    *,
    dynamic: bool = True,
    opset: Optional[int] = None,
    example_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Export a backbone, a pyramid or a :class:`~backbones.adapters.MaskedEncoder` to an ONNX file.

    Inputs are named ``image`` ``[N, C, H, W]`` (and ``mask``, bool ``[N, H, W]``, True = padding, for a
    ``MaskedEncoder``); outputs ``feature`` (``feature0``, ``feature1``, ... for a pyramid) and ``feature_mask``.
    With ``dynamic`` the batch, H and W are free: any ``H, W >= 2`` gives the ``ceil(H/sh) x ceil(W/sw)`` grid. The
    encoder is exported in eval mode and left in its mode.

    Args:
        encoder: a built encoder on a real device, any family and stride configuration, ``timm:`` models included.
        path: the ``.onnx`` file to write (its folder is created).
        dynamic: free batch, H and W (else fixed at ``example_size``).
        opset: the ONNX opset, 18 or newer; ``None`` = the exporter's default.
        example_size: ``(H, W)`` of the example input used for tracing, each >= 2 (default: a few times the stride).

    Returns:
        The path of the file, validated with ``onnx.checker``.

    Raises:
        ImportError: onnx or onnxscript is missing (install the ``export`` extra).
        TypeError, ValueError: a bad argument, a meta-device model, or a model that cannot be exported (named).
    """
    backbone, masked = _checked_model(encoder)
    path, size = _checked_options(path, dynamic, opset, example_size, backbone)
    onnx = _exporter_modules()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"path {str(path)!r}: its folder cannot be created ({error.strerror or error})") from None
    return _write(encoder, backbone, masked, path, (dynamic, opset, size), onnx)


_Options = Tuple[bool, Optional[int], Pair]  # dynamic, opset, example size


def _write(encoder: nn.Module, backbone: Encoder, masked: bool, path: Path, options: _Options, onnx: Any) -> Path:
    """The export itself (see :func:`export_onnx`); ``options``: ``(dynamic, opset, example size)``."""
    dynamic, opset, size = options
    input_names, output_names = _io_names(backbone, masked)
    free = torch.export.Dim.DYNAMIC
    image, mask = {0: free, 2: free, 3: free}, {0: free, 1: free, 2: free}
    dynamic_shapes = ((image, mask) if masked else (image,)) if dynamic else None
    try:
        with eval_mode(encoder), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder, _example(backbone, masked, size), str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
                opset_version=opset, input_names=input_names, output_names=output_names, external_data=False,
            )  # fmt: skip
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise ValueError(f"{type(backbone).__name__} cannot be exported to ONNX: {_first_line(error)}") from error
    _logger.info("exported %s to %s", type(backbone).__name__, path)
    return path


def _exporter_modules() -> Any:
    """``onnx`` (and ``onnxscript`` imported), or an ``ImportError`` naming the extra to install."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"export_onnx needs onnx and onnxscript: pip install 'backbone-swap[export]' ({error})"
        ) from None
    return onnx


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


def _session(path: object, encoder: Encoder, masked: bool, threads: int):  # -> onnxruntime.InferenceSession
    """An onnxruntime session for ``path``, after checking that the file exists and takes this encoder's input."""
    import onnxruntime

    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        raise ValueError(f"path must name an existing .onnx file, got {path!r}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{str(path)!r} is not a model onnxruntime can load: {_first_line(error)}") from error
    inputs = [node.name for node in session.get_inputs()]
    if inputs != (["image", "mask"] if masked else ["image"]):
        raise ValueError(f"{str(path)!r} takes inputs {inputs}, not those of a {type(encoder).__name__} export")
    channels = session.get_inputs()[0].shape[1]
    if channels != encoder.in_channels:
        raise ValueError(
            f"{str(path)!r} was exported for {channels} input channels, but the encoder takes {encoder.in_channels}"
        )
    return session


def _checked_sizes(sizes: object, session: Any, encoder: Encoder, batch: object) -> List[Tuple[int, int]]:
    check_int(batch, "batch", 1)
    checked = check_sizes(sizes, "sizes")
    for height, width in checked:
        check_input_size(height, width, encoder.input_limits)
    fixed = session.get_inputs()[0].shape
    for h, w in checked:
        other_size = isinstance(fixed[2], int) and (h, w) != (fixed[2], fixed[3])
        if other_size or (isinstance(fixed[0], int) and batch != fixed[0]):
            raise ValueError(
                f"the file was exported with a static input [{fixed[0]}, {fixed[1]}, {fixed[2]}, {fixed[3]}]: it only "
                f"takes batch {fixed[0]} at {fixed[2]}x{fixed[3]}, got batch {batch} at {h}x{w} (export with "
                f"dynamic=True for other sizes)"
            )
    return checked


def _compare(got: List, expected: List[Tensor]) -> Tuple[float, float]:
    """The (max abs difference, max abs value) of the output whose difference is largest relative to its scale."""
    import numpy as np

    worst = (0.0, 0.0, -1.0)
    for result, reference in zip(got, expected):
        scale = float(reference.abs().max())
        same = result.shape == tuple(reference.shape)
        diff = float(np.abs(result - reference.numpy()).max()) if same else float("inf")
        worst = max(worst, (diff, scale, diff / max(scale, 1e-12)), key=lambda item: item[2])
    return worst[0], worst[1]


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

    Raises:
        TypeError, ValueError: a bad argument (sizes, batch, threads), a missing or unloadable file, or a file
            exported for another input (channel count, static size).
    """
    backbone, masked = _checked_model(encoder)
    check_int(threads, "threads", 0)
    session = _session(path, backbone, masked, threads)
    checked = _checked_sizes(sizes, session, backbone, batch)
    generator = torch.Generator().manual_seed(0)
    with eval_mode(encoder), torch.no_grad():
        return [_check_size(encoder, backbone, masked, session, (batch, h, w), generator) for h, w in checked]


def _check_size(
    encoder: nn.Module, backbone: Encoder, masked: bool, session: Any, shape: Tuple[int, int, int], generator: Any
) -> ExportCheck:
    """One :class:`ExportCheck`: random input (and mask) of ``shape = (batch, H, W)``, both runtimes."""
    batch, height, width = shape
    x = torch.randn(batch, backbone.in_channels, height, width, generator=generator)
    feeds: Dict[str, object] = {"image": x.numpy()}
    expected_mask = None
    if masked:
        mask = torch.rand(batch, height, width, generator=generator) > 0.5
        feeds["mask"] = mask.numpy()
        feature, expected_mask = encoder(x, mask)
        expected = [feature]
    else:
        expected = backbone.forward_outputs(x)
    got = session.run(None, feeds)
    diff, scale = _compare(got, expected)
    return ExportCheck(
        size=(height, width),
        shapes=tuple(tuple(result.shape) for result in got[: len(expected)]),
        expected_shapes=tuple(
            (batch, info.channels, *size)
            for info, size in zip(backbone.output_info, backbone.output_sizes(height, width))
        ),
        max_abs_diff=diff,
        max_abs_value=scale,
        masks_equal=expected_mask is None or bool((got[-1] == expected_mask.numpy()).all()),
    )
