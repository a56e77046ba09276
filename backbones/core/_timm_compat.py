"""Every timm class the library depends on, named in one place and matched with ``isinstance``.

timm is imported on first use (``import backbones`` stays as cheap as ``import torch``); a timm release that moves
or renames one of these classes fails here, at one import, with the class named.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Tuple

from torch import nn

__all__ = ["TimmClasses", "pads_at_run_time", "timm_classes"]


class TimmClasses(NamedTuple):
    """The classes, by what the library does with them.

    Attributes:
        BasicBlock, Bottleneck: the ResNet blocks of the ``resnet`` family (they take per-axis strides and
            dilations).
        DropPath: stochastic depth in SVTRv2.
        BatchNormAct2d: a BatchNorm that applies its activation (and dropout) itself: folding keeps those.
        FeatureGetterNet: timm's ``features_only`` wrapper of ``forward_intermediates`` models (ViTs, ...).
        CondConv2d: a mixture-of-kernels conv (EfficientNet-CC), a conv for stride surgery and dilation.
        Conv2dSame: a conv that computes SAME padding at every call.
        std_convs_same: weight-standardised convs that do so where their ``same_pad`` says (``StdConv2dSame``,
            ``ScaledStdConv2dSame``); ``CondConv2d`` does where its ``dynamic_padding`` says.
        BlurPool2d: an anti-aliasing blur with a stride.
        patch_merging: Swin's, SwinV2-CR's and SwinV2's 2x2 patch merging (the one downsampling that is not a leaf).
        reduce_first_merging: the patch merging that reduces before it normalises (SwinV2's).
    """

    BasicBlock: type
    Bottleneck: type
    DropPath: type
    BatchNormAct2d: type
    FeatureGetterNet: type
    CondConv2d: type
    Conv2dSame: type
    std_convs_same: Tuple[type, ...]
    BlurPool2d: type
    patch_merging: Tuple[type, ...]
    reduce_first_merging: type


@functools.cache
def timm_classes() -> TimmClasses:
    """The timm classes (imported on the first call)."""
    from timm.layers import (
        BatchNormAct2d,
        BlurPool2d,
        CondConv2d,
        Conv2dSame,
        DropPath,
        ScaledStdConv2dSame,
        StdConv2dSame,
    )
    from timm.models import swin_transformer, swin_transformer_v2, swin_transformer_v2_cr
    from timm.models._features import FeatureGetterNet
    from timm.models.resnet import BasicBlock, Bottleneck

    mergings = (swin_transformer.PatchMerging, swin_transformer_v2_cr.PatchMerging, swin_transformer_v2.PatchMerging)
    return TimmClasses(
        BasicBlock=BasicBlock,
        Bottleneck=Bottleneck,
        DropPath=DropPath,
        BatchNormAct2d=BatchNormAct2d,
        FeatureGetterNet=FeatureGetterNet,
        CondConv2d=CondConv2d,
        Conv2dSame=Conv2dSame,
        std_convs_same=(StdConv2dSame, ScaledStdConv2dSame),
        BlurPool2d=BlurPool2d,
        patch_merging=mergings,
        reduce_first_merging=swin_transformer_v2.PatchMerging,
    )


def pads_at_run_time(conv: nn.Module) -> bool:
    """Whether ``conv`` computes its padding from its stride, kernel and dilation at every call (timm's dynamic SAME
    convs): only those attributes need to change for a new stride or dilation."""
    classes = timm_classes()
    if isinstance(conv, classes.std_convs_same):
        return bool(conv.same_pad)
    if isinstance(conv, classes.CondConv2d):
        return bool(conv.dynamic_padding)
    return isinstance(conv, classes.Conv2dSame)
