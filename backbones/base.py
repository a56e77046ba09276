"""``Backbone``: the module every family subclasses; the base carries the whole contract.

A family implements two methods and may declare what it knows about checkpoints:

- ``build(config, **options) -> Stages``: creates its modules as attributes (with the module names of
  the checkpoints it mirrors) and returns one :class:`FeatureInfo` per stage, from the same loop that
  builds them (stage 0 = stem). Stages after the deepest wanted output are not built.
- ``forward_stages(x) -> List[Tensor]``: the stage outputs; :class:`~backbones.sequential.SequentialBackbone`
  provides it for a body that is one chain. ``forward_stages_masked(x, mask)`` may use a padding mask (attention).
- ``default_in_channels``, ``first_conv``, ``classifier_keys``, ``checkpoint_key()``, ``mismatch_hint()``.

The base calls ``build`` in its own ``__init__``, checks the declared channels and grid once on the
meta device, then adds the adapters, the output selection (``out_indices``), freezing and ``norm_eval``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import contract
from .config import BackboneConfig
from .contract import FeatureInfo, Pair, output_size
from .layers import Projection
from .meta import eval_mode, meta_call

if TYPE_CHECKING:
    from .loading import LoadReport

__all__ = ["Backbone", "Stages"]

_logger = logging.getLogger(__name__)


_VERIFIED: set = set()  # (family, config, options) whose stages were checked on the meta device


def _verification_key(family: type, config: BackboneConfig, options: Mapping[str, Any]) -> Optional[Tuple]:
    """Identical builds have identical stages: checked once per process. ``None`` when options are unhashable."""
    key = (family, replace(config, pretrained=False, frozen_stages=-1, norm_eval=False), tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _autocast_enabled(x: Tensor) -> bool:
    if torch.jit.is_scripting():
        return torch.is_autocast_enabled()
    return torch.is_autocast_enabled(x.device.type)


class Stages(NamedTuple):
    """What a family's ``build`` returns.

    Attributes:
        built: one record per built stage, ``built[i].index == i`` (0 = stem).
        total: stages after the stem in the full family (the last ones may be unbuilt).
    """

    built: List[FeatureInfo]
    total: int


class Backbone(nn.Module):
    """A feature extractor ``[N, in_channels, H, W] -> [N, out_channels, ceil(H/sh), ceil(W/sw)]``.

    With ``out_indices`` the forward returns a list (one tensor per selected stage), and
    ``out_channels``, ``output_stride``, ``output_size`` and ``downsample_mask`` answer per output.

    Attributes:
        in_channels: channels the input must have.
        min_input_size: smallest H and W for which the contract holds.
        feature_info: one :class:`FeatureInfo` per built stage (index 0 = stem), native channels.
        output_info: one :class:`FeatureInfo` per output, with the channels after the adapter.
        pretrained_report: what the last weight load did (``None`` until weights are loaded).
        attends_to_mask: whether a padding mask passed to ``forward`` reaches attention layers (timm's ViT,
            DeiT and EVA); other backbones compute the same features with or without it.
    """

    __jit_unused_properties__ = ["out_channels", "output_stride", "multi_output"]
    __jit_ignored_attributes__ = ["pretrained_report", "config"]

    default_in_channels: ClassVar[int] = 3
    """Input channels when ``in_channels=None``."""
    first_conv: ClassVar[str] = ""
    """The conv whose input channels pretrained weights adapt (``""``: the first ``nn.Conv2d``)."""
    classifier_keys: ClassVar[Tuple[str, ...]] = ()
    """Checkpoint key prefixes of heads this body does not have (dropped and reported when loading)."""
    dropout_on_output: ClassVar[bool] = True
    """Whether ``drop_rate`` is dropout on each output (else the family uses it inside its layers)."""
    fusable_pairs: ClassVar[Tuple[Tuple[str, str], ...]] = ()
    """``(conv, norm)`` attribute names of one module where the norm directly consumes the conv's output
    (for :meth:`fuse`; consecutive children of sequential containers are found without this)."""

    pretrained_report: Optional[LoadReport]
    attends_to_mask: bool = False

    def __init__(self, config: BackboneConfig, **options: Any) -> None:
        super().__init__()
        if config.in_channels is None:
            config = replace(config, in_channels=self.default_in_channels)
        self.config = config
        self.in_channels: int = config.in_channels  # type: ignore[assignment]
        self.min_input_size: int = 1
        self.norm_eval: bool = config.norm_eval
        self.frozen_stages: int = config.frozen_stages
        self.pretrained_report = None

        stages = self.build(config, **options)
        config.check_frozen_stages(stages.total)
        indices = config.out_indices_for(stages.total)
        if [info.index for info in stages.built] != list(range(len(stages.built))) or indices[-1] >= len(stages.built):
            raise RuntimeError(f"{type(self).__name__}.build returned stages {stages.built} for outputs {indices}")
        self.num_stages: int = stages.total
        self.feature_info: Tuple[FeatureInfo, ...] = tuple(stages.built)
        self.out_indices: List[int] = list(indices)
        self._multi_output: bool = config.out_indices is not None
        self._add_adapters(indices)
        rate = config.drop_rate if self.dropout_on_output else 0.0
        self.dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
        for info in self.feature_info[: self.frozen_stages + 1]:
            for name in info.modules:
                self._stage_member(name).requires_grad_(False)
        # follows .to(dtype) / .half() like the weights; not in the state dict
        self.register_buffer("weights_dtype", torch.empty(0), persistent=False)
        key = _verification_key(type(self), config, options)
        if key is None or key not in _VERIFIED:
            self._verify_stages()
            if key is not None:
                _VERIFIED.add(key)
        self.train(True)

    # -- for families -------------------------------------------------------------------------------
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

    def mismatch_hint(self, missing: List[str], unexpected: List[str]) -> str:
        """A hint appended to a failed load's message (e.g. which option makes the keys fit)."""
        return ""

    def load_pretrained(
        self, state: Mapping[str, Tensor], source: str, reference_keys: Optional[List[str]] = None
    ) -> LoadReport:
        """Load a state dict in any layout this family knows (see :func:`backbones.load_weights`)."""
        from .loading import load_weights

        return load_weights(self, state, source=source, reference_keys=reference_keys)

    # -- composition --------------------------------------------------------------------------------
    def _add_adapters(self, indices: Tuple[int, ...]) -> None:
        wanted = self.config.out_channels
        per_output = wanted if isinstance(wanted, tuple) else (wanted,) * len(indices)
        adapters: List[nn.Module] = []
        outputs = []
        for index, channels in zip(indices, per_output):
            info = self.feature_info[index]
            if channels is None:
                adapters.append(nn.Identity())
                outputs.append(info)
            else:
                adapters.append(Projection(info.channels, channels, self.config.adapter))
                outputs.append(replace(info, channels=channels))
        self.adapters = nn.ModuleList(adapters)
        self.output_info: Tuple[FeatureInfo, ...] = tuple(outputs)

    def _stage_member(self, name: str) -> Union[nn.Module, nn.Parameter]:
        """A name of ``FeatureInfo.modules``: a submodule, or a parameter held directly by one (a ViT's tokens)."""
        try:
            return self.get_submodule(name)
        except AttributeError:
            return self.get_parameter(name)

    def _probe_size(self) -> Pair:
        """An odd input size (not a multiple of the deepest stride on either axis) for checks on one input."""
        deepest = self.feature_info[-1].stride
        return max(2 * deepest[0] + 1, self.min_input_size), max(3 * deepest[1] + 1, self.min_input_size)

    def _verify_stages(self) -> None:
        """Each built stage's declared channels and ceil grid, checked on the meta device at an odd size."""
        height, width = self._probe_size()
        x = torch.empty(1, self.in_channels, height, width, device="meta")
        with eval_mode(self):  # BatchNorm in training refuses one 1x1 sample (squeeze-excitation layers)
            outputs = meta_call(self, "forward_stages", x)
        for info, output in zip(self.feature_info, outputs):
            wanted = (info.channels, *output_size(height, width, info.stride))
            if tuple(output.shape[1:]) != wanted:
                raise RuntimeError(
                    f"{type(self).__name__} declares stage {info.index} ({info.name}) as [N, {info.channels}, "
                    f"ceil(H/{info.stride[0]}), ceil(W/{info.stride[1]})] but computes {list(output.shape)} "
                    f"for a {height}x{width} input"
                )

    # -- the contract -------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Union[Tensor, List[Tensor]]:
        """``[N, in_channels, H, W]`` -> ``[N, out_channels, ceil(H/sh), ceil(W/sw)]`` (a list with out_indices).

        ``mask``: an optional padding mask of ``x`` (bool ``[N, H, W]``, True = padding, or float ``[N, 1, H, W]``,
        1 = valid); where ``attends_to_mask``, attention ignores the padded positions.
        """
        self._check_input(x)
        if mask is None:
            stages = self.forward_stages(x)
        else:
            stages = self.forward_stages_masked(x, contract.check_mask(mask, x))
        outputs: List[Tensor] = []
        for i, adapter in enumerate(self.adapters):
            outputs.append(adapter(self.dropout(stages[self.out_indices[i]])))
        if self._multi_output:
            return outputs
        return outputs[0]

    def _check_input(self, x: Tensor) -> None:
        if not torch.jit.is_scripting() and not isinstance(x, torch.Tensor):
            raise TypeError(
                f"input must be a torch.Tensor [N, {self.in_channels}, H, W], got {type(x).__name__}; convert "
                f"images with torchvision.transforms.functional.to_tensor or torch.as_tensor(...).float() / 255"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"input must be a floating tensor, got dtype {x.dtype}; for uint8 images use x.float() / 255"
            )
        if x.dtype != self.weights_dtype.dtype and not _autocast_enabled(x):
            raise TypeError(
                f"input dtype {x.dtype} differs from the weights' {self.weights_dtype.dtype}; convert the input "
                f"(x.to({self.weights_dtype.dtype})), the model (encoder.to({x.dtype})), or run under torch.autocast"
            )
        if x.dim() != 4:
            raise ValueError(f"input must be a 4-D tensor [N, {self.in_channels}, H, W], got shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input must have {self.in_channels} channels ([N, {self.in_channels}, H, W]), got shape "
                f"{list(x.shape)}; build the backbone with in_channels={x.shape[1]} for such input"
            )
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"input H and W must be >= min_input_size={self.min_input_size}, got shape {list(x.shape)}"
            )

    @property
    def multi_output(self) -> bool:
        return self._multi_output

    @property
    def out_channels(self) -> Union[int, Tuple[int, ...]]:
        """Channels of the output (a tuple, one per output, when ``out_indices`` is given)."""
        channels = tuple(info.channels for info in self.output_info)
        return channels if self._multi_output else channels[0]

    @property
    def output_stride(self) -> Union[Pair, Tuple[Pair, ...]]:
        """``(sh, sw)`` of the output (a tuple of them when ``out_indices`` is given)."""
        strides = tuple(info.stride for info in self.output_info)
        return strides if self._multi_output else strides[0]

    def output_size(self, height: int, width: int) -> Union[Pair, List[Pair]]:
        """``(ceil(H/sh), ceil(W/sw))`` without a forward pass (a list with ``out_indices``)."""
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < self.min_input_size:
                raise ValueError(f"{name} must be an int >= min_input_size={self.min_input_size}, got {value!r}")
        sizes = [output_size(height, width, info.stride) for info in self.output_info]
        return sizes if self._multi_output else sizes[0]

    def downsample_mask(self, mask: Tensor) -> Union[Tensor, List[Tensor]]:
        """Padding mask on the output grid, identical to ``mask[..., ::sh, ::sw]``.

        Args:
            mask: bool ``[N, H, W]`` (True = padding) or float ``[N, 1, H, W]`` (1 = valid).
        """
        masks = [contract.downsample_mask(mask, info.stride) for info in self.output_info]
        return masks if self._multi_output else masks[0]

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

    def fuse(self) -> Backbone:
        """Fold every BatchNorm that directly follows a conv into that conv (body and ``conv_bn`` adapters), in
        place, for inference; returns ``self``. The contract and the outputs stay (relative 1e-5).

        Pre-activation BatchNorms (BN -> ReLU -> conv) have no conv to fold into and stay. The count is in
        ``folded_batchnorms`` (and the log). A fused model's state dict is not the unfused layout: the folded
        convs gain a bias and the BatchNorm keys are gone; save the unfused model's weights for training.

        Raises:
            RuntimeError: the model is in training mode (call ``eval()`` first: folding uses the running
                statistics, which training would go on updating).
        """
        from .fusion import fold_batchnorms

        if self.training:
            raise RuntimeError(
                "fuse() folds BatchNorm running statistics into the convs, for inference only: call "
                "encoder.eval() first (a fused model cannot learn BatchNorm statistics)"
            )
        parameter = next(iter(self.parameters()))
        probe = torch.randn(2, self.in_channels, *self._probe_size(), dtype=parameter.dtype, device=parameter.device)
        folded, kept = fold_batchnorms(self, self.fusable_pairs, probe)
        self.folded_batchnorms: int = folded
        _logger.info("%s.fuse(): folded %d BatchNorms into convs, %d stay", type(self).__name__, folded, kept)
        return self

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, output_stride={self.output_stride}"
