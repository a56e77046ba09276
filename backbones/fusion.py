"""Folding each BatchNorm that directly follows a conv into that conv, for inference (``Backbone.fuse``).

A BatchNorm directly follows a conv when (1) they are consecutive children of an ``nn.Sequential`` that runs
its children in order, or of a :class:`~backbones.SequentialBackbone`'s chain, or (2) they are attributes
``(conv_name, norm_name)`` of one module that the family declares in ``fusable_pairs`` (``("conv1", "bn1")``
in ResNet blocks). Pre-activation BatchNorms (BN -> ReLU -> conv, torchvision's DenseNet layers) have no conv
before them and stay. The result is checked on a probe input; a mismatch restores everything.
"""

from __future__ import annotations

from typing import Iterator, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["fold_batchnorms"]

Pair = Tuple[nn.Conv2d, nn.Module, str, _BatchNorm]  # conv, the norm's parent, its name there, the norm


def _foldable(conv: object, norm: object) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _chains(model: nn.Module) -> Iterator[nn.Module]:
    for module in model.modules():
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            yield module
    features = getattr(model, "features", None)
    if isinstance(features, nn.ModuleDict) and hasattr(model, "stage_ends"):
        yield features


def find_pairs(model: nn.Module, attribute_pairs: Sequence[Tuple[str, str]]) -> List[Pair]:
    """Every (conv, BatchNorm) pair of ``model`` where the BatchNorm directly consumes the conv's output."""
    pairs: List[Pair] = []
    seen = set()
    for chain in _chains(model):
        children = list(chain.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            if _foldable(first, second) and id(second) not in seen:
                pairs.append((first, chain, name, second))  # type: ignore[arg-type]
                seen.add(id(second))
    for module in model.modules():
        for conv_name, norm_name in attribute_pairs:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if _foldable(conv, norm) and id(norm) not in seen:
                pairs.append((conv, module, norm_name, norm))  # type: ignore[arg-type]
                seen.add(id(norm))
    return pairs


def _replacement(norm: _BatchNorm) -> nn.Module:
    """What is left of a folded norm: timm's BatchNormAct2d keeps its dropout and activation."""
    act, drop = getattr(norm, "act", None), getattr(norm, "drop", None)
    if isinstance(act, nn.Module):
        return nn.Sequential(drop, act) if isinstance(drop, nn.Module) else act
    return nn.Identity()


def fold_batchnorms(
    model: nn.Module, attribute_pairs: Sequence[Tuple[str, str]], probe: torch.Tensor
) -> Tuple[int, int]:
    """Fold in place; returns ``(folded, kept)`` BatchNorm counts.

    Raises:
        RuntimeError: the folded model's output on ``probe`` differs from the original's by more than 1e-4 of
            its scale; the model is then restored exactly.
    """
    pairs = find_pairs(model, attribute_pairs)
    total = sum(isinstance(m, _BatchNorm) for m in model.modules())
    with torch.no_grad():
        before = model(probe)
    originals = [(conv, conv.weight, conv.bias, parent, name, norm) for conv, parent, name, norm in pairs]
    for conv, parent, name, norm in pairs:
        weight, bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        conv.weight, conv.bias = weight, bias
        setattr(parent, name, _replacement(norm))
    with torch.no_grad():
        after = model(probe)
    outputs = zip(before, after) if isinstance(before, list) else [(before, after)]
    if any((a - b).abs().max() > 1e-4 * max(float(a.abs().max()), 1e-6) for a, b in outputs):
        for conv, weight, bias, parent, name, norm in originals:
            conv.weight, conv.bias = weight, bias
            setattr(parent, name, norm)
        raise RuntimeError(
            f"folding BatchNorm into convs changed the output of {type(model).__name__}; nothing was folded"
        )
    return len(pairs), total - len(pairs)
