"""``TimmBackbone``: any timm model that supports ``features_only``, under the same contract.

Stages are timm's feature levels (``feature_info``): stage 0 is the first level (timm's ResNets report their stem
activation at /2, ConvNeXts their first stage at /4), the last level is the default output. ``output_stride`` and
``strides=`` work as for every family: the removed strides are taken out of the model by surgery (``_surgery``), or
turned into dilation with ``dilate=True`` (timm's ``output_stride`` where the model has one). Models whose own size
arithmetic rounds down (patchify stems, floor pooling) get their input zero-padded on the bottom and right to a
multiple of the deepest stride and each level cropped to ``ceil(H / stride)`` rows and columns (the last ones are
the partial, padded windows that ceil rounding means); models that already round up run unpadded and give exactly
timm's numbers. Which of the two applies is probed once per configuration; models made for one input size
(attention biases sized for timm's ``img_size``) are padded to it. A plain ViT exposes every block as a level, and a
padding mask passed to ``forward`` reaches its attention.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...core import (
    Backbone,
    BackboneConfig,
    BoundedCache,
    FeatureInfo,
    InputLimits,
    Pair,
    Stages,
    ceil_div,
    crop_to_ceil_grid,
    eval_mode,
    padding_on_grid,
    timm_classes,
)
from ._checkpoints import TimmNames, body_key, first_conv_of, timm_names, translate_timm_checkpoint
from ._grid import GridFit, fit_grid
from ._options import OptionsProbe, ProbeKey, check_timm_options, probe_key, probe_options
from ._surgery import dilate_traced_convs, remove_stride, rescale_upsamplers, trace_layers

__all__ = ["TimmBackbone"]


class _FitKey(NamedTuple):
    probe: ProbeKey
    last_level: int


_FITTED: BoundedCache[_FitKey, GridFit] = BoundedCache(128)


class TimmBackbone(Backbone):
    """A timm ``features_only`` model: ``[N, C_in, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``.

    ``output_stride`` (int or ``(sh, sw)``) and ``strides=`` remove the last levels' downsampling by stride surgery
    (see ``_surgery``). With ``dilate=True`` the removed strides become dilation: timm's own route where the
    model takes an ``output_stride`` (isotropic), the generic dilation of ``_surgery`` otherwise.

    ``fuse()`` folds timm's conv/bn pairs by their usual names (and ``ConvNormAct`` chains); what it folds is
    checked on a probe input, and a model whose names mislead is restored and refused.

    Args:
        config: the common build options.
        model_name: a timm architecture name (``"convnext_atto"``, ``"resnet18d"``).
        **timm_options: passed to ``timm.create_model`` (``drop_path_rate=0.1``, ``img_size=(32, 128)``, ...).
    """

    fusable_pairs = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
    verify_at_build = False  # the grid fit checks every level's channels and grid at several odd sizes

    def __init__(self, config: BackboneConfig, model_name: str, **timm_options: Any) -> None:
        check_timm_options(model_name, timm_options)
        self.model_name = model_name
        self.timm_options = dict(timm_options)
        super().__init__(config, family_options={"model_name": model_name, **timm_options})

    def build(self, config: BackboneConfig) -> Stages:
        import timm

        found = probe_options(self.model_name, self.in_channels, self.timm_options, config)
        self.plain_vit = found.plain_vit
        last = config.last_stage(len(found.native) - 1)  # timm builds its own levels: it is told the deepest
        self._create_options = dict(found.timm_options, out_indices=found.level_indices[: last + 1])
        body: Any = timm.create_model(self.model_name, **self._create_options)  # timm's features_only net
        self.body = body
        strides = [(r, r) for r in body.feature_info.reduction()]
        if found.timm_stride is None and (config.output_stride is not None or config.strides is not None):
            strides = self._remove_strides(config, list(found.native), last)
        self.level_strides: List[List[int]] = [[sh, sw] for sh, sw in strides[: last + 1]]
        getter = isinstance(self.body, timm_classes().FeatureGetterNet)
        self.attends_to_mask = (
            getter and "attn_mask" in inspect.signature(self._model().forward_intermediates).parameters
        )
        self.nhwc: bool = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")  # Swin's levels
        self._names: Optional[TimmNames] = None  # timm's full model and its key names, built at the first load
        key = probe_key(self.model_name, self.in_channels, self.timm_options, config)
        fit = _FITTED.get_or_compute(_FitKey(key, last), lambda: self._fit_grid(last))
        return Stages(len(found.native) - 1, self._levels_info(config, found, strides, last), self._limits(fit))

    def _model(self) -> Any:
        """timm's model inside a ``FeatureGetterNet`` (ViTs and other ``forward_intermediates`` models), or ``None``."""
        return getattr(self.body, "model", None)

    def _levels_info(
        self, config: BackboneConfig, found: OptionsProbe, strides: List[Pair], last: int
    ) -> List[FeatureInfo]:
        channels = self.body.feature_info.channels()
        groups = self._stage_modules(last, config.frozen_stages)
        infos = []
        for i in range(last + 1):
            native = found.native[i]
            dilation = (native // strides[i][0], native // strides[i][1]) if config.dilate else (1, 1)
            name = f"block{i}" if self.plain_vit else f"level{i}"
            infos.append(FeatureInfo(name, i, channels[i], strides[i], dilation, groups[i]))
        return infos

    def _fit_grid(self, last: int) -> GridFit:
        with eval_mode(self.body):  # BatchNorm in training refuses a 1x1 map
            wanted = self.body.feature_info.channels()[: last + 1]
            return fit_grid(self._probe, self.level_strides, wanted, self._made_for_size(), self.model_name)

    def _limits(self, fit: GridFit) -> InputLimits:
        if fit.max_input_size is None:
            return InputLimits(fit.min_input_size, None, (fit.align[0], fit.align[1]))
        height, width = fit.max_input_size
        reason = (
            f"timm:{self.model_name} works at one input size, {height}x{width} (smaller inputs are padded to it); "
            f"build it with img_size=(H, W) for larger inputs"
        )
        return InputLimits(fit.min_input_size, (height, width), (fit.align[0], fit.align[1]), reason)

    def _remove_strides(self, config: BackboneConfig, native: List[int], last: int) -> List[Pair]:
        """Plan the levels' strides like any family (the first level is the stem) and remove the dropped ones."""
        natives = [(b // a, b // a) for a, b in zip(native, native[1:])]
        plan = config.plan(native[0], natives)
        strides = [plan.stem_stride] + [stage.output_stride for stage in plan.stages]
        changes = [
            (i, (s.stride[0] != n[0], s.stride[1] != n[1]))
            for i, (s, n) in enumerate(zip(plan.stages[:last], natives), 1)
        ]
        changes = [(index, axes) for index, axes in changes if any(axes)]
        if not changes:
            return strides
        trace = self._trace(native[: last + 1])
        removed: Dict[int, Tuple[bool, bool]] = {}
        for index, axes in changes:
            if index not in trace.downsamplers:
                raise ValueError(
                    f"timm:{self.model_name} level {index}: no 2-D layer shrinks the map there (the model pools "
                    f"flattened tokens, as Hiera does), so its stride cannot be removed; build it with its native "
                    f"strides"
                )
            removed.update((id(module), axes) for _, module, _ in trace.downsamplers[index])
        if config.dilate:
            dilate_traced_convs(trace, native, strides, removed, self.model_name)
        for index, axes in changes:
            for name, _, _ in trace.downsamplers[index]:
                remove_stride(self.body, name, axes, self.model_name)
        rescale_upsamplers(trace, native, strides)
        return strides

    def _trace(self, level_strides: List[int]) -> Any:
        """The body's downsampling layers (``_surgery.trace_layers``), at the size the model was made for if it needs
        one; a ``ValueError`` naming the model where neither runs."""
        made_for = self._made_for_size()
        try:
            try:
                return trace_layers(self.body, self.in_channels, level_strides)
            except (RuntimeError, AssertionError):
                if made_for is None:
                    raise
                return trace_layers(self.body, self.in_channels, level_strides, (made_for[0], made_for[1]))
        except (RuntimeError, AssertionError) as error:
            raise ValueError(
                f"timm:{self.model_name} cannot be probed for its downsampling layers ({type(error).__name__}: "
                f"{str(error)[:200]}); build it with its native strides"
            ) from error

    def _stage_modules(self, last: int, frozen_stages: int) -> List[Tuple[str, ...]]:
        """The body modules that compute each level (for ``frozen_stages`` and ``norm_eval``). For models whose
        levels end at ``blocks.<i>`` (ViTs, XCiT, Hiera): the blocks since the level before, and for level 0 also
        what comes before the blocks (patch embedding, class token, position embedding)."""
        model = self._model()
        ends = [str(info.get("module", "")) for info in getattr(model, "feature_info", [])][: last + 1]
        if ends and all(re.fullmatch(r"blocks\.\d+", end) for end in ends) and hasattr(model, "blocks"):
            children = [name for name, _ in model.named_children()]
            before = children[: children.index("blocks")] + [name for name, _ in model.named_parameters(recurse=False)]
            levels: List[Tuple[str, ...]] = []
            start = 0
            for end in (int(end.split(".")[1]) for end in ends):
                blocks = tuple(f"body.model.blocks.{i}" for i in range(start, end + 1))
                prefix = tuple(f"body.model.{name}" for name in before) if not levels else ()
                levels.append(prefix + blocks)
                start = end + 1
            return levels
        names = list(getattr(self.body, "return_layers", []))
        children = [name for name, _ in self.body.named_children()]
        if len(names) != last + 1 or any(n not in children for n in names):
            if frozen_stages >= 0:
                raise ValueError(f"frozen_stages is not available for timm:{self.model_name}")
            return [()] * (last + 1)
        groups: List[Tuple[str, ...]] = []
        start = 0
        for name in names:
            end = children.index(name) + 1
            groups.append(tuple(f"body.{child}" for child in children[start:end]))
            start = end
        return groups

    def _made_for_size(self) -> Optional[List[int]]:
        """The input size the model was made for: ``img_size=`` if given, else timm's pretrained ``input_size``."""
        size = self._create_options.get("img_size")
        if size is None:
            input_size = (getattr(self.body, "pretrained_cfg", None) or {}).get("input_size")
            size = tuple(input_size[-2:]) if input_size else None
        if size is None:
            return None
        return [size, size] if isinstance(size, int) else [int(size[0]), int(size[1])]

    def _probe(self, height: int, width: int, align: List[int]) -> List[Tensor]:
        """The levels for one zero image (no grad): a real forward at these few-cell sizes (much cheaper than a
        meta-device one for attention models), on the meta device when the weights are there."""
        parameter = next(iter(self.body.parameters()))
        x = torch.zeros(1, self.in_channels, height, width, dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            return self._levels(self.body(self._pad(x, align)), height, width, align)

    @staticmethod
    def _pad(x: Tensor, align: List[int]) -> Tensor:
        if align[0] == 1 and align[1] == 1:
            return x
        pad_h = (align[0] - x.shape[2] % align[0]) % align[0]
        pad_w = (align[1] - x.shape[3] % align[1]) % align[1]
        return F.pad(x, (0, pad_w, 0, pad_h))

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        if x.shape[0] == 0:  # some models reshape by the batch size: run one image, keep none
            return [level[:0] for level in self.forward_stages(x.new_zeros(1, *x.shape[1:]))]
        align = list(self.input_limits.padded_to)
        return self._levels(self.body(self._pad(x, align)), x.shape[2], x.shape[3], align)

    def forward_stages_masked(self, x: Tensor, mask: Tensor) -> List[Tensor]:
        """The ViT forward with the patches whose first pixel is padding masked out of every attention (the
        prefix tokens stay visible; an image that is all padding attends to everything)."""
        if not self.attends_to_mask or x.shape[0] == 0:
            return self.forward_stages(x)
        align = list(self.input_limits.padded_to)
        model, patch, padded = self._model(), self.level_strides[-1], self._pad(x, align)
        padding = padding_on_grid(mask, patch)  # the aligned input's extra patches are padding too
        rows, columns = ceil_div(padded.shape[2], patch[0]), ceil_div(padded.shape[3], patch[1])
        padding = F.pad(padding, (0, columns - padding.shape[2], 0, rows - padding.shape[1]), value=True)
        keep = ~padding.flatten(1)
        keep = torch.cat([keep.new_ones(keep.shape[0], model.num_prefix_tokens), keep], dim=1)
        keep = keep | ~keep.any(dim=1, keepdim=True)
        outputs = model.forward_intermediates(
            padded,
            indices=self.body.out_indices,
            norm=self.body.norm,
            output_fmt=self.body.output_fmt,
            intermediates_only=True,
            attn_mask=keep[:, None, None, :],
        )
        return self._levels(outputs, x.shape[2], x.shape[3], align)

    def _levels(self, outputs: List[Tensor], height: int, width: int, align: List[int]) -> List[Tensor]:
        """timm's level outputs as ``[N, C, h, w]`` on the ceil grid (Swin's NHWC permuted, padding cropped)."""
        if self.nhwc:
            outputs = [output.permute(0, 3, 1, 2) for output in outputs]
        if align[0] == 1 and align[1] == 1:
            return outputs
        cropped: List[Tensor] = []
        for output, stride in zip(outputs, self.level_strides):
            cropped.append(crop_to_ceil_grid(output, height, width, stride))
        return cropped

    def input_conv(self) -> str:
        """timm's ``pretrained_cfg["first_conv"]`` as this body's module name, else the first conv."""
        return first_conv_of(self.body, self._timm_names()) or super().input_conv()

    def _timm_names(self) -> TimmNames:
        if self._names is None:
            self._names = timm_names(self.model_name, self._create_options, self.body)
        return self._names

    def translate_checkpoint(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """A timm checkpoint of the whole model goes through timm's own filter for this architecture."""
        return translate_timm_checkpoint(state, self._timm_names(), self.model_name)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """Our own ``body.`` keys, timm's ``features_only`` keys, timm's full-model keys (renamed; the head and unbuilt
        levels dropped); anything else unchanged, to be reported as unexpected."""
        return body_key(key, self._timm_names())

    def folded_norm_remainder(self, norm: nn.Module) -> nn.Module:
        """What is left of a folded BatchNorm: timm's ``BatchNormAct2d`` keeps its dropout and activation."""
        if isinstance(norm, timm_classes().BatchNormAct2d):
            return nn.Sequential(norm.get_submodule("drop"), norm.get_submodule("act"))
        return super().folded_norm_remainder(norm)
