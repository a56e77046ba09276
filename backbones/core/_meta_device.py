"""Shapes without activations: running a module with meta-device stand-ins for its weights.

Used by the base (the build-time check of each stage's grid), the reports the CLI prints, the timm
resolver's probes and the test kit. Nothing here copies or changes a weight.
"""

from __future__ import annotations

import contextlib
import math
from itertools import chain
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["MetaCaller", "count_flops", "eval_mode", "is_meta", "meta_call"]


class _Call(nn.Module):
    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.module, self.method)(*args)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block, then every submodule back in exactly the mode it had (a frozen stage,
    a BatchNorm kept in eval by hand: nothing is switched by a blanket ``train()``)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


def is_meta(module: nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` lives on the meta device."""
    return all(t.is_meta for t in chain(module.parameters(), module.buffers()))


def _shape_only(x: Any, *others: Any) -> bool:
    """Whether a shape-keeping op on ``x`` may answer without its kernel: a meta tensor, one dtype."""
    if not (isinstance(x, Tensor) and x.is_meta):
        return False
    return all(t is None or t.dtype == x.dtype for t in others)


def _sizes_fit(op: str, expected: Sequence[int], **tensors: Any) -> None:
    for name, tensor in tensors.items():
        if tensor is not None and tuple(tensor.shape) != tuple(expected):
            raise RuntimeError(f"{op}: {name} has shape {tuple(tensor.shape)}, the input needs {tuple(expected)}")


def _batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    if not _shape_only(x, running_mean, running_var, weight, bias) or x.dim() < 2:
        return None
    if training and x.shape[0] * math.prod(x.shape[2:]) == 1:  # what the real kernel refuses
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
    _sizes_fit("batch_norm", x.shape[1:2], running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    return torch.empty_like(x)


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = tuple(normalized_shape)
    if not _shape_only(x, weight, bias) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
        return None
    _sizes_fit("layer_norm", shape, weight=weight, bias=bias)
    return torch.empty_like(x)


def _activation(x, inplace=False):
    if not _shape_only(x):
        return None
    return x if inplace else torch.empty_like(x)


def _gelu(x, approximate="none"):
    return torch.empty_like(x) if _shape_only(x) and approximate in ("none", "tanh") else None


class _ShapeOnlyOps(TorchFunctionMode):
    """On meta tensors, the norms and activations that keep their input's shape answer ``empty_like(input)``
    after the size checks of the real kernels. Their meta kernels are Python decompositions, with which a meta
    forward takes 2.5-6x as long (``benchmarks/meta_shapes.py``). Anything else runs the real function."""

    _SHORTCUTS: ClassVar[Dict[Callable[..., Any], Callable[..., Optional[Tensor]]]] = {
        F.batch_norm: _batch_norm,
        F.layer_norm: _layer_norm,
        F.hardswish: _activation,
        F.hardsigmoid: _activation,
        F.gelu: _gelu,
    }

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        shortcut = self._SHORTCUTS.get(func)
        out = shortcut(*args, **kwargs) if shortcut is not None else None
        return func(*args, **kwargs) if out is None else out


class MetaCaller:
    """``module``'s methods called with meta stand-ins for its weights, prepared once for many calls (a probe calls
    one module at several sizes): see :func:`meta_call`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.stand_ins: Optional[Dict[str, Tensor]] = None
        if not is_meta(module):
            named = chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False))
            self.stand_ins = {f"module.{name}": torch.empty_like(t, device="meta") for name, t in named}

    def __call__(self, method: str, *args: Any) -> Any:
        with torch.no_grad(), _ShapeOnlyOps():
            if self.stand_ins is None:
                return getattr(self.module, method)(*args)
            return torch.func.functional_call(_Call(self.module, method), self.stand_ins, args, tie_weights=False)


def meta_call(module: nn.Module, method: str, *args: Any) -> Any:
    """``module.<method>(*args)`` under ``torch.no_grad`` with every parameter and buffer replaced by a
    meta tensor of its shape (``args`` are meta tensors): shapes only, no weight is copied or touched."""
    return MetaCaller(module)(method, *args)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (multiply and add counted separately, as ``torch.utils.flop_counter``) of one eval forward."""
    counter = FlopCounterMode(display=False)
    with eval_mode(model), counter:
        meta_call(model, "forward", torch.empty(tuple(input_shape), device="meta"))
    return counter.get_total_flops()
