"""Stride surgery for timm models: remove a feature level's downsampling, per axis, keeping the ceil grid.

The downsampling layers are found, not named: a forward on the meta device with hooks on every leaf module
records each one whose output is smaller than its input (strided convs, timm's SAME-padded convs, patchify and
downsample convs, pools, blur pools, shortcut convs and pools), and the input's stride says which level it
belongs to. Removing a stride on an axis sets it to 1 there with the padding that keeps the size: ``d * (k - 1)
/ 2`` on each side for odd kernels; for even kernels (ConvNeXt's 2x2/2 downsample) the conv pads the far edge
instead (its class becomes :class:`EdgePaddedConv2d`, its parameters stay) and a pool's kernel becomes 1.
Parameter shapes never change, so timm's state dicts and pretrained tags load as before.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..contract import Pair
from ..meta import meta_call

__all__ = ["EdgePaddedConv2d", "Downsampler", "find_downsamplers", "remove_stride"]

Downsampler = Tuple[str, nn.Module, Pair]  # name, module, its stride (sh, sw)


class EdgePaddedConv2d(nn.Conv2d):
    """A conv that pads its input's far edges (``edge = [left, right, top, bottom]``) before convolving: the
    stride-1 form of an even-kernel downsampling conv, on the same grid. Parameters as ``nn.Conv2d``."""

    edge: List[int]

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.edge), self.weight, self.bias)


def _pair(value: object) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))  # type: ignore[index]


def find_downsamplers(body: nn.Module, in_channels: int, level_strides: Sequence[int]) -> Dict[int, List[Downsampler]]:
    """Leaf modules that shrink the map, by the feature level whose stride they make (0 = before the first level).

    Args:
        body: a timm ``features_only`` model.
        in_channels: its input channels.
        level_strides: each level's native stride (timm's ``feature_info.reduction()``).
    """
    deepest = max(level_strides)
    size = (4 * deepest, 6 * deepest)
    names = {id(module): name for name, module in body.named_modules()}
    found: Dict[int, List[Downsampler]] = {}

    def hook(module: nn.Module, inputs: Tuple, output: object) -> None:
        if any(True for _ in module.children()) or not inputs or not isinstance(inputs[0], Tensor):
            return
        if not isinstance(output, Tensor) or inputs[0].dim() != 4 or output.dim() != 4:
            return
        (h_in, w_in), (h_out, w_out) = inputs[0].shape[-2:], output.shape[-2:]
        if h_out >= h_in and w_out >= w_in:
            return
        stride_in = size[0] // h_in
        level = sum(1 for s in level_strides if s <= stride_in)
        factor = (max(h_in // max(h_out, 1), 1), max(w_in // max(w_out, 1), 1))
        found.setdefault(level, []).append((names[id(module)], module, factor))

    handles = [module.register_forward_hook(hook) for module in body.modules()]
    try:
        meta_call(body.eval(), "forward", torch.empty(1, in_channels, *size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return found


def remove_stride(name: str, module: nn.Module, axes: Tuple[bool, bool], model_name: str) -> None:
    """Set ``module``'s stride to 1 on the ``axes`` (h, w) that are True, with the padding that keeps the size.

    Raises:
        ValueError: a layer this cannot modify (names the model, the module and its type).
    """
    stride = _pair(getattr(module, "stride", 1))
    new_stride = tuple(1 if drop else s for drop, s in zip(axes, stride))
    if isinstance(module, nn.Conv2d):
        kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
        padding = list(_pair(module.padding)) if not isinstance(module.padding, str) else [0, 0]
        edge = [0, 0, 0, 0]
        for axis, drop in enumerate(axes):
            total = dilation[axis] * (kernel[axis] - 1)
            if drop and total % 2 == 0:
                padding[axis] = total // 2
            elif drop:
                padding[axis] = 0
                edge[3 if axis == 0 else 1] = total  # the far edge: bottom rows, right columns
        if type(module).__name__ == "Conv2dSame":  # timm computes SAME padding from the stride at run time
            module.stride = new_stride
            return
        module.stride, module.padding = new_stride, tuple(padding)
        if any(edge):
            module.__class__ = EdgePaddedConv2d
            module.edge = edge
        return
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, padding = list(_pair(module.kernel_size)), list(_pair(module.padding))
        for axis, drop in enumerate(axes):
            if drop and kernel[axis] % 2 == 1:
                padding[axis] = (kernel[axis] - 1) // 2
            elif drop:
                kernel[axis], padding[axis] = 1, 0
        module.kernel_size, module.stride, module.padding = tuple(kernel), new_stride, tuple(padding)
        return
    if type(module).__name__ == "BlurPool2d" and all(axes):
        module.stride = 1
        return
    raise ValueError(
        f"timm:{model_name} cannot have the stride of {name} ({type(module).__name__}) removed: only convs, max/avg "
        f"pools and blur pools can be modified; build it with its native strides or dilate=True"
    )
