"""``Backbone``: what ``build_backbone`` returns for one output, and the base class every family subclasses.

A family declares only its architecture:

- its options are keyword-only parameters of its ``__init__``, kept as attributes before it calls
  ``super().__init__(config, family_options={...})`` (the base records them to rebuild the family);
- ``build(config) -> Stages`` creates the stem and returns the stages as they are built: an iterable of
  :class:`FeatureInfo`, the stem first, each yielded once its modules exist (a generator). The base stops at the
  deepest stage the configuration outputs, so later stages are never built;
- ``forward_stages(x) -> List[Tensor]`` runs the built stages (:class:`~backbones.core.SequentialBackbone`
  provides it for a body that is one chain);
- what it knows about checkpoints and fusion, on the class: ``default_in_channels``, ``first_conv``,
  ``classifier_keys``, ``conv_init``, ``fusable_pairs``, ``checkpoint_key()``, ``translate_checkpoint()``,
  ``mismatch_hint()``, ``fusion_chains()``.

The base checks the declared channels and grid once per configuration (a real forward of a zero image at an odd
size), then adds the adapter, freezing and ``norm_eval``. A family that checks its grid itself while building (the
``timm:`` family fits it at several sizes) sets ``verify_at_build = False``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import _contract as contract
from ._config import BackboneConfig
from ._contract import FeatureInfo, Pair, check_input_size, output_size
from ._encoder import Encoder
from ._fusion import Reparameterizable
from ._layers import Projection, init_conv_weights
from ._stage_checks import Stages, take_stages, verify_once

__all__ = ["Backbone", "Stages"]


class Backbone(Encoder):
    """A feature extractor ``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``.

    Args:
        config: the common options (:class:`BackboneConfig`).
        family_options: the family's own options as its ``__init__`` received them (to rebuild it).

    Attributes (besides :class:`Encoder`'s):
        num_stages: stages after the stem in the full family.
        config: the common options it was built with.
        family_options: the family's own options.
    """

    __jit_unused_properties__ = ["out_channels", "output_stride", "min_input_size", "max_input_size"]

    default_in_channels: ClassVar[int] = 3
    """Input channels when ``in_channels=None``."""
    first_conv: ClassVar[str] = ""
    """The conv whose input channels pretrained weights adapt (``""``: the first ``nn.Conv2d``)."""
    classifier_keys: ClassVar[Tuple[str, ...]] = ()
    """Checkpoint key prefixes of heads this body does not have (dropped and reported when loading)."""
    conv_init: ClassVar[Optional[Literal["fan_in", "fan_out"]]] = None
    """He initialisation of the body's convs after building: ``"fan_out"`` (torchvision's ResNets, the OCR and HMER
    projects), ``"fan_in"`` (torchvision's DenseNets), or ``None`` (PyTorch's default initialisation)."""
    dropout_on_output: ClassVar[bool] = True
    """Whether ``drop_rate`` is dropout on the output (else the family uses it inside its layers)."""
    fusable_pairs: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    """``(conv, norm)`` attribute names of one module where the norm directly consumes the conv's output
    (for :meth:`fuse`; consecutive children of ``nn.Sequential`` containers are found without this)."""
    verify_at_build: ClassVar[bool] = True
    """Check each built stage's declared channels and grid at an odd size once per configuration; a family that
    verifies its stages itself while building sets it to ``False``."""
    attends_to_mask = False
    if TYPE_CHECKING:  # registered in _adopt; not at run time: TorchScript would read the annotation
        weights_dtype: Tensor

    def __init__(self, config: BackboneConfig, family_options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        if config.out_channels is not None and not isinstance(config.out_channels, int):
            raise ValueError(
                f"a Backbone has one output, so out_channels must be an int or None, got {config.out_channels!r}; "
                f"build_backbone(..., out_indices=...) gives a FeaturePyramid with one adapter per output"
            )
        in_channels = self.default_in_channels if config.in_channels is None else config.in_channels
        self.config = replace(config, in_channels=in_channels)
        self.in_channels = in_channels
        self.family_options: Dict[str, Any] = dict(family_options or {})
        self.norm_eval: bool = config.norm_eval
        self.frozen_stages: int = config.frozen_stages
        self.pretrained_report = None
        self.preprocess = None
        self.folded_batchnorms = 0
        self.reparameterized = 0
        self._begin_build()
        stages = self.build(self.config)
        built = take_stages(self, stages)
        self.init_weights()
        self._adopt(built, stages)
        if self.verify_at_build:
            verify_once(self)
        self.train(True)

    def _adopt(self, built: List[FeatureInfo], stages: Stages) -> None:
        """Record the stages and limits, then add the adapter, dropout, freezing and the dtype marker."""
        config = self.config
        self.num_stages: int = stages.total
        self.feature_info = tuple(built)
        self.output_index: int = len(built) - 1
        self.input_limits = stages.limits
        self._size_bounds: List[int] = stages.limits.bounds()
        self._size_reason: str = f"; {stages.limits.reason}" if stages.limits.reason else ""
        info = self.feature_info[-1]
        if isinstance(config.out_channels, int):
            self.adapters = nn.ModuleList([Projection(info.channels, config.out_channels, config.adapter)])
            self.output_info = (replace(info, channels=config.out_channels),)
        else:  # None: a sequence was refused in __init__
            self.adapters = nn.ModuleList([nn.Identity()])
            self.output_info = (info,)
        rate = config.drop_rate if self.dropout_on_output else 0.0
        self.dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
        for stage in self.feature_info[: self.frozen_stages + 1]:
            for name in stage.modules:
                self._stage_member(name).requires_grad_(False)
        # follows .to(dtype) / .half() like the weights; not in the state dict
        self.register_buffer("weights_dtype", torch.empty(0), persistent=False)

    # -- for families -------------------------------------------------------------------------------
    def _begin_build(self) -> None:
        """Called before ``build``: where a family base declares the containers its ``build`` fills."""

    def build(self, config: BackboneConfig) -> Stages:
        """Create the stem; return the stages' records as they are built (see the module docstring).

        Args:
            config: the common options, ``in_channels`` resolved.

        Returns:
            The stage count and a generator of one :class:`FeatureInfo` per stage as each is built.
        """
        raise NotImplementedError

    def init_weights(self) -> None:
        """Initialise the built body (before the adapter is added): He initialisation by ``conv_init``."""
        if self.conv_init is not None:
            init_conv_weights(self, mode=self.conv_init)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        """Run the built stages (no input checks: :meth:`stage_outputs` checks).

        Args:
            x: ``[N, in_channels, H, W]``.

        Returns:
            Outputs of stage 0 (stem) through the last built stage, ``[N, C_i, ceil(H/sh_i), ceil(W/sw_i)]`` each.
        """
        raise NotImplementedError

    def forward_stages_masked(self, x: Tensor, mask: Tensor) -> List[Tensor]:
        """:meth:`forward_stages` with a padding mask (families with attention override it to mask padded tokens).

        Args:
            x: ``[N, in_channels, H, W]``.
            mask: checked padding mask of ``x``: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]``.

        Returns:
            The stage outputs, as :meth:`forward_stages`.
        """
        return self.forward_stages(x)

    def input_conv(self) -> str:
        """The conv whose input channels pretrained weights adapt.

        Returns:
            Its module name: ``first_conv``, else the first ``nn.Conv2d``'s (``""`` if there is none).
        """
        if self.first_conv:
            return self.first_conv
        return next((name for name, module in self.named_modules() if isinstance(module, nn.Conv2d)), "")

    def checkpoint_key(self, key: str) -> Optional[str]:
        """This model's name for a key of a foreign checkpoint layout.

        Args:
            key: a checkpoint key, prefixes of the wrapping model already stripped.

        Returns:
            The key in this model's names, or ``None`` to drop it (the default drops ``classifier_keys``).
        """
        return None if key.startswith(self.classifier_keys) else key

    def translate_checkpoint(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """A whole checkpoint in this family's key layout, before the key-by-key :meth:`checkpoint_key` (timm models
        translate timm's full-model keys here).

        Args:
            state: the checkpoint's tensors by key.

        Returns:
            The tensors under this family's keys (the default returns ``state`` as it is).
        """
        return state

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        """A hint appended to a failed load's message: which option makes the keys fit, which family the file is of.

        Args:
            missing: this backbone's keys the file lacks.
            unexpected: the file's keys this backbone lacks (in this backbone's names).
            mis_shaped: keys whose shapes differ.

        Returns:
            The hint, or ``""`` (the default).
        """
        return ""

    def fusion_chains(self) -> List[nn.Module]:
        """Containers besides ``nn.Sequential`` whose consecutive children run in order (for :meth:`fuse`).

        Returns:
            The containers (the default: none).
        """
        return []

    def folded_norm_remainder(self, norm: nn.Module) -> nn.Module:
        """What takes the place of a BatchNorm that :meth:`fuse` folded into its conv.

        Args:
            norm: the folded BatchNorm.

        Returns:
            ``nn.Identity()`` (the default), or what of ``norm`` must stay (a norm that also applies an activation
            keeps the activation).
        """
        return nn.Identity()

    def reparameterizable(self) -> List[Reparameterizable]:
        """Multi-branch layers that :meth:`fuse` folds into one conv (PP-LCNetV3's learnable re-parameterisable
        layers).

        Returns:
            Every submodule that is :class:`~backbones.core.Reparameterizable`.
        """
        return [module for module in self.modules() if isinstance(module, Reparameterizable)]

    def unbuilt_keys(self) -> Set[str]:
        """Keys of the family's full model that this one does not build: a checkpoint's tensors under them are
        ignored, not refused.

        Returns:
            The state-dict keys of the stages after the deepest wanted output (empty when all are built).
        """
        if len(self.feature_info) - 1 == self.num_stages:
            return set()
        native = replace(self.config, out_indices=None, out_channels=None, frozen_stages=-1, pretrained=False)
        with torch.device("meta"):
            full = type(self)(native, **self.family_options)
        return set(full.state_dict()) - set(self.state_dict())

    def stage_backbone(self) -> Backbone:
        return self

    # -- internals ----------------------------------------------------------------------------------
    def _stage_member(self, name: str) -> nn.Module | nn.Parameter:
        """A name of ``FeatureInfo.modules``: a submodule, or a parameter held directly by one (a ViT's tokens)."""
        try:
            return self.get_submodule(name)
        except AttributeError:
            return self.get_parameter(name)

    # -- the contract -------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The encoder's one output.

        Args:
            x: ``[N, in_channels, H, W]``, floating, in the weights' dtype, H and W within ``input_limits``.
            mask: an optional padding mask of ``x``: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]``
                (1 = valid); where ``attends_to_mask``, attention ignores the padded positions.

        Returns:
            ``[N, out_channels, ceil(H/sh), ceil(W/sw)]``.

        Raises:
            TypeError, ValueError: ``x`` or ``mask`` is not what is allowed (the message names what was given).
        """
        return self.output_from(self.stage_outputs(x, mask))

    def output_from(self, stages: List[Tensor]) -> Tensor:
        """The output from the stage outputs of one input: wrappers that also hand on the stages call this instead
        of ``forward``.

        Args:
            stages: what :meth:`stage_outputs` returned.

        Returns:
            The deepest wanted stage through the dropout and the adapter, ``[N, out_channels, h, w]``.
        """
        return self.adapters[0](self.dropout(stages[self.output_index]))

    def forward_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        return [self.forward(x, mask)]

    def output_names(self) -> List[str]:
        return ["feature"]

    def stage_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """The native output of every built stage, for a checked input (what the adapters read).

        Args:
            x: ``[N, in_channels, H, W]``.
            mask: an optional padding mask of ``x`` (as :meth:`forward` takes it).

        Returns:
            ``[N, C_i, ceil(H/sh_i), ceil(W/sw_i)]`` for stage 0 (stem) through the last built stage.

        Raises:
            TypeError, ValueError: ``x`` or ``mask`` is not what is allowed.
        """
        contract.check_input(x, self.in_channels, self.weights_dtype, self._size_bounds, self._size_reason)
        if mask is None:
            return self.forward_stages(x)
        return self.forward_stages_masked(x, contract.check_mask(mask, x))

    @property
    def out_channels(self) -> int:
        """Channels of the output."""
        return self.output_info[0].channels

    @property
    def output_stride(self) -> Pair:
        """``(sh, sw)`` of the output."""
        return self.output_info[0].stride

    def output_size(self, height: int, width: int) -> Pair:
        """The output's grid, without a forward pass.

        Args:
            height: input H.
            width: input W.

        Returns:
            ``(ceil(H/sh), ceil(W/sw))``.

        Raises:
            ValueError: the size is outside ``input_limits``.
        """
        check_input_size(height, width, self.input_limits)
        return output_size(height, width, self.output_info[0].stride)

    def downsample_mask(self, mask: Tensor) -> Tensor:
        """The padding mask on the output grid.

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).

        Returns:
            ``mask[..., ::sh, ::sw]``, its dtype and layout kept.

        Raises:
            TypeError, ValueError: ``mask`` is not one of those layouts.
        """
        return contract.downsample_mask(mask, self.output_info[0].stride)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        stage_modules = [
            (i, member)
            for i, info in enumerate(self.feature_info)
            for member in map(self._stage_member, info.modules)
            if isinstance(member, nn.Module)
        ]
        for i, module in stage_modules:
            if i <= self.frozen_stages:
                module.eval()
        if mode and self.norm_eval:
            for _, stage_module in stage_modules:
                for module in stage_module.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, output_stride={self.output_stride}"
