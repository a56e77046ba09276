"""Folding each BatchNorm that directly follows a conv into that conv, for inference (``Encoder.fuse``).

A BatchNorm directly follows a conv when (1) they are consecutive children of an ``nn.Sequential`` that runs its
children in order, or of a chain the family declares (``Backbone.fusion_chains()``: a
:class:`~backbones.SequentialBackbone`'s ``features``), or (2) they are attributes ``(conv_name, norm_name)`` of one
module that the family declares in ``fusable_pairs`` (``("conv1", "bn1")`` in ResNet blocks). Pre-activation
BatchNorms (BN -> ReLU -> conv, torchvision's DenseNet layers) have no conv before them and stay.

It is all or nothing: the folded model is checked on a probe input against the unfused one, and any failure (an
exception part-way, or outputs that moved) puts every original module and parameter back.
"""

from __future__ import annotations

import copy
from typing import (
    TYPE_CHECKING,
    Callable,
    Collection,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Sequence,
    Set,
    Tuple,
    runtime_checkable,
)

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ._contract import RELATIVE_TOLERANCE

if TYPE_CHECKING:
    from ._encoder import Encoder

__all__ = ["Reparameterizable", "find_pairs", "fold_batchnorms"]


@runtime_checkable
class Reparameterizable(Protocol):
    """A multi-branch layer that folds its branches into one conv for inference (RepVGG-style; PP-LCNetV3's learnable
    re-parameterisable layers). :meth:`~backbones.core.Encoder.fuse` calls ``rep()`` on every such submodule and
    ``unrep()`` to undo it when the folded model fails its check."""

    reparam_conv: Optional[nn.Conv2d]
    """The folded conv once ``rep()`` ran (the forward then uses it alone), else ``None``."""

    def rep(self) -> None:
        """Fold the branches into ``reparam_conv``."""

    def unrep(self) -> None:
        """Go back to the branches (``reparam_conv = None``)."""


class FoldPair(NamedTuple):
    """A conv, the BatchNorm that consumes its output (with running statistics), the norm's parent and its name."""

    conv: nn.Conv2d
    parent: nn.Module
    name: str
    norm: nn.BatchNorm2d
    mean: Tensor
    var: Tensor


def _fold_pair(conv: object, parent: nn.Module, name: str, norm: object, seen: Set[int]) -> Optional[FoldPair]:
    """``(conv, parent, name, norm)`` when ``norm`` is a BatchNorm with running statistics over ``conv``'s outputs
    that no earlier pair took, else ``None``."""
    if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)) or id(norm) in seen:
        return None
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None or norm.num_features != conv.out_channels:
        return None
    seen.add(id(norm))
    return FoldPair(conv, parent, name, norm, mean, var)


def _chains(model: nn.Module, declared: Sequence[nn.Module]) -> Iterator[nn.Module]:
    for module in model.modules():
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            yield module
    yield from declared


def find_pairs(
    model: nn.Module,
    attribute_pairs: Sequence[Tuple[str, str]],
    chains: Sequence[nn.Module] = (),
    skip: Collection[int] = (),
) -> List[FoldPair]:
    """Every (conv, BatchNorm) pair of ``model`` where the BatchNorm directly consumes the conv's output, except in
    the modules whose ``id`` is in ``skip`` (the branches of re-parameterised layers: they no longer run)."""
    pairs: List[Optional[FoldPair]] = []
    seen = set(skip)
    for chain in _chains(model, chains):
        if id(chain) in seen:
            continue
        children = list(chain.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            pairs.append(_fold_pair(first, chain, name, second, seen))
    for module in model.modules():
        if id(module) in seen:
            continue
        for conv_name, norm_name in attribute_pairs:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            pairs.append(_fold_pair(conv, module, norm_name, norm, seen))
    return [pair for pair in pairs if pair is not None]


def _outputs(model: Encoder, probe: Tensor) -> List[Tensor]:
    with torch.no_grad():
        return model.forward_outputs(probe)


def _allowed_differences(model: Encoder, probe: Tensor, before: List[Tensor]) -> List[float]:
    """Per output: 1e-4 of its scale, and in half precision four times the model's own rounding (its unfused
    outputs against a float32 copy's), which folding cannot be asked to beat."""
    allowed = [RELATIVE_TOLERANCE * max(float(b.abs().max()), 1e-6) for b in before]
    if probe.dtype in (torch.float32, torch.float64):
        return allowed
    reference = _outputs(copy.deepcopy(model).float(), probe.float())
    rounding = [float((b.float() - r).abs().max()) for b, r in zip(before, reference)]
    return [max(a, 4 * r) for a, r in zip(allowed, rounding)]


def _branches(layers: Sequence[Reparameterizable]) -> Set[int]:
    """The submodules of re-parameterised layers but their single conv: what no longer runs."""
    kept = {id(layer.reparam_conv) for layer in layers}
    modules = [m for layer in layers if isinstance(layer, nn.Module) for m in layer.modules() if m is not layer]
    return {id(m) for m in modules if id(m) not in kept}


def _fold(pairs: Sequence[FoldPair], remainder: Callable[[nn.Module], nn.Module]) -> None:
    for conv, parent, name, norm, mean, var in pairs:
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, mean, var, norm.eps, norm.weight, norm.bias
        )
        setattr(parent, name, remainder(norm))


def _undo(originals: Sequence[Tuple], layers: Sequence[Reparameterizable]) -> None:
    """Every folded conv's own parameters and its norm back; every re-parameterised layer back to its branches."""
    for conv, weight, bias, parent, name, norm in originals:
        conv.weight, conv.bias = weight, bias
        setattr(parent, name, norm)
    for layer in layers:
        layer.unrep()


def fold_batchnorms(
    model: Encoder,
    attribute_pairs: Sequence[Tuple[str, str]],
    chains: Sequence[nn.Module],
    probe: Tensor,
    reparameterizable: Sequence[Reparameterizable] = (),
    remainder: Callable[[nn.Module], nn.Module] = lambda norm: nn.Identity(),
) -> Tuple[int, int]:
    """Re-parameterise, then fold in place; returns ``(folded, kept)`` BatchNorm counts (those of re-parameterised
    layers' branches are neither).

    Args:
        model: an encoder in eval mode (its ``forward_outputs`` is what is compared).
        attribute_pairs, chains: what the family declares (see the module docstring).
        probe: an input to compare the outputs on.
        reparameterizable: layers with ``rep()``/``unrep()`` to fold into one conv first.
        remainder: what takes a folded norm's place (``nn.Identity``; a norm that also applies an activation leaves
            that).

    Raises:
        RuntimeError: folding failed or changed the outputs beyond the tolerance; the model is restored exactly.
    """
    before = _outputs(model, probe)
    allowed = _allowed_differences(model, probe, before)
    originals: List[Tuple] = []
    try:
        for layer in reparameterizable:
            layer.rep()
        skip = _branches(reparameterizable)
        pairs = find_pairs(model, attribute_pairs, chains, skip)
        total = sum(isinstance(m, _BatchNorm) and id(m) not in skip for m in model.modules())
        originals = [(pair.conv, pair.conv.weight, pair.conv.bias, pair.parent, pair.name, pair.norm) for pair in pairs]
        _fold(pairs, remainder)
        after = _outputs(model, probe)
        moved = [float((a - b).abs().max()) for a, b in zip(after, before)]
        if any(not m <= limit for m, limit in zip(moved, allowed)):  # NaN counts as moved
            raise RuntimeError(f"the outputs moved by {max(moved):.3g}, more than the {max(allowed):.3g} allowed")
    except Exception as error:
        _undo(originals, reparameterizable)
        raise RuntimeError(
            f"folding BatchNorms into convs failed for {type(model).__name__} ({error}); nothing was folded, the "
            f"model is as it was"
        ) from error
    return len(pairs), total - len(pairs)
