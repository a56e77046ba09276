"""Shapes, parameters and FLOPs of a backbone for one input, on the meta device (no real activations).

The CLI prints these reports and the tests assert them: one code path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core import Encoder, Pair, eval_mode, meta_call, output_size

__all__ = ["BackboneReport", "StageReport", "describe"]


@dataclass(frozen=True)
class StageReport:
    index: int
    name: str
    channels: int
    stride: Pair
    dilation: Pair
    shape: Tuple[int, ...]


@dataclass(frozen=True)
class BackboneReport:
    """What ``backbones check`` prints for one spec and input shape."""

    name: str
    options: Dict[str, Any]
    input_shape: Tuple[int, ...]
    in_channels: int
    params: int
    flops: int
    stages: Tuple[StageReport, ...]
    output_shapes: Tuple[Tuple[int, ...], ...]
    expected_shapes: Tuple[Tuple[int, ...], ...]

    @property
    def contract_ok(self) -> bool:
        return self.output_shapes == self.expected_shapes

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data.update(contract_ok=self.contract_ok, gflops=round(self.gflops, 4))
        return data


def describe(
    model: Encoder, input_shape: Sequence[int], name: str = "", options: Dict[str, Any] | None = None
) -> BackboneReport:
    """Per-stage shapes, output shapes, the contract's shapes, parameters and FLOPs for ``input_shape``."""
    x = torch.empty(tuple(input_shape), device="meta")
    counter = FlopCounterMode(display=False)
    with eval_mode(model):
        with counter:
            outputs: List[torch.Tensor] = meta_call(model, "forward_outputs", x)
        stage_outputs = meta_call(model.stage_backbone(), "forward_stages", x)
    n, _, h, w = input_shape
    stages = tuple(
        StageReport(info.index, info.name, info.channels, info.stride, info.dilation, tuple(t.shape))
        for info, t in zip(model.feature_info, stage_outputs)
    )
    expected = tuple((n, info.channels, *output_size(h, w, info.stride)) for info in model.output_info)
    return BackboneReport(
        name=name or type(model).__name__,
        options=dict(options or {}),
        input_shape=tuple(input_shape),
        in_channels=model.in_channels,
        params=sum(p.numel() for p in model.parameters()),
        flops=counter.get_total_flops(),
        stages=stages,
        output_shapes=tuple(tuple(t.shape) for t in outputs),
        expected_shapes=expected,
    )
