"""``BackboneConfig``: the family-independent options of ``build_backbone``, validated once.

The list of common options (:data:`COMMON_OPTIONS`) is the dataclass's fields: adding a field adds an option.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping, Optional, Sequence, Tuple, Union

from ._contract import PairLike
from ._layers import ADAPTER_KINDS
from ._strides import StridePlan, plan_strides
from ._validate import check_bool, check_choice, check_float, check_int, check_pair

__all__ = ["COMMON_OPTIONS", "BackboneConfig", "Pretrained"]

Pretrained = Union[bool, str, "os.PathLike[str]"]


def _as_tuple(value: object, name: str, what: str) -> object:
    if value is None or isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    raise TypeError(f"{name} must be {what}, got {value!r}")


@dataclass(frozen=True)
class BackboneConfig:
    """The common options of :func:`backbones.build_backbone` (see there), validated on creation.

    Lists are stored as tuples. ``in_channels=None`` means the family's default
    (``Backbone.default_in_channels``: 3, or 1 for ``densenet_hmer``).
    """

    out_channels: Union[None, int, Sequence[int]] = None
    output_stride: Optional[PairLike] = None
    strides: Optional[Sequence[PairLike]] = None
    dilate: bool = False
    in_channels: Optional[int] = None
    pretrained: Pretrained = False
    out_indices: Optional[Sequence[int]] = None
    frozen_stages: int = -1
    norm_eval: bool = False
    adapter: str = "conv_bn"
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.out_channels, int) or isinstance(self.out_channels, bool):
            what = "an int, or one int per output (a tuple) with out_indices"
            object.__setattr__(self, "out_channels", _as_tuple(self.out_channels, "out_channels", what))
        object.__setattr__(self, "strides", _as_tuple(self.strides, "strides", "a tuple or list"))
        object.__setattr__(self, "out_indices", _as_tuple(self.out_indices, "out_indices", "a tuple or list"))
        if self.in_channels is not None:
            check_int(self.in_channels, "in_channels", 1)
        if self.out_channels is not None:
            values = self.out_channels if isinstance(self.out_channels, tuple) else (self.out_channels,)
            for value in values:
                check_int(value, "out_channels", 1)
        if self.output_stride is not None:
            check_pair(self.output_stride, "output_stride")
        check_bool(self.dilate, "dilate")
        check_bool(self.norm_eval, "norm_eval")
        if isinstance(self.pretrained, Mapping):
            raise TypeError(
                "pretrained must be a bool, a weight tag or a file path, got a state dict; build first, then "
                "load_weights(model, state_dict)"
            )
        if self.pretrained is not None and not isinstance(self.pretrained, (bool, str, os.PathLike)):
            raise TypeError(f"pretrained must be a bool, a weight tag or a file path, got {self.pretrained!r}")
        check_int(self.frozen_stages, "frozen_stages", -1)
        check_choice(self.adapter, "adapter", ADAPTER_KINDS)
        check_float(self.drop_rate, "drop_rate", 0.0, 1.0, high_open=True)
        self._check_outputs()

    def _check_outputs(self) -> None:
        if self.out_indices is None:
            if isinstance(self.out_channels, tuple):
                raise ValueError(f"out_channels must be an int unless out_indices is given, got {self.out_channels!r}")
            return
        if not self.out_indices:
            raise ValueError("out_indices must name at least one stage, got ()")
        for index in self.out_indices:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"out_indices must be ints (stage indices), got {self.out_indices!r}")
        if isinstance(self.out_channels, tuple) and len(self.out_channels) != len(self.out_indices):
            raise ValueError(
                f"out_channels must be an int or one int per output ({len(self.out_indices)} for "
                f"out_indices={self.out_indices}), got {self.out_channels!r}"
            )

    @property
    def wants_weights(self) -> bool:
        """Whether ``pretrained`` asks for weights (anything but ``False`` or ``None``)."""
        return self.pretrained not in (False, None)

    def plan(self, stem_stride: PairLike, native_strides: Sequence[PairLike]) -> StridePlan:
        """Strides and dilations of the stages after the stem, from ``output_stride``, ``strides`` and ``dilate``.

        Args:
            stem_stride: the stem's stride, ``s`` or ``(sh, sw)``.
            native_strides: each stage's native stride.

        Returns:
            The plan: the stem's stride and one :class:`~backbones.core.StagePlan` per stage.

        Raises:
            ValueError: the options ask for a stride the family cannot give (the message lists what it can).
        """
        return plan_strides(
            stem_stride, native_strides, output_stride=self.output_stride, strides=self.strides, dilate=self.dilate
        )

    def out_indices_for(self, num_stages: int) -> Tuple[int, ...]:
        """The stage indices to output.

        Args:
            num_stages: stages after the stem in the family.

        Returns:
            ``out_indices`` made non-negative (0 = stem, ``num_stages`` = last); ``(num_stages,)`` when ``None``.

        Raises:
            ValueError: an index out of range, or indices not strictly increasing.
        """
        if self.out_indices is None:
            return (num_stages,)
        resolved = []
        for index in self.out_indices:
            if not -(num_stages + 1) <= index <= num_stages:
                raise ValueError(
                    f"out_indices must hold stage indices in 0..{num_stages} (0 = stem; negative counts "
                    f"from the end), got {self.out_indices!r}"
                )
            resolved.append(index % (num_stages + 1))
        if any(b <= a for a, b in zip(resolved, resolved[1:])):
            raise ValueError(f"out_indices must be strictly increasing stages, got {self.out_indices!r}")
        return tuple(resolved)

    def last_stage(self, num_stages: int) -> int:
        """The deepest stage that must be built; the stages after it are pruned.

        Args:
            num_stages: stages after the stem in the family.

        Returns:
            The deepest wanted stage index.
        """
        return self.out_indices_for(num_stages)[-1]

    def check_frozen_stages(self, num_stages: int) -> None:
        """Check ``frozen_stages`` against the family's stage count.

        Args:
            num_stages: stages after the stem in the family.

        Raises:
            ValueError: ``frozen_stages`` is past the last stage.
        """
        if self.frozen_stages > num_stages:
            raise ValueError(
                f"frozen_stages must be in -1..{num_stages} (-1 = none, 0 = stem, i = stem and stages "
                f"1..i), got {self.frozen_stages}"
            )


COMMON_OPTIONS: Tuple[str, ...] = tuple(f.name for f in fields(BackboneConfig))
