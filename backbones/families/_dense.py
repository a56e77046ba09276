"""The stage loop of both DenseNets (torchvision's ImageNet ones and the HMER encoder): the same stage layout under
different module names and blocks."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Iterator, NamedTuple, Sequence, Tuple

from torch import nn

from ..core import Pair, StridePlan, dilate_3x3_convs

__all__ = ["StageSpec", "dense_stages"]


class StageSpec(NamedTuple):
    """One stage for ``SequentialBackbone.add_stage(*spec)``."""

    name: str
    modules: Dict[str, nn.Module]
    channels: int
    stride: Pair
    dilation: Pair


def dense_stages(
    plan: StridePlan,
    block_layers: Sequence[int],
    channels: int,
    *,
    names: Tuple[str, str],
    transition: Callable[[int, Pair], Tuple[nn.Module, int]],
    block: Callable[[int, int], Tuple[nn.Module, int]],
    tail: Callable[[int], Dict[str, nn.Module]],
) -> Iterator[StageSpec]:
    """The stages after a DenseNet stem, built one at a time: ``transition{i-1}`` (from stage 2 on; its pooling is
    the stride), ``block{i}`` (its 3x3 convs dilated as planned), and after the last block the ``tail`` modules.

    Args:
        plan: the stride plan; block_layers: dense layers per block; channels: the stem's channels.
        names: the block and transition module prefixes, e.g. ``("denseblock", "transition")``.
        transition: ``(channels, stride) -> (module, out_channels)``.
        block: ``(num_layers, channels) -> (module, out_channels)``.
        tail: ``channels -> modules`` that end the last stage.
    """
    block_name, transition_name = names
    for index, (stage_plan, num_layers) in enumerate(zip(plan.stages, block_layers), start=1):
        modules: Dict[str, nn.Module] = OrderedDict()
        if index > 1:
            modules[f"{transition_name}{index - 1}"], channels = transition(channels, stage_plan.stride)
        modules[f"{block_name}{index}"], channels = block(num_layers, channels)
        dilate_3x3_convs(modules[f"{block_name}{index}"], stage_plan.dilation)
        if index == len(block_layers):
            modules.update(tail(channels))
        yield StageSpec(f"{block_name}{index}", modules, channels, stage_plan.output_stride, stage_plan.dilation)
