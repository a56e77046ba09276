"""``SequentialBackbone``: a family whose body is one chain of modules (DenseNets, the OCR families)."""

from __future__ import annotations

from typing import ClassVar, List, Mapping, Optional

from torch import Tensor, nn

from ._backbone import Backbone
from ._contract import FeatureInfo, Pair, crop_to_ceil_grid

__all__ = ["SequentialBackbone"]


class SequentialBackbone(Backbone):
    """A backbone whose body is one chain, ``self.features`` (a ModuleDict run in order).

    A family's ``build`` calls :meth:`add_stage` for the stem and each stage; the stage's output is
    taken after its last module. DenseNets use it with torchvision's names; it is also the shortest
    way to write a family of your own. A family whose layers keep extra border columns the way its
    original does (CRNN, FAN) sets ``crop_to_grid``: each stage's output is then cropped to the ceil grid
    while the chain goes on with the uncropped map.
    """

    crop_to_grid: ClassVar[bool] = False
    """Crop each stage's output to the ceil grid (the chain goes on with the uncropped map)."""
    bare_checkpoint_keys: ClassVar[bool] = False
    """The projects' checkpoints name the chain's modules at top level (``conv1.weight``, as HMER and OCR code
    does): their keys are looked up under ``features.``."""

    def _begin_build(self) -> None:
        self.features = nn.ModuleDict()
        self.stage_ends: List[str] = []
        self.stage_strides: List[List[int]] = []
        self.crop_outputs: bool = self.crop_to_grid

    def checkpoint_key(self, key: str) -> Optional[str]:
        renamed = super().checkpoint_key(key)
        if renamed is None or not self.bare_checkpoint_keys or renamed.startswith("features."):
            return renamed
        return f"features.{renamed}"

    def fusion_chains(self) -> List[nn.Module]:
        return [self.features]

    def add_stage(
        self,
        name: str,
        modules: Mapping[str, nn.Module],
        channels: int,
        stride: Pair,
        dilation: Pair = (1, 1),
    ) -> FeatureInfo:
        """Append ``modules`` to the chain as the next stage and return its record.

        Args:
            name: the stage's name (``"stem"``, ``"denseblock2"``).
            modules: the stage's modules in order, by their names in ``features``.
            channels: channels of the stage's output.
            stride: ``(sh, sw)`` total stride of the stage's output.
            dilation: dilation of the stage's convolutions.
        """
        index = len(self.stage_ends)
        for key, module in modules.items():
            self.features[key] = module
        self.stage_ends.append(list(modules)[-1])
        self.stage_strides.append([stride[0], stride[1]])
        return FeatureInfo(name, index, channels, stride, dilation, tuple(f"features.{key}" for key in modules))

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        height, width = x.shape[2], x.shape[3]
        outputs: List[Tensor] = []
        for name, module in self.features.items():
            x = module(x)
            if name in self.stage_ends:
                if self.crop_outputs:
                    outputs.append(crop_to_ceil_grid(x, height, width, self.stage_strides[len(outputs)]))
                else:
                    outputs.append(x)
        return outputs
