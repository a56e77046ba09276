"""Typed records about weights that the core passes around: how loaded weights want their input
(:class:`Preprocess`) and what a load did (:class:`LoadReport`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ._validate import check_int

__all__ = ["LoadReport", "Preprocess", "key_list"]

_SHOWN = 12


def key_list(keys: Collection[str]) -> str:
    """Sorted keys for a message: the first few and how many there are."""
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


@dataclass(frozen=True)
class Preprocess:
    """The input normalisation that a weight set declares (torchvision's ``transforms``, timm's ``pretrained_cfg``).

    Calling it normalises an image batch: ``[N, C, H, W]`` floats in ``[0, 1]`` (or uint8, divided by 255) ->
    ``(x - mean) / std`` per channel. It does not resize: the encoders take any size; ``input_size`` and
    ``interpolation`` say how the weights were trained, for users who want to match it.

    Attributes:
        mean, std: per input channel.
        input_size: ``(H, W)`` of the training crop, or ``None`` where the source declares none.
        interpolation: the resize interpolation of the source (``"bilinear"``, ``"bicubic"``).
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    input_size: Optional[Tuple[int, int]] = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"Preprocess needs one mean and one positive std per channel, got {self.mean}, {self.std}")

    def for_channels(self, in_channels: int) -> Preprocess:
        """The statistics for an input conv adapted to ``in_channels``: one channel gets the mean of the RGB
        statistics (the kernels are summed), other counts repeat them channel by channel (as the kernels are)."""
        check_int(in_channels, "in_channels", 1)
        if in_channels == len(self.mean):
            return self
        mean: Tuple[float, ...]
        std: Tuple[float, ...]
        if in_channels == 1:
            mean, std = (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
        else:
            mean = tuple(self.mean[i % len(self.mean)] for i in range(in_channels))
            std = tuple(self.std[i % len(self.std)] for i in range(in_channels))
        return Preprocess(mean, std, self.input_size, self.interpolation)

    def __call__(self, images: Tensor) -> Tensor:
        """``[N, C, H, W]`` in ``[0, 1]`` (or uint8) -> normalised float ``[N, C, H, W]``."""
        if not isinstance(images, Tensor) or images.dim() != 4:
            shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a [N, {len(self.mean)}, H, W] tensor, got {shape}")
        if images.shape[1] != len(self.mean):
            raise ValueError(
                f"images must have {len(self.mean)} channels for this Preprocess, got shape {list(images.shape)}"
            )
        if images.dtype == torch.uint8:
            images = images.float() / 255
        elif not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating, got dtype {images.dtype}")
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device)[:, None, None]
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device)[:, None, None]
        return (images - mean) / std

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        size = f", trained at {self.input_size[0]}x{self.input_size[1]}" if self.input_size else ""
        mean, std = (", ".join(f"{v:.4g}" for v in values) for values in (self.mean, self.std))
        return f"mean ({mean}), std ({std}){size}, {self.interpolation} resize"


@dataclass
class LoadReport:
    """What a load did.

    Attributes:
        source: how the checkpoint is named (a path, a weight tag).
        prefix: the prefix stripped from the file's keys (a whole model's ``encoder.model.``).
        loaded: tensors copied into the model.
        renamed: keys translated from a foreign layout.
        adapted: tensors reshaped on purpose (the first conv's input channels).
        initialised: tensors of the model that kept their fresh initialisation (adapters).
        ignored: keys of the file that this model has no place for (a classifier head, unbuilt stages).
        dropped: keys left out on purpose by the caller (the old encoder's, after a swap).
        outside_prefix: tensors of the file outside ``prefix`` (a decoder beside the encoder).
    """

    source: str
    prefix: str = ""
    loaded: int = 0
    renamed: int = 0
    adapted: List[str] = field(default_factory=list)
    initialised: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    outside_prefix: int = 0

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.prefix:
            lines.append(f"  prefix {self.prefix!r} stripped ({self.outside_prefix} tensors outside it skipped)")
        if self.renamed:
            lines.append(f"  {self.renamed} keys renamed to this library's module names")
        lines += [f"  adapted: {name}" for name in self.adapted]
        if self.initialised:
            lines.append(f"  freshly initialised (not in the file): {key_list(self.initialised)}")
        if self.ignored:
            lines.append(f"  ignored (classifier head or stages not built): {key_list(self.ignored)}")
        if self.dropped:
            lines.append(f"  dropped on purpose: {key_list(self.dropped)}")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
