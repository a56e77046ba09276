"""``timm:<name>``: any timm model that supports ``features_only``, under the same contract.

This module registers the ``timm`` namespace: ``get_entry("timm:convnext_atto")`` resolves through it,
``list_backbones("timm:conv*")`` lists timm's names. Stages are timm's feature levels (``feature_info``):
stage 0 is the first level (timm's ResNets report their stem activation at /2, ConvNeXts their first
stage at /4), the last level is the default output. ``output_stride`` and ``strides=`` work as for every family:
the removed strides are taken out of the model by surgery (``timm_surgery``), or turned into dilation with
``dilate=True`` (timm's ``output_stride`` where the model has one). Models whose own size arithmetic
rounds down (patchify stems, floor pooling) get their input zero-padded on the bottom and right to a
multiple of the deepest stride and each level cropped to ``ceil(H / stride)`` rows and columns (the last
ones are the partial, padded windows that ceil rounding means); models that already round up run
unpadded and give exactly timm's numbers. Which of the two applies is probed once at build time on the
meta device; models made for one input size (attention biases sized for timm's ``img_size``) are padded to it.
A plain ViT exposes every block as a level, and a padding mask passed to ``forward`` reaches its attention.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Backbone, Stages
from ..config import BackboneConfig
from ..contract import FeatureInfo, Pair, ceil_div, crop_to_ceil_grid, padding_on_grid
from ..loading import LoadReport, WeightsMismatchError, load_weights
from ..meta import eval_mode, meta_call
from ..registry import BackboneEntry, UnknownBackboneError, register_namespace
from ..sources import TimmWeights
from .timm_grid import fit_grid
from .timm_surgery import dilate_convs, remove_stride, rescale_upsamplers, trace_layers

__all__ = ["TimmBackbone"]


def _timm_output_stride(config: BackboneConfig) -> Optional[int]:
    """The isotropic ``output_stride`` that timm's own dilation route can take, or ``None``."""
    stride = config.output_stride
    if not config.dilate or stride is None or config.strides is not None:
        return None
    if isinstance(stride, (tuple, list)):
        return int(stride[0]) if len(stride) == 2 and stride[0] == stride[1] else None
    return int(stride)


class TimmBackbone(Backbone):
    """A timm ``features_only`` model: ``[N, C_in, H, W] -> [N, C, ceil(H/sh), ceil(W/sw)]``.

    ``output_stride`` (int or ``(sh, sw)``) and ``strides=`` remove the last levels' downsampling by stride surgery
    (see ``timm_surgery``). With ``dilate=True`` the removed strides become dilation: timm's own route where the
    model takes an ``output_stride`` (isotropic), the generic dilation of ``timm_surgery`` otherwise.

    ``fuse()`` folds timm's conv/bn pairs by their usual names (and ``ConvNormAct`` chains); what it folds is
    checked on a probe input, and a model whose names mislead is restored and refused.

    Args:
        config: the common build options.
        model_name: a timm architecture name (``"convnext_atto"``, ``"resnet18d"``).
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate=0.1``, ...).
    """

    fusable_pairs = (("conv", "bn"), ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, config: BackboneConfig, model_name: str, **timm_kwargs: Any) -> None:
        super().__init__(config, model_name=model_name, **timm_kwargs)

    def build(self, config: BackboneConfig, *, model_name: str, **timm_kwargs: Any) -> Stages:
        import timm

        self.model_name = model_name
        timm_stride = _timm_output_stride(config)
        kwargs: Dict[str, Any] = dict(features_only=True, in_chans=self.in_channels, **timm_kwargs)
        probe = self._create_on_meta(kwargs)
        getter = type(probe).__name__ == "FeatureGetterNet"  # forward_intermediates models: every level exposed
        if getter and "out_indices" not in kwargs:
            kwargs["out_indices"] = tuple(range(len(probe.model.feature_info)))
            probe = self._create_on_meta(kwargs)
        if getter and "dynamic_img_size" not in kwargs:
            probe, kwargs = self._with_options(probe, kwargs, dynamic_img_size=True, dynamic_img_pad=True)
        elif getattr(getattr(probe, "patch_embed", None), "strict_img_size", False) and "strict_img_size" not in kwargs:
            probe, kwargs = self._with_options(probe, kwargs, strict_img_size=False)  # Swin: sizes other than 224
        native = probe.feature_info.reduction()
        self.plain_vit: bool = getter and len(set(native)) == 1  # one stride: the patch; every block is a level
        if self.plain_vit and (config.output_stride or config.strides) is not None:
            if config.output_stride != native[-1] or config.strides is not None:
                raise ValueError(
                    f"timm:{model_name} works at one stride, its patch ({native[-1]}): every block is at it (a vision "
                    f"transformer, or a patch model like ConvMixer), so output_stride and strides cannot change it; "
                    f"got output_stride={config.output_stride!r}, strides={config.strides!r}"
                )
        if timm_stride is not None:
            dilated, extended = self._with_options(probe, kwargs, output_stride=timm_stride)
            if extended is not kwargs and dilated.feature_info.reduction()[-1] == timm_stride:
                probe, kwargs = dilated, extended
            else:
                timm_stride = None  # timm has no route for this model (or does not reach the stride): the generic one
        num_stages = len(probe.feature_info.reduction()) - 1
        last = config.last_stage(num_stages)
        kwargs["out_indices"] = tuple(probe.feature_info.out_indices[: last + 1])
        self._timm_kwargs = kwargs
        self.body = timm.create_model(model_name, **kwargs)
        channels = self.body.feature_info.channels()
        reductions = self.body.feature_info.reduction()
        strides = [(r, r) for r in reductions]
        if timm_stride is None and (config.output_stride is not None or config.strides is not None):
            strides = self._remove_strides(config, native, last)
        groups = self._stage_modules(last, config.frozen_stages)
        stages = []
        for i in range(last + 1):
            dilation = (native[i] // strides[i][0], native[i] // strides[i][1]) if config.dilate else (1, 1)
            name = f"block{i}" if self.plain_vit else f"level{i}"
            stages.append(FeatureInfo(name, i, channels[i], strides[i], dilation, groups[i]))
        model = getattr(self.body, "model", None)
        self.attends_to_mask = getter and "attn_mask" in inspect.signature(model.forward_intermediates).parameters
        self.level_strides: List[List[int]] = [[sh, sw] for sh, sw in strides[: last + 1]]
        self.nhwc: bool = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")  # Swin's levels
        with eval_mode(self.body):  # BatchNorm in training refuses a 1x1 map
            fit = fit_grid(self._run_on_meta, self.level_strides, self._made_for_size(), model_name)
        self.align: List[int] = fit.align
        self.min_input_size = fit.min_input_size
        self.max_input_size: Optional[List[int]] = fit.max_input_size
        return Stages(stages, num_stages)

    def _remove_strides(self, config: BackboneConfig, native: List[int], last: int) -> List[Pair]:
        """Plan the levels' strides like any family (the first level is the stem) and remove the dropped ones."""
        natives = [(b // a, b // a) for a, b in zip(native, native[1:])]
        plan = config.plan(native[0], natives)
        changes = [
            (i, (s.stride[0] != n[0], s.stride[1] != n[1]))
            for i, (s, n) in enumerate(zip(plan.stages[:last], natives), 1)
        ]
        changes = [(index, axes) for index, axes in changes if any(axes)]
        if not changes:
            return [plan.stem_stride] + [stage.output_stride for stage in plan.stages]
        made_for = self._made_for_size()
        try:
            try:
                trace = trace_layers(self.body, self.in_channels, native[: last + 1])
            except (RuntimeError, AssertionError):
                if made_for is None:
                    raise
                trace = trace_layers(self.body, self.in_channels, native[: last + 1], (made_for[0], made_for[1]))
        except (RuntimeError, AssertionError) as error:
            raise ValueError(
                f"timm:{self.model_name} cannot be probed for its downsampling layers ({type(error).__name__}: "
                f"{str(error)[:200]}); build it with its native strides"
            ) from error
        removed: Dict[int, Tuple[bool, bool]] = {}
        for index, axes in changes:
            if index not in trace.downsamplers:
                raise ValueError(
                    f"timm:{self.model_name} level {index}: no 2-D layer shrinks the map there (the model pools "
                    f"flattened tokens, as Hiera does), so its stride cannot be removed; build it with its native "
                    f"strides"
                )
            removed.update((id(module), axes) for _, module, _ in trace.downsamplers[index])
        strides = [plan.stem_stride] + [stage.output_stride for stage in plan.stages]
        if config.dilate:
            dilate_convs(trace, native, strides, removed, self.model_name)
        for index, axes in changes:
            for name, module, _ in trace.downsamplers[index]:
                remove_stride(name, module, axes, self.model_name)
        rescale_upsamplers(trace, native, strides)
        return strides

    def _with_options(self, probe: Any, kwargs: Dict[str, Any], **options: Any) -> Tuple[Any, Dict[str, Any]]:
        """The probe rebuilt with ``options`` (timm's size options, ``output_stride``), or as it was if the model
        refuses them."""
        extended = dict(kwargs, **options)
        try:
            return self._create_on_meta(extended), extended
        except ValueError:
            return probe, kwargs

    def _create_on_meta(self, kwargs: Dict[str, Any]) -> Any:
        import timm

        try:
            with torch.device("meta"):
                return timm.create_model(self.model_name, **kwargs)
        except RuntimeError as error:
            raise ValueError(f"timm:{self.model_name} cannot be built with features_only=True: {error}") from error
        except (TypeError, AssertionError) as error:
            options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            detail = f"{type(error).__name__}: {error}"
            raise ValueError(f"timm:{self.model_name} does not accept {options} ({detail})") from error

    def _stage_modules(self, last: int, frozen_stages: int) -> List[Tuple[str, ...]]:
        """The body modules that compute each level (for ``frozen_stages`` and ``norm_eval``). For models whose
        levels end at ``blocks.<i>`` (ViTs, XCiT, Hiera): the blocks since the level before, and for level 0 also
        what comes before the blocks (patch embedding, class token, position embedding)."""
        model = getattr(self.body, "model", None)
        ends = [str(info.get("module", "")) for info in getattr(model, "feature_info", [])][: last + 1]
        if ends and all(re.fullmatch(r"blocks\.\d+", end) for end in ends) and hasattr(model, "blocks"):
            children = [name for name, _ in model.named_children()]
            before = children[: children.index("blocks")] + [name for name, _ in model.named_parameters(recurse=False)]
            groups, start = [], 0
            for end in (int(end.split(".")[1]) for end in ends):
                blocks = tuple(f"body.model.blocks.{i}" for i in range(start, end + 1))
                prefix = tuple(f"body.model.{name}" for name in before) if not groups else ()
                groups.append(prefix + blocks)
                start = end + 1
            return groups
        names = list(self.body.return_layers) if hasattr(self.body, "return_layers") else []
        children = [name for name, _ in self.body.named_children()]
        if len(names) != last + 1 or any(n not in children for n in names):
            if frozen_stages >= 0:
                raise ValueError(f"frozen_stages is not available for timm:{self.model_name}")
            return [()] * (last + 1)
        groups, start = [], 0
        for name in names:
            end = children.index(name) + 1
            groups.append(tuple(f"body.{child}" for child in children[start:end]))
            start = end
        return groups

    def _made_for_size(self) -> Optional[List[int]]:
        """The input size the model was made for: ``img_size=`` if given, else timm's pretrained ``input_size``."""
        size = self._timm_kwargs.get("img_size")
        if size is None:
            input_size = (getattr(self.body, "pretrained_cfg", None) or {}).get("input_size")
            size = tuple(input_size[-2:]) if input_size else None
        if size is None:
            return None
        return [size, size] if isinstance(size, int) else [int(size[0]), int(size[1])]

    def _probe_size(self) -> Pair:
        height, width = super()._probe_size()
        if self.max_input_size is None:
            return height, width
        return min(height, self.max_input_size[0] - 1), min(width, self.max_input_size[1] - 1)

    def _check_size(self, x: Tensor) -> None:
        if self.max_input_size is not None and (
            x.shape[2] > self.max_input_size[0] or x.shape[3] > self.max_input_size[1]
        ):
            height, width = self.max_input_size
            raise ValueError(
                f"timm:{self.model_name} works at one input size, {height}x{width} (smaller inputs are padded to it): "
                f"input H must be <= {height} and W <= {width}, got shape {list(x.shape)}; build it with "
                f"img_size=(H, W) for larger inputs"
            )

    def _run_on_meta(self, height: int, width: int, align: List[int]) -> List[Tensor]:
        x = torch.empty(1, self.in_channels, height, width, device="meta")
        return self._levels(meta_call(self.body, "forward", self._pad(x, align)), height, width, align)

    @staticmethod
    def _pad(x: Tensor, align: List[int]) -> Tensor:
        if align[0] == 1 and align[1] == 1:
            return x
        pad_h = (align[0] - x.shape[2] % align[0]) % align[0]
        pad_w = (align[1] - x.shape[3] % align[1]) % align[1]
        return F.pad(x, (0, pad_w, 0, pad_h))

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        self._check_size(x)
        return self._levels(self.body(self._pad(x, self.align)), x.shape[2], x.shape[3], self.align)

    def forward_stages_masked(self, x: Tensor, mask: Tensor) -> List[Tensor]:
        """The ViT forward with the patches whose first pixel is padding masked out of every attention (the
        prefix tokens stay visible; an image that is all padding attends to everything)."""
        if not self.attends_to_mask:
            return self.forward_stages(x)
        self._check_size(x)
        model, patch, padded = self.body.model, self.level_strides[-1], self._pad(x, self.align)
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
        return self._levels(outputs, x.shape[2], x.shape[3], self.align)

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

    def load_pretrained(
        self, state: Mapping[str, Tensor], source: str, reference_keys: Optional[List[str]] = None
    ) -> LoadReport:
        """A file saved from a TimmBackbone loads as it is; a timm checkpoint goes through timm's own loader
        (it adapts the input conv and drops the classifier the timm way) into a twin body first."""
        if any(k.startswith(("body.", "adapters.")) for k in state):
            return super().load_pretrained(state, source, reference_keys)
        import timm

        overlay = dict(state_dict=dict(state))
        try:
            twin = timm.create_model(
                self.model_name, pretrained=True, pretrained_cfg_overlay=overlay, **self._timm_kwargs
            )
        except RuntimeError as error:
            raise WeightsMismatchError(f"the weights do not fit timm:{self.model_name}: {error}") from error
        tensors = {f"body.{key}": value for key, value in twin.state_dict().items()}
        return load_weights(self, tensors, source=f"{source} (through timm's loader)")


def _resolve(model_name: str) -> BackboneEntry:
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name[:6]}*")[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown timm model {model_name!r}{hint} (`backbones list 'timm:*'` lists them)")
    builder = functools.partial(TimmBackbone, model_name=model_name)
    description = f"timm's {model_name} (features_only)"
    return BackboneEntry(f"timm:{model_name}", builder, "timm", None, description, (TimmWeights(model_name),))


def _list_names(pattern: Optional[str]) -> List[str]:
    import timm

    return timm.list_models(pattern or "*")


register_namespace("timm", _resolve, _list_names)
