"""``SwapReport``: the old encoder and the new one side by side, and ``load_rest`` for the old checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..core import LoadReport, MetaCaller, Pair
from ..weights import load_outside
from ._probe import observe
from ._reading import grids_text
from ._records import EncoderContract, MaskLayout, Observation

__all__ = ["WRAPPERS", "EncoderSide", "SwapReport", "describe_side", "gflops_text", "grid_text"]

WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)
"""Models that hold the user's model under ``module.``: paths are looked up inside it."""


def grid_text(pair: Tuple[int, int]) -> str:
    return f"{pair[0]}x{pair[1]}"


def gflops_text(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3g}"


@dataclass
class EncoderSide:
    """One side of a swap: what the module is, how it is called, what it gives, what it costs.

    Attributes:
        name: the old module's class, or the new one's spec.
        call: the call and what it returns; mask: the mask layout (``"-"`` without a mask).
        in_channels, out_channels: input channels, and channels per output.
        stride: ``(sh, sw)`` per output, with the rounding where it is not the ceil grid.
        params: parameters; gflops: at ``reference_size`` (multiply and add counted separately), ``None`` if the
            module could not be counted; counted when first asked for (:meth:`count`), not while swapping.
        grids: output grid(s) (or token counts) at each probe size, ``"32x100" -> "1x25"``.
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
    counter: Optional[Callable[[], Optional[float]]] = field(default=None, repr=False, compare=False)

    def count(self) -> Optional[float]:
        """The GFLOPs, counted on the meta device the first time."""
        if self.counter is not None:
            self.gflops, self.counter = self.counter(), None
        return self.gflops

    def to_dict(self) -> Dict[str, Any]:
        self.count()
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "counter"}
        return {**data, "out_channels": list(self.out_channels), "reference_size": list(self.reference_size)}


def _gflops(module: nn.Module, contract: EncoderContract, size: Pair, dtype: torch.dtype) -> Optional[float]:
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            observe(MetaCaller(module), size, contract.in_channels, contract.call, dtype)
    except Exception:  # a module the counter cannot follow: the report says "-"
        return None
    return counter.get_total_flops() / 2 / 1e9  # the probes run a batch of 2


def describe_side(
    name: str, module: nn.Module, contract: EncoderContract, observations: Dict[Pair, Observation], stride: str
) -> EncoderSide:
    """An :class:`EncoderSide` from a module, the old contract (its convention) and its observations."""
    size, first = next(iter(observations.items()))
    call = contract.call
    masked = call.mask is not MaskLayout.NONE
    channels = tuple(contract.out_channels) if first.shapes else ()
    return EncoderSide(
        name=name,
        call=f"{call} -> {contract.returns()}",
        mask=f"{call.mask} ({str(call.mask_dtype).replace('torch.', '')}, passed through)" if masked else "-",
        in_channels=contract.in_channels,
        out_channels=channels,
        stride=stride,
        params=sum(p.numel() for p in module.parameters()),
        gflops=None,
        counter=lambda: _gflops(module, contract, size, first.dtype),
        reference_size=size,
        grids={grid_text(s): grids_text(obs) for s, obs in observations.items()},
    )


@dataclass
class SwapReport:
    """What :func:`backbones.swap` found, built and changed; ``str(report)`` is a table, ``to_dict()`` JSON-ready.

    Attributes:
        paths: every name under which the model held the old module (the first is the one asked for).
        old, new: the two sides (:class:`EncoderSide`).
        arrangement: how the wrapper hands the backbone's map on (``b c h w -> b (h w) c``, ...).
        changes: what differs on purpose (grid changes allowed by ``allow_grid_change``, pooled rows).
        dry_run: nothing was replaced.
        skipped: probe sizes the old module refused, with its reason.
    """

    paths: List[str]
    old: EncoderSide
    new: EncoderSide
    arrangement: str
    changes: List[str]
    dry_run: bool
    skipped: Dict[str, str] = field(default_factory=dict)
    model: Optional[nn.Module] = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        """The path the swap was asked for."""
        return self.paths[0]

    def to_dict(self) -> Dict[str, Any]:
        """The report as JSON-able data (what ``backbones swap --json`` prints).

        Returns:
            ``path``, ``paths``, ``old`` and ``new`` (each side's contract, params, GFLOPs, grids), ``arrangement``,
            ``changes``, ``dry_run`` and ``skipped``.
        """
        sides = {"old": self.old.to_dict(), "new": self.new.to_dict()}
        return {"path": self.path, "paths": list(self.paths), **sides, "arrangement": self.arrangement,
                "changes": list(self.changes), "dry_run": self.dry_run, "skipped": dict(self.skipped)}  # fmt: skip

    def __str__(self) -> str:
        old, new = self.old, self.new
        rows = [
            ("module / spec", old.name, new.name), ("call", old.call, new.call), ("mask", old.mask, new.mask),
            ("in channels", old.in_channels, new.in_channels),
            ("out channels", ", ".join(map(str, old.out_channels)), ", ".join(map(str, new.out_channels))),
            ("stride", old.stride, new.stride), ("params", f"{old.params / 1e6:.2f} M", f"{new.params / 1e6:.2f} M"),
            (f"GFLOPs @ {grid_text(old.reference_size)}", gflops_text(old.count()), gflops_text(new.count())),
        ]  # fmt: skip
        rows += [(f"grid @ {size}", grid, new.grids.get(size, "-")) for size, grid in old.grids.items()]
        width = [max(len(str(row[i])) for row in rows) for i in range(3)]
        names = ", ".join(self.paths)
        lines = [f"swap at {names}" + (" (dry run: nothing replaced)" if self.dry_run else "")]
        lines += [f"  {a:<{width[0]}}  {str(b):<{width[1]}}  {c}" for a, b, c in rows]
        lines.append(f"  handed on: {self.arrangement}")
        lines.append("  changes: " + ("; ".join(self.changes) if self.changes else "none (the same contract)"))
        if self.skipped:
            lines.append(f"  sizes the old module refuses (skipped): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def load_rest(self, checkpoint: Union[str, os.PathLike, Mapping[str, Tensor]]) -> LoadReport:
        """Load every tensor of the pre-swap checkpoint outside the swapped module (under every name the model held
        it) into the model (strict, atomic); the old encoder's tensors are listed in the report's ``dropped``.
        Lightning ``state_dict`` containers and ``model.``/``module.``/LightningModule prefixes are found by matching
        the model's own keys.

        Args:
            checkpoint: a file (``.pth``, ``.ckpt``, ``.safetensors``) or a state dict of the model before the swap.

        Returns:
            What was loaded, and in ``dropped`` the old encoder's keys.

        Raises:
            WeightsMismatchError: a tensor outside the encoder is missing, unexpected or mis-shaped; the model is
                unchanged.
            RuntimeError: after a dry run (nothing was swapped).
        """
        if self.dry_run or self.model is None:
            raise RuntimeError("load_rest after a dry run: nothing was swapped; call swap(...) without dry_run first")
        model, paths = self.model, list(self.paths)
        if isinstance(model, WRAPPERS) and all(path.startswith("module.") for path in paths):
            model, paths = model.module, [path[len("module.") :] for path in paths]
        return load_outside(model, checkpoint, paths)
