"""``SwapReport``: the old encoder and the new one side by side, and ``load_rest`` for the old checkpoint."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..core import LoadReport, Pair
from ..weights import load_outside
from ._probe import Call, EncoderContract, Observation, observe

__all__ = ["EncoderSide", "SwapReport", "describe_side", "gflops_text", "grid_text"]

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def grid_text(pair: Tuple[int, int]) -> str:
    return f"{pair[0]}x{pair[1]}"


@dataclass
class EncoderSide:
    """One side of a swap: what the module is, how it is called, what it gives, what it costs.

    Attributes:
        name: the old module's class, or the new one's spec.
        call, mask: the call convention and the mask layout (``"-"`` without a mask).
        in_channels, out_channels: input channels, and channels per output.
        stride: ``(sh, sw)`` per output, with the rounding where it is not the ceil grid.
        params: parameters; gflops: at ``reference_size`` (multiply and add counted separately), ``None`` if the
            module could not be counted.
        grids: output grid(s) at each probe size, ``"32x100" -> "1x25"``.
    """

    name: str
    call: str
    mask: str
    in_channels: int
    out_channels: Tuple[int, ...]
    stride: str
    params: int
    gflops: Optional[float]
    reference_size: Pair
    grids: Dict[str, str] = field(default_factory=dict)


def _gflops(module: nn.Module, contract: EncoderContract, size: Pair, dtype: Any) -> Optional[float]:
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            observe(module, size, contract.in_channels, contract.call, dtype)
    except Exception:  # a module the counter cannot follow: the report says "-"
        return None
    return counter.get_total_flops() / 2 / 1e9  # probes run a batch of 2


def reference_size(contract: EncoderContract) -> Pair:
    """The probe size of median area: where the GFLOPs of both sides are counted."""
    sizes = sorted(contract.observations, key=lambda s: s[0] * s[1])
    return sizes[len(sizes) // 2]


def describe_side(
    name: str,
    module: nn.Module,
    contract: EncoderContract,
    observations: Dict[Pair, Observation],
    stride: str,
) -> EncoderSide:
    """An :class:`EncoderSide` from a module, the old contract (its convention) and its observations."""
    first = next(iter(observations.values()))
    size = reference_size(contract)
    call: Call = contract.call
    return EncoderSide(
        name=name,
        call=call.text(first.returns),
        mask=f"{call.mask} ({str(call.mask_dtype).replace('torch.', '')}, passed through)" if call.mask else "-",
        in_channels=contract.in_channels,
        out_channels=tuple(shape[1] for shape in first.shapes),
        stride=stride,
        params=sum(p.numel() for p in module.parameters()),
        gflops=_gflops(module, contract, size, first.dtype),
        reference_size=size,
        grids={grid_text(s): ", ".join(f"{o[-2]}x{o[-1]}" for o in obs.shapes) for s, obs in observations.items()},
    )


@dataclass
class SwapReport:
    """What :func:`backbones.swap` found, built and changed; ``str(report)`` is a table, ``to_dict()`` JSON-ready.

    Attributes:
        path: the swapped submodule's path in the model.
        old, new: the two sides (:class:`EncoderSide`).
        changes: what differs on purpose (grid changes allowed by ``allow_grid_change``).
        dry_run: nothing was replaced.
        skipped: probe sizes the old module refused, with its reason.
    """

    path: str
    old: EncoderSide
    new: EncoderSide
    changes: List[str]
    dry_run: bool
    skipped: Dict[str, str] = field(default_factory=dict)
    model: Optional[nn.Module] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        sides = {name: {**asdict(side), "out_channels": list(side.out_channels)} for name, side in
                 (("old", self.old), ("new", self.new))}  # fmt: skip
        return {"path": self.path, **sides, "changes": list(self.changes), "dry_run": self.dry_run,
                "skipped": dict(self.skipped)}  # fmt: skip

    def __str__(self) -> str:
        old, new = self.old, self.new
        rows = [
            ("module / spec", old.name, new.name), ("call", old.call, new.call), ("mask", old.mask, new.mask),
            ("in channels", old.in_channels, new.in_channels),
            ("out channels", ", ".join(map(str, old.out_channels)), ", ".join(map(str, new.out_channels))),
            ("stride", old.stride, new.stride), ("params", f"{old.params / 1e6:.2f} M", f"{new.params / 1e6:.2f} M"),
            (f"GFLOPs @ {grid_text(old.reference_size)}", gflops_text(old.gflops), gflops_text(new.gflops)),
        ]  # fmt: skip
        rows += [(f"grid @ {size}", grid, new.grids.get(size, "-")) for size, grid in old.grids.items()]
        width = [max(len(str(row[i])) for row in rows) for i in range(3)]
        lines = [f"swap at {self.path}" + (" (dry run: nothing replaced)" if self.dry_run else "")]
        lines += [f"  {a:<{width[0]}}  {str(b):<{width[1]}}  {c}" for a, b, c in rows]
        lines.append("  changes: " + ("; ".join(self.changes) if self.changes else "none (the same contract)"))
        if self.skipped:
            lines.append(f"  sizes the old module refuses (skipped): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def load_rest(self, checkpoint: Union[str, os.PathLike, Mapping[str, Tensor]]) -> LoadReport:
        """Load every tensor of the pre-swap checkpoint outside the swapped path into the model (strict, atomic);
        the old encoder's tensors are listed in the report's ``dropped``. Lightning ``state_dict`` containers and
        ``model.``/``module.``/LightningModule prefixes are found by matching the model's own keys.

        Raises:
            WeightsMismatchError: a tensor outside the encoder is missing, unexpected or mis-shaped; the model is
                unchanged.
            RuntimeError: after a dry run (nothing was swapped).
        """
        if self.dry_run or self.model is None:
            raise RuntimeError("load_rest after a dry run: nothing was swapped; call swap(...) without dry_run first")
        model, path = self.model, self.path
        if isinstance(model, _WRAPPERS) and path.startswith("module."):
            model, path = model.module, path[len("module.") :]
        return load_outside(model, checkpoint, path)


def gflops_text(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"
