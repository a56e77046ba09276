"""Shapes without activations: running a module with meta-device stand-ins for its weights.

Used by the base (the build-time check of each stage's grid), the reports the CLI prints, the timm
resolver's probes and the test kit. Nothing here copies or changes a weight.
"""

from __future__ import annotations

import contextlib
from itertools import chain
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "eval_mode", "is_meta", "meta_call"]


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


def meta_call(module: nn.Module, method: str, *args: Any) -> Any:
    """``module.<method>(*args)`` under ``torch.no_grad`` with every parameter and buffer replaced by a
    meta tensor of its shape (``args`` are meta tensors): shapes only, no weight is copied or touched."""
    with torch.no_grad():
        if is_meta(module):
            return getattr(module, method)(*args)
        named = chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False))
        stand_ins = {f"module.{name}": torch.empty_like(t, device="meta") for name, t in named}
        return torch.func.functional_call(_Call(module, method), stand_ins, args, tie_weights=False)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (multiply and add counted separately, as ``torch.utils.flop_counter``) of one eval forward."""
    counter = FlopCounterMode(display=False)
    with eval_mode(model), counter:
        meta_call(model, "forward", torch.empty(tuple(input_shape), device="meta"))
    return counter.get_total_flops()
