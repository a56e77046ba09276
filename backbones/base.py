"""Encoders: what ``build_backbone`` returns, and the base class every family subclasses.

- :class:`Backbone`: one output, ``forward(x) -> Tensor`` ``[N, out_channels, ceil(H/sh), ceil(W/sw)]``. A family
  subclasses it and implements ``build(config, **options) -> Stages`` (creates its modules, with the module names of
  the checkpoints it mirrors, and returns one :class:`FeatureInfo` per stage from the same loop; stage 0 = stem;
  stages after the deepest wanted one are not built) and ``forward_stages(x) -> List[Tensor]``
  (:class:`~backbones.sequential.SequentialBackbone` provides it for a body that is one chain). What it knows about
  checkpoints is declared on the class: ``default_in_channels``, ``first_conv``, ``classifier_keys``,
  ``checkpoint_key()``, ``translate_checkpoint()``, ``mismatch_hint()``, ``fusable_pairs``, ``fusion_chains()``.
- :class:`~backbones.pyramid.FeaturePyramid`: several stages out (``out_indices``), ``forward(x) -> List[Tensor]``.
- :class:`Encoder`: what both declare (channels, strides, input limits, preprocessing, ``fuse()``).
- :class:`MaskedEncoderBase`: the declared type of ``(image, mask) -> (feature, mask)`` wrappers.

The base calls ``build`` in its own ``__init__``, checks the declared channels and grid once on the meta device,
then adds the adapter, freezing and ``norm_eval``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import contract
from .config import BackboneConfig
from .contract import FeatureInfo, InputLimits, Pair, check_input_size, output_size
from .fusion import fold_batchnorms
from .layers import Projection
from .meta import eval_mode, meta_call
from .records import LoadReport, Preprocess

__all__ = ["Backbone", "Encoder", "MaskedEncoderBase", "Stages"]

_logger = logging.getLogger(__name__)
E = TypeVar("E", bound="Encoder")

_VERIFIED: set = set()  # (family, config, options) whose stages were checked on the meta device


def _verification_key(family: type, config: BackboneConfig, options: Mapping[str, Any]) -> Optional[Tuple]:
    """Identical builds have identical stages: checked once per process. ``None`` when options are unhashable."""
    key = (family, replace(config, pretrained=False, frozen_stages=-1, norm_eval=False), tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class Stages(NamedTuple):
    """What a family's ``build`` returns.

    Attributes:
        built: one record per built stage, ``built[i].index == i`` (0 = stem).
        total: stages after the stem in the full family (the last ones may be unbuilt).
        limits: the input sizes the family takes (any size from 1 unless it says otherwise).
    """

    built: List[FeatureInfo]
    total: int
    limits: InputLimits = InputLimits()


class Encoder(nn.Module):
    """What every built model declares: a :class:`Backbone` (one output) or a ``FeaturePyramid`` (several).

    Attributes:
        in_channels: channels the input must have.
        feature_info: one :class:`FeatureInfo` per built stage (index 0 = stem), native channels.
        output_info: one :class:`FeatureInfo` per output, with the channels after the adapter.
        input_limits: the input sizes it takes (:class:`~backbones.contract.InputLimits`).
        preprocess: the normalisation the loaded weights expect, per input channel (``None`` without weights).
        pretrained_report: what the last weight load did (``None`` until weights are loaded).
        attends_to_mask: whether a padding mask passed to ``forward`` reaches attention layers (timm's ViT, DeiT
            and EVA); other encoders compute the same features with or without it.
        folded_batchnorms: BatchNorms folded into convs by :meth:`fuse` (0 before).
        reparameterized: multi-branch layers :meth:`fuse` folded into one conv (0 before).
    """

    in_channels: int
    feature_info: Tuple[FeatureInfo, ...]
    output_info: Tuple[FeatureInfo, ...]
    key_prefix: ClassVar[str] = ""
    """Where the stage backbone's tensors sit in this encoder's state dict (``"backbone."`` in a pyramid)."""

    def stage_backbone(self) -> Backbone:
        """The :class:`Backbone` whose stages this encoder outputs: itself, or a pyramid's ``backbone``."""
        raise NotImplementedError

    def forward_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """Every output, ``[N, C_i, ceil(H/sh_i), ceil(W/sw_i)]`` each (one for a :class:`Backbone`)."""
        raise NotImplementedError

    def output_shape(self) -> Dict[str, FeatureInfo]:
        """detectron2's ``output_shape()``: each output's stage name -> its channels and stride."""
        return {info.name: info for info in self.output_info}

    @property
    def min_input_size(self) -> int:
        """Smallest H and W (``input_limits.min_size``)."""
        return self.stage_backbone().input_limits.min_size

    @property
    def max_input_size(self) -> Optional[Pair]:
        """Largest ``(H, W)``, or ``None`` (``input_limits.max_size``)."""
        return self.stage_backbone().input_limits.max_size

    def _probe_size(self) -> Pair:
        """An odd input size (not a multiple of the deepest stride on either axis) for checks on one input."""
        backbone = self.stage_backbone()
        deepest, limits = backbone.feature_info[-1].stride, backbone.input_limits
        height, width = max(2 * deepest[0] + 1, limits.min_size), max(3 * deepest[1] + 1, limits.min_size)
        if limits.max_size is not None:
            height, width = min(height, limits.max_size[0]), min(width, limits.max_size[1])
        return height, width

    def fuse(self: E) -> E:
        """Fold multi-branch layers into one conv each (PP-LCNetV3's, as the original's ``rep()``), then every
        BatchNorm that directly follows a conv into that conv (body and ``conv_bn`` adapters), in place, for
        inference; returns ``self``. The outputs stay within 1e-4 of their scale in float32 (a few
        units of the dtype's rounding in half precision), checked on a probe input.

        Pre-activation BatchNorms (BN -> ReLU -> conv) have no conv to fold into and stay. The count is in
        ``folded_batchnorms`` (and the log). A fused model's state dict is not the unfused layout: the folded
        convs gain a bias and the BatchNorm keys are gone; save the unfused model's weights for training.

        Raises:
            RuntimeError: the model is in training mode (call ``eval()`` first: folding uses the running
                statistics, which training would go on updating), its weights are on the meta device, or the
                folded model computes something else (it is then restored exactly).
        """
        if self.training:
            raise RuntimeError(
                "fuse() folds BatchNorm running statistics into the convs, for inference only: call "
                "encoder.eval() first (a fused model cannot learn BatchNorm statistics)"
            )
        if any(t.is_meta for t in [*self.parameters(), *self.buffers()]):
            raise RuntimeError(
                "fuse() needs real weights, but the model is on the meta device (shapes only); build it on the CPU "
                "or a GPU, or move it with model.to_empty(device=...) and load its weights first"
            )
        backbone = self.stage_backbone()
        parameter = next(iter(self.parameters()))
        probe = torch.randn(2, self.in_channels, *self._probe_size(), dtype=parameter.dtype, device=parameter.device)
        layers = backbone.reparameterizable()
        folded, kept = fold_batchnorms(self, backbone.fusable_pairs, backbone.fusion_chains(), probe, layers)
        self.folded_batchnorms, self.reparameterized = folded, len(layers)
        _logger.info("%s.fuse(): %d layers re-parameterised, %d BatchNorms folded, %d stay", type(self).__name__,
                     len(layers), folded, kept)  # fmt: skip
        return self


class Backbone(Encoder):
    """A feature extractor ``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``.

    Attributes (besides :class:`Encoder`'s):
        num_stages: stages after the stem in the full family.
        config: the common options it was built with.
    """

    __jit_unused_properties__ = ["out_channels", "output_stride", "min_input_size", "max_input_size"]
    __jit_ignored_attributes__ = ["pretrained_report", "config", "preprocess", "input_limits", "_options"]

    default_in_channels: ClassVar[int] = 3
    """Input channels when ``in_channels=None``."""
    first_conv: ClassVar[str] = ""
    """The conv whose input channels pretrained weights adapt (``""``: the first ``nn.Conv2d``)."""
    classifier_keys: ClassVar[Tuple[str, ...]] = ()
    """Checkpoint key prefixes of heads this body does not have (dropped and reported when loading)."""
    dropout_on_output: ClassVar[bool] = True
    """Whether ``drop_rate`` is dropout on the output (else the family uses it inside its layers)."""
    fusable_pairs: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    """``(conv, norm)`` attribute names of one module where the norm directly consumes the conv's output
    (for :meth:`fuse`; consecutive children of ``nn.Sequential`` containers are found without this)."""

    pretrained_report: Optional[LoadReport]
    preprocess: Optional[Preprocess]
    attends_to_mask: bool = False

    def __init__(self, config: BackboneConfig, **options: Any) -> None:
        super().__init__()
        if isinstance(config.out_channels, tuple):
            raise ValueError(
                f"a Backbone has one output, so out_channels must be an int or None, got {config.out_channels!r}; "
                f"build_backbone(..., out_indices=...) gives a FeaturePyramid with one adapter per output"
            )
        if config.in_channels is None:
            config = replace(config, in_channels=self.default_in_channels)
        self.config = config
        self.in_channels: int = config.in_channels  # type: ignore[assignment]
        self.norm_eval: bool = config.norm_eval
        self.frozen_stages: int = config.frozen_stages
        self.pretrained_report = None
        self.preprocess = None
        self.folded_batchnorms: int = 0
        self.reparameterized: int = 0
        self._options: Dict[str, Any] = dict(options)
        self._begin_build()
        stages = self.build(config, **options)
        self._adopt(stages)
        key = _verification_key(type(self), config, options)
        if key is None or key not in _VERIFIED:
            self._verify_stages()
            if key is not None:
                _VERIFIED.add(key)
        self.train(True)

    def _adopt(self, stages: Stages) -> None:
        """Record the family's stages and limits, then add the adapter, dropout, freezing and the dtype marker."""
        config = self.config
        config.check_frozen_stages(stages.total)
        last = config.last_stage(stages.total)
        if [info.index for info in stages.built] != list(range(len(stages.built))) or last >= len(stages.built):
            raise RuntimeError(f"{type(self).__name__}.build returned stages {stages.built} for output stage {last}")
        self.num_stages: int = stages.total
        self.feature_info = tuple(stages.built)
        self.output_index: int = last
        self.input_limits: InputLimits = stages.limits
        self._size_bounds: List[int] = stages.limits.bounds()
        self._size_reason: str = f"; {stages.limits.reason}" if stages.limits.reason else ""
        info = self.feature_info[last]
        if config.out_channels is None:
            self.adapters = nn.ModuleList([nn.Identity()])
            self.output_info = (info,)
        else:
            self.adapters = nn.ModuleList([Projection(info.channels, config.out_channels, config.adapter)])
            self.output_info = (replace(info, channels=config.out_channels),)
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

    def build(self, config: BackboneConfig, **options: Any) -> Stages:
        """Create the stem and stages as attributes; return their records (see the module docstring)."""
        raise NotImplementedError

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        """Outputs of stage 0 (stem) through the last built stage, ``[N, C_i, H_i, W_i]`` each."""
        raise NotImplementedError

    def forward_stages_masked(self, x: Tensor, mask: Tensor) -> List[Tensor]:
        """``forward_stages`` with a checked padding mask of ``x`` (families with attention override it)."""
        return self.forward_stages(x)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """This model's name for a key of a foreign checkpoint layout; ``None`` drops it (a classifier head)."""
        return None if key.startswith(self.classifier_keys) else key

    def translate_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """A whole checkpoint in this family's key layout, before the key-by-key :meth:`checkpoint_key` (timm models
        translate timm's full-model keys here). The default returns it as it is."""
        return state

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        """A hint appended to a failed load's message (which option makes the keys fit, which family the file is
        of); the keys are this backbone's names."""
        return ""

    def fusion_chains(self) -> List[nn.Module]:
        """Containers besides ``nn.Sequential`` whose consecutive children run in order (for :meth:`fuse`)."""
        return []

    def reparameterizable(self) -> List[nn.Module]:
        """Multi-branch layers that :meth:`fuse` folds into one conv: each has ``rep()`` and ``unrep()`` (PP-LCNetV3's
        learnable re-parameterisable layers); none by default."""
        return []

    def unbuilt_keys(self) -> Set[str]:
        """State-dict keys of the family's full model that this one does not build (the stages after the deepest
        wanted output): a checkpoint's tensors under them are ignored, not refused."""
        if len(self.feature_info) - 1 == self.num_stages:
            return set()
        native = replace(self.config, out_indices=None, out_channels=None, frozen_stages=-1, pretrained=False)
        with torch.device("meta"):
            full = type(self)(native, **self._options)
        return set(full.state_dict()) - set(self.state_dict())

    def stage_backbone(self) -> Backbone:
        return self

    # -- internals ----------------------------------------------------------------------------------
    def _stage_member(self, name: str) -> Union[nn.Module, nn.Parameter]:
        """A name of ``FeatureInfo.modules``: a submodule, or a parameter held directly by one (a ViT's tokens)."""
        try:
            return self.get_submodule(name)
        except AttributeError:
            return self.get_parameter(name)

    def _verify_stages(self) -> None:
        """Each built stage's declared channels and ceil grid, checked at an odd size: a real forward of a zero image
        (a few cells per stage: cheaper than the meta device), on the meta device when the weights are there."""
        height, width = self._probe_size()
        parameter = next(iter(self.parameters()), None)
        meta = parameter is None or parameter.is_meta
        x = torch.zeros(1, self.in_channels, height, width, device="meta" if meta else parameter.device)
        with eval_mode(self), torch.no_grad():  # BatchNorm in training refuses one 1x1 sample (squeeze-excitation)
            outputs = meta_call(self, "forward_stages", x) if meta else self.forward_stages(x.to(parameter.dtype))
        for info, output in zip(self.feature_info, outputs):
            wanted = (info.channels, *output_size(height, width, info.stride))
            if tuple(output.shape[1:]) != wanted:
                raise RuntimeError(
                    f"{type(self).__name__} declares stage {info.index} ({info.name}) as [N, {info.channels}, "
                    f"ceil(H/{info.stride[0]}), ceil(W/{info.stride[1]})] but computes {list(output.shape)} "
                    f"for a {height}x{width} input"
                )

    # -- the contract -------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``[N, in_channels, H, W]`` -> ``[N, out_channels, ceil(H/sh), ceil(W/sw)]``.

        ``mask``: an optional padding mask of ``x`` (bool ``[N, H, W]``, True = padding, or float ``[N, 1, H, W]``,
        1 = valid); where ``attends_to_mask``, attention ignores the padded positions.
        """
        stages = self.stage_outputs(x, mask)
        return self.adapters[0](self.dropout(stages[self.output_index]))

    def forward_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        return [self.forward(x, mask)]

    def stage_outputs(self, x: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """The native output of every built stage for a checked input (what the adapters read)."""
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
        """``(ceil(H/sh), ceil(W/sw))`` without a forward pass."""
        check_input_size(height, width, self.input_limits)
        return output_size(height, width, self.output_info[0].stride)

    def downsample_mask(self, mask: Tensor) -> Tensor:
        """Padding mask on the output grid, identical to ``mask[..., ::sh, ::sw]`` (dtype and layout kept).

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).
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


class MaskedEncoderBase(nn.Module):
    """A module called as ``(image [N, C, H, W], mask) -> (feature, mask on the feature grid)`` around
    ``self.encoder``, a single-output :class:`Backbone`: what :func:`~backbones.export_onnx` exports with a ``mask``
    input. ``backbones.adapters.MaskedEncoder`` implements it.

    Attributes:
        encoder: the :class:`Backbone` it calls.
    """
