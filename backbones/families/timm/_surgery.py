"""Stride surgery for timm models: remove a feature level's downsampling, per axis, keeping the ceil grid.

The downsampling layers are found, not named: a forward on the meta device with hooks on every leaf module records
each one whose output is smaller than its input (strided convs, timm's SAME-padded convs, patchify and downsample
convs, CondConvs, pools, blur pools, shortcut convs and pools, and the patch merging of Swin, SwinV2 and SwinV2-CR,
the one non-leaf), and the input's stride says which level it belongs to. Removing a stride on an axis sets it to 1
there with the padding that keeps the size: ``d * (k - 1) / 2`` on each side for odd kernels; for even kernels
(ConvNeXt's 2x2/2 downsample) the conv is replaced by an :class:`EdgePaddedConv2d` that pads the far edge (the same
parameters, under the same name) and a pool's kernel becomes 1; Swin's patch merging is replaced by a
:class:`StridedPatchMerging` that holds timm's norm and reduction. Parameter shapes and names never change, so timm's
state dicts and pretrained tags load as before.

Layers that upsample by a fixed factor to join branches (HRNet's fusion) get the ratio of the new strides.
Dilation (``dilate=True`` where timm has no ``output_stride`` of its own) follows from the same trace: a conv that
read its input at native stride ``s`` now reads it at ``s'``, so its dilation is multiplied by ``s / s'`` per axis
(the downsampling conv keeps the dilation of the level before it, as in torchvision). Only stride-1 convs that keep
their input's size are dilated; their padding grows to ``d * (k - 1) / 2``.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core import Pair, meta_call, pads_at_run_time, timm_classes

__all__ = [
    "EdgePaddedConv2d",
    "StridedPatchMerging",
    "Downsampler",
    "LayerTrace",
    "trace_layers",
    "remove_stride",
    "dilate_traced_convs",
    "rescale_upsamplers",
    "stride_after",
]

Downsampler = Tuple[str, nn.Module, Pair]  # name, module, its stride (sh, sw)
ConvLike = Any
"""``nn.Conv2d`` or timm's ``CondConv2d``: the same stride, padding and dilation attributes (not a common class)."""


class LayerTrace(NamedTuple):
    """What one meta forward saw: the downsamplers by the level whose stride they make (0 = before the first
    level); every conv, in call order, with the native stride of its input; every module in the order its forward
    began; the upsampling layers (HRNet's fusion) with the native strides of their input and output."""

    downsamplers: Dict[int, List[Downsampler]]
    convs: List[Tuple[str, ConvLike, int]]
    calls: List[Tuple[str, nn.Module]]
    upsamplers: List[Tuple[nn.Upsample, int, int]]


class EdgePaddedConv2d(nn.Conv2d):
    """A conv that pads its input's far edges (``edge = [left, right, top, bottom]``) before convolving: the
    stride-1 form of an even-kernel downsampling conv, on the same grid.

    Args:
        conv: the conv it replaces; its parameters are taken over (shared, not copied).
        stride, padding: the new ones; edge: the far-edge padding.
    """

    def __init__(self, conv: nn.Conv2d, stride: Pair, padding: Pair, edge: List[int]) -> None:
        kernel, dilation = _pair(conv.kernel_size), _pair(conv.dilation)
        super().__init__(
            conv.in_channels, conv.out_channels, kernel, stride, padding, dilation, conv.groups, conv.bias is not None,
            device="meta",
        )  # fmt: skip
        self.weight, self.bias = conv.weight, conv.bias
        self.edge = edge

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.edge), self.weight, self.bias)


def _pair(value: Any) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _Recorder:
    """The hooks of :func:`trace_layers` and what they record, for an input of ``size``."""

    def __init__(self, body: nn.Module, level_strides: Sequence[int], size: Pair) -> None:
        self.names = {id(module): name for name, module in body.named_modules()}
        self.level_strides, self.size = level_strides, size
        self.found: Dict[int, List[Downsampler]] = {}
        self.convs: Dict[int, Tuple[str, ConvLike, int]] = {}
        self.upsamplers: Dict[int, Tuple[nn.Upsample, int, int]] = {}
        self.calls: Dict[int, Tuple[str, nn.Module]] = {}

    def pre_hook(self, module: nn.Module, inputs: Tuple) -> None:
        self.calls.setdefault(id(module), (self.names[id(module)], module))

    def hook(self, module: nn.Module, inputs: Tuple, output: object) -> None:
        merging = _is_patch_merging(module)
        if (any(True for _ in module.children()) and not merging) or isinstance(module, nn.Linear):
            return  # a Linear on an NHWC map changes channels, not the grid
        if not inputs or not isinstance(inputs[0], Tensor) or not isinstance(output, Tensor):
            return
        if inputs[0].dim() != 4 or output.dim() != 4:
            return
        grid = slice(1, 3) if merging else slice(2, 4)  # Swin's patch merging works on [N, H, W, C]
        (h_in, w_in), (h_out, w_out) = inputs[0].shape[grid], output.shape[grid]
        stride_in = self.size[0] // h_in
        if _is_conv(module) and h_in and id(module) not in self.convs:
            self.convs[id(module)] = (self.names[id(module)], module, stride_in)
        if isinstance(module, nn.Upsample) and h_out and id(module) not in self.upsamplers:
            self.upsamplers[id(module)] = (module, stride_in, self.size[0] // h_out)
        if h_out >= h_in and w_out >= w_in:
            return
        level = sum(1 for s in self.level_strides if s <= stride_in)
        factor = (max(h_in // max(h_out, 1), 1), max(w_in // max(w_out, 1), 1))
        self.found.setdefault(level, []).append((self.names[id(module)], module, factor))


def trace_layers(
    body: nn.Module, in_channels: int, level_strides: Sequence[int], size: Optional[Pair] = None
) -> LayerTrace:
    """One forward on the meta device with hooks on every module: what :class:`LayerTrace` lists.

    Args:
        body: a timm ``features_only`` model.
        in_channels: its input channels.
        level_strides: each level's native stride (timm's ``feature_info.reduction()``).
        size: the probe input, a multiple of the deepest stride (default 4x and 6x it).
    """
    deepest = max(level_strides)
    size = size or (4 * deepest, 6 * deepest)
    recorder = _Recorder(body, level_strides, size)
    handles = [module.register_forward_hook(recorder.hook) for module in body.modules()]
    handles += [module.register_forward_pre_hook(recorder.pre_hook) for module in body.modules()]
    try:
        meta_call(body.eval(), "forward", torch.empty(1, in_channels, *size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    found, convs, upsamplers = recorder.found, list(recorder.convs.values()), list(recorder.upsamplers.values())
    return LayerTrace(found, convs, list(recorder.calls.values()), upsamplers)


def stride_after(stride: int, native: Sequence[int], strides: Sequence[Pair]) -> Pair:
    """Where a map at native ``stride`` is after surgery, per axis (``native``/``strides``: the levels')."""
    level = max((i for i, s in enumerate(native) if s <= stride), default=-1)
    if level < 0:
        return stride, stride
    return strides[level][0] * stride // native[level], strides[level][1] * stride // native[level]


def rescale_upsamplers(trace: LayerTrace, native: Sequence[int], strides: Sequence[Pair]) -> None:
    """Give each fixed-factor upsampling layer the factor between its input's and output's new strides (HRNet
    upsamples a /32 branch by 8 to add it to the /4 one; after the last stride goes, by 4)."""
    for module, stride_in, stride_out in trace.upsamplers:
        if module.size is not None:
            continue
        (in_h, in_w), (out_h, out_w) = (
            stride_after(stride_in, native, strides),
            stride_after(stride_out, native, strides),
        )
        module.scale_factor = (float(in_h // out_h), float(in_w // out_w))


def dilate_traced_convs(
    trace: LayerTrace,
    native: Sequence[int],
    strides: Sequence[Pair],
    removed: Dict[int, Tuple[bool, bool]],
    model_name: str,
) -> None:
    """Multiply each conv's dilation by (native / new) stride of its input, per axis, before the strides go.

    Args:
        trace: ``trace_layers(...)`` of the body.
        native: each level's native stride; strides: each level's new ``(sh, sw)``.
        removed: ``id(module) -> axes`` of the downsamplers whose stride is about to be removed.

    Raises:
        ValueError: a layer after a removed stride that mixes positions locally and has no dilation (windowed
            attention, average pooling), or a conv to dilate that does not keep its input's size (names the model
            and the layer). Nothing is modified then.
    """
    _check_dilatable(trace, removed, model_name)
    for name, conv, stride_in in trace.convs:
        now = stride_after(stride_in, native, strides)
        factor = (stride_in // now[0], stride_in // now[1])
        kernel, dilation, stride = _pair(conv.kernel_size), list(_pair(conv.dilation)), _pair(conv.stride)
        axes = removed.get(id(conv), (False, False))
        padding = conv.padding if isinstance(conv.padding, str) else list(_pair(conv.padding))
        for axis in (0, 1):
            if factor[axis] == 1 or kernel[axis] == 1 or (stride[axis] > 1 and not axes[axis]):
                continue
            keeps_size = padding == "same" or pads_at_run_time(conv) or axes[axis]
            total = dilation[axis] * (kernel[axis] - 1)
            if not keeps_size and (isinstance(padding, str) or total % 2 or padding[axis] != total // 2):
                raise ValueError(
                    f"timm:{model_name} cannot be dilated: {name} (a {kernel[0]}x{kernel[1]} conv with padding "
                    f"{conv.padding}) does not keep its input's size; build it without dilate=True (the strides are "
                    f"then removed, not dilated)"
                )
            dilation[axis] *= factor[axis]
            if isinstance(padding, list) and not pads_at_run_time(conv):
                padding[axis] = dilation[axis] * (kernel[axis] - 1) // 2
        conv.dilation = tuple(dilation)
        conv.padding = padding if isinstance(padding, str) else tuple(padding)


def _check_dilatable(trace: LayerTrace, removed: Dict[int, Tuple[bool, bool]], model_name: str) -> None:
    """Convs dilate and global attention needs nothing; windowed attention and average pooling cannot follow."""
    starts = [i for i, (_, module) in enumerate(trace.calls) if id(module) in removed]
    for name, module in trace.calls[min(starts, default=len(trace.calls)) :]:
        kind = ""
        if any(hasattr(module, a) for a in ("window_size", "partition_size")) and not isinstance(module, nn.Conv2d):
            kind = "attends within fixed windows"
        elif (
            isinstance(module, nn.AvgPool2d) and _pair(module.stride) == (1, 1) and _pair(module.kernel_size) != (1, 1)
        ):
            kind = "averages a fixed neighbourhood"
        if kind:
            raise ValueError(
                f"timm:{model_name} cannot be dilated: {name} ({type(module).__name__}) {kind}, which has no "
                f"dilation; build it without dilate=True (the strides are then removed, not dilated)"
            )


def _is_conv(module: nn.Module) -> bool:
    """``nn.Conv2d`` and its subclasses, and timm's ``CondConv2d`` (a mixture of kernels, with the same attributes)."""
    return isinstance(module, (nn.Conv2d, timm_classes().CondConv2d))


def _axes_name(axes: Tuple[bool, bool]) -> str:
    return "both axes" if all(axes) else ("the H axis" if axes[0] else "the W axis")


def _is_patch_merging(module: nn.Module) -> bool:
    return isinstance(module, timm_classes().patch_merging)


class StridedPatchMerging(nn.Module):
    """Swin's 2x2 patch merging with a stride per axis (``merge_stride``, 1 or 2): the 2x2 neighbourhood of every
    kept position is concatenated in timm's order, the far edge padded. ``[N, H, W, C] -> [N, ceil(H/sh),
    ceil(W/sw), C_out]``.

    Args:
        merging: timm's ``PatchMerging`` it replaces (its ``norm`` and ``reduction`` are taken over), or another
            ``StridedPatchMerging``.
        merge_stride: ``(sh, sw)``, each 1 or 2.
    """

    def __init__(self, merging: nn.Module, merge_stride: Pair) -> None:
        super().__init__()
        self.norm: nn.Module = merging.get_submodule("norm")
        self.reduction: nn.Module = merging.get_submodule("reduction")
        self.merge_stride = merge_stride
        if isinstance(merging, StridedPatchMerging):
            self.norm_first: bool = merging.norm_first
        else:  # SwinV2 reduces before it normalises
            self.norm_first = not isinstance(merging, timm_classes().reduce_first_merging)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.merge_stride
        _, height, width, _ = x.shape
        rows, columns = -(-height // sh), -(-width // sw)
        x = F.pad(x, (0, 0, 0, 1 if sw == 1 else width % 2, 0, 1 if sh == 1 else height % 2))
        parts = [
            x[:, dh : dh + sh * (rows - 1) + 1 : sh, dw : dw + sw * (columns - 1) + 1 : sw]
            for dw in (0, 1)
            for dh in (0, 1)
        ]
        x = torch.cat(parts, dim=-1)
        return self.reduction(self.norm(x)) if self.norm_first else self.norm(self.reduction(x))


def _replace(body: nn.Module, name: str, new: nn.Module) -> None:
    """``new`` in the place of the submodule ``name`` of ``body`` (the same name, so the same state-dict keys)."""
    parent_name, _, child = name.rpartition(".")
    setattr(body.get_submodule(parent_name), child, new)


def _without_conv_stride(body: nn.Module, name: str, conv: ConvLike, axes: Tuple[bool, bool], new_stride: Pair) -> str:
    """The conv at ``name`` at ``new_stride`` with the padding that keeps the size; ``""`` or why it cannot be."""
    kernel, dilation = _pair(conv.kernel_size), _pair(conv.dilation)
    padding = list(_pair(conv.padding)) if not isinstance(conv.padding, str) else [0, 0]
    edge = [0, 0, 0, 0]
    for axis, drop in enumerate(axes):
        total = dilation[axis] * (kernel[axis] - 1)
        if drop and total % 2 == 0:
            padding[axis] = total // 2
        elif drop:
            padding[axis] = 0
            edge[3 if axis == 0 else 1] = total  # the far edge: bottom rows, right columns
    if pads_at_run_time(conv):
        conv.stride = new_stride
        return ""
    if not any(edge):
        conv.stride, conv.padding = new_stride, (padding[0], padding[1])
        return ""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv, EdgePaddedConv2d):
        return f"{type(conv).__name__}, an even kernel"
    _replace(body, name, EdgePaddedConv2d(conv, new_stride, (padding[0], padding[1]), edge))
    return ""


def remove_stride(body: nn.Module, name: str, axes: Tuple[bool, bool], model_name: str) -> None:
    """Set the stride of ``body``'s submodule ``name`` to 1 on the ``axes`` (h, w) that are True, with the padding
    that keeps the size (replacing the module where its class cannot: an even-kernel conv, Swin's patch merging).

    Raises:
        ValueError: a layer this cannot modify (names the model, the module and its type).
    """
    module = body.get_submodule(name)
    stride = _pair(getattr(module, "stride", 1))
    new_stride = (1 if axes[0] else stride[0], 1 if axes[1] else stride[1])
    problem = f"{type(module).__name__}"
    if _is_conv(module):
        problem = _without_conv_stride(body, name, module, axes, new_stride)
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel, padding = list(_pair(module.kernel_size)), list(_pair(module.padding))
        for axis, drop in enumerate(axes):
            if drop and kernel[axis] % 2 == 1:
                padding[axis] = (kernel[axis] - 1) // 2
            elif drop:
                kernel[axis], padding[axis] = 1, 0
        module.kernel_size, module.stride = (kernel[0], kernel[1]), new_stride
        module.padding = (padding[0], padding[1])
        problem = ""
    elif isinstance(module, timm_classes().BlurPool2d):  # a fixed blur filter, padded for "same" at stride 1
        blur: Any = module
        blur.stride = new_stride
        problem = ""
    elif _is_patch_merging(module) or isinstance(module, StridedPatchMerging):
        current = module.merge_stride if isinstance(module, StridedPatchMerging) else (2, 2)
        merged = (1 if axes[0] else current[0], 1 if axes[1] else current[1])
        _replace(body, name, StridedPatchMerging(module, merged))
        problem = ""
    if problem:
        raise ValueError(
            f"timm:{model_name} cannot have the stride of {name} ({problem}) removed on {_axes_name(axes)}: only "
            f"convs, max/avg pools, blur pools and Swin's patch merging can be modified; build it with its native "
            f"strides"
        )
