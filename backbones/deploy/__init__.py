"""Deployment: ONNX export with dynamic batch, H and W, and an onnxruntime check against PyTorch (``Encoder.fuse()``,
the BatchNorm folding, is a method of the core's encoders)."""

from ._onnx import MIN_OPSET, ExportCheck, check_onnx, export_onnx

__all__ = ["MIN_OPSET", "ExportCheck", "check_onnx", "export_onnx"]
