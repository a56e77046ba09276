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

import difflib
import functools
import inspect
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Backbone, Stages
from ..config import BackboneConfig
from ..contract import FeatureInfo, InputLimits, Pair, ceil_div, crop_to_ceil_grid, padding_on_grid
from ..meta import eval_mode
from ..registry import BackboneEntry, UnknownBackboneError, register_namespace
from ..sources import TimmWeights
from .timm_checkpoints import TimmNames, body_key, first_conv_of, timm_names, translate_timm_checkpoint
from .timm_grid import fit_grid
from .timm_surgery import dilate_traced_convs, remove_stride, rescale_upsamplers, trace_layers

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
        _check_timm_options(model_name, timm_kwargs)
        key = repr((model_name, self.in_channels, sorted(timm_kwargs.items()), config.output_stride, config.strides,
                    config.dilate))  # fmt: skip
        if key not in _PROBED:
            _PROBED[key] = self._probe_options(config, dict(timm_kwargs))
        probe_info, kwargs, timm_stride, native, self.plain_vit = _PROBED[key]
        kwargs = dict(kwargs)
        num_stages = len(native) - 1
        last = config.last_stage(num_stages)
        kwargs["out_indices"] = tuple(probe_info[: last + 1])
        self._timm_kwargs = kwargs
        self.body = timm.create_model(model_name, **kwargs)
        channels = self.body.feature_info.channels()
        strides = [(r, r) for r in self.body.feature_info.reduction()]
        if timm_stride is None and (config.output_stride is not None or config.strides is not None):
            strides = self._remove_strides(config, native, last)
        groups = self._stage_modules(last, config.frozen_stages)
        stages = []
        for i in range(last + 1):
            dilation = (native[i] // strides[i][0], native[i] // strides[i][1]) if config.dilate else (1, 1)
            name = f"block{i}" if self.plain_vit else f"level{i}"
            stages.append(FeatureInfo(name, i, channels[i], strides[i], dilation, groups[i]))
        getter = type(self.body).__name__ == "FeatureGetterNet"
        model = getattr(self.body, "model", None)
        self.attends_to_mask = getter and "attn_mask" in inspect.signature(model.forward_intermediates).parameters
        self.level_strides: List[List[int]] = [[sh, sw] for sh, sw in strides[: last + 1]]
        self.nhwc: bool = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")  # Swin's levels
        self._names: Optional[TimmNames] = None  # timm's full model and its key names, built at the first load
        if (key, last) not in _FITTED:
            with eval_mode(self.body):  # BatchNorm in training refuses a 1x1 map
                made_for, wanted = self._made_for_size(), channels[: last + 1]
                _FITTED[key, last] = fit_grid(self._probe, self.level_strides, wanted, made_for, model_name)
        fit = _FITTED[key, last]
        reason = ""
        if fit.max_input_size is not None:
            reason = (
                f"timm:{model_name} works at one input size, {fit.max_input_size[0]}x{fit.max_input_size[1]} (smaller "
                f"inputs are padded to it); build it with img_size=(H, W) for larger inputs"
            )
        maximum = tuple(fit.max_input_size) if fit.max_input_size is not None else None
        limits = InputLimits(fit.min_input_size, maximum, (fit.align[0], fit.align[1]), reason)  # type: ignore[arg-type]
        return Stages(stages, num_stages, limits)

    def _probe_options(
        self, config: BackboneConfig, kwargs: Dict[str, Any]
    ) -> Tuple[Tuple[int, ...], Dict[str, Any], Optional[int], List[int], bool]:
        """What a meta-device model says this build needs: timm's level indices, the options (every level of
        ``forward_intermediates`` models, any input size for ViTs and Swin, timm's own ``output_stride`` where it
        reaches the stride), that stride (``None``: not timm's route), the levels' native strides, and whether every
        level is at one stride (a plain ViT). The same for every identical build: cached per process."""
        model_name = self.model_name
        kwargs.update(features_only=True, in_chans=self.in_channels)
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
        plain_vit = getter and len(set(native)) == 1  # one stride: the patch; every block is a level
        if plain_vit and (config.output_stride or config.strides) is not None:
            if config.output_stride != native[-1] or config.strides is not None:
                raise ValueError(
                    f"timm:{model_name} works at one stride, its patch ({native[-1]}): every block is at it (a vision "
                    f"transformer, or a patch model like ConvMixer), so output_stride and strides cannot change it; "
                    f"got output_stride={config.output_stride!r}, strides={config.strides!r}"
                )
        timm_stride = _timm_output_stride(config)
        if timm_stride is not None:
            dilated, extended = self._with_options(probe, kwargs, output_stride=timm_stride)
            if extended is not kwargs and dilated.feature_info.reduction()[-1] == timm_stride:
                return tuple(dilated.feature_info.out_indices), extended, timm_stride, native, plain_vit
        # timm has no route for this model (or does not reach the stride): the generic one
        return tuple(probe.feature_info.out_indices), kwargs, None, native, plain_vit

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
            dilate_traced_convs(trace, native, strides, removed, self.model_name)
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

    def _probe(self, height: int, width: int, align: List[int]) -> List[Tensor]:
        """The levels for one zero image (no grad): a real forward at these few-cell sizes (much cheaper than a
        meta-device one for attention models), on the meta device when the weights are there."""
        parameter = next(iter(self.body.parameters()))
        x = torch.zeros(1, self.in_channels, height, width, dtype=parameter.dtype, device=parameter.device)
        with torch.no_grad():
            return self._levels(self.body(self._pad(x, align)), height, width, align)

    def _verify_stages(self) -> None:
        """Done by the build's grid fit, which checks every level's channels and grid at several odd sizes."""

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
        model, patch, padded = self.body.model, self.level_strides[-1], self._pad(x, align)
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

    @property
    def first_conv(self) -> str:  # type: ignore[override]
        """timm's ``pretrained_cfg["first_conv"]`` as this body's module name (``""``: the first conv)."""
        return first_conv_of(self.body, self._timm_names())

    def _timm_names(self) -> TimmNames:
        if self._names is None:
            self._names = timm_names(self.model_name, self._timm_kwargs, self.body)
        return self._names

    def translate_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """A timm checkpoint of the whole model goes through timm's own filter for this architecture."""
        return translate_timm_checkpoint(state, self._timm_names(), self.model_name)

    def checkpoint_key(self, key: str) -> Optional[str]:
        """Our own ``body.`` keys, timm's ``features_only`` keys, timm's full-model keys (renamed; the head and unbuilt
        levels dropped); anything else unchanged, to be reported as unexpected."""
        return body_key(key, self._timm_names())


_PROBED: Dict[str, Tuple[Tuple[int, ...], Dict[str, Any], Optional[int], List[int], bool]] = {}
_FITTED: Dict[Tuple[str, int], Any] = {}  # (probe key, last level) -> GridFit


_OWN_OPTIONS = {
    "in_chans": "use in_channels=, the common option",
    "features_only": "features are always on: every timm: model is its features_only body",
    "out_indices": "use out_indices=, the common option",
    "pretrained": "use pretrained=, the common option",
    "checkpoint_path": "use pretrained='path/to/file' (timm's checkpoint_path loads without checking the keys)",
    "pretrained_cfg_overlay": "use pretrained= for weights (an overlay's file or state_dict loads unchecked)",
}


def _check_timm_options(model_name: str, options: Dict[str, Any]) -> None:
    """Options timm would misread: ours under timm's name, unchecked loading, and ``None`` (timm drops it)."""
    for key, value in options.items():
        if key in _OWN_OPTIONS:
            raise TypeError(f"timm:{model_name} got {key}={value!r}: {_OWN_OPTIONS[key]}")
        if value is None:
            raise ValueError(
                f"timm:{model_name} got {key}=None: timm drops options set to None, so it would have no effect "
                f"(a misspelt option would pass unnoticed); leave it out or give it a value"
            )


def _suggestions(model_name: str) -> List[str]:
    """timm names close to ``model_name``: the same letters and digits ignoring case and ``_``/``-``, then names
    it starts, then spelling neighbours."""
    import timm

    names = timm.list_models()
    folded = {}
    for name in names:
        folded.setdefault(re.sub(r"[^a-z0-9]", "", name.lower()), name)
    key = re.sub(r"[^a-z0-9]", "", model_name.lower())
    exact = [folded[key]] if key in folded else []
    prefixed = [name for form, name in folded.items() if form.startswith(key) and key][:5]
    close = [folded[form] for form in difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)]
    return list(dict.fromkeys(exact + prefixed + close))[:5]


def _resolve(model_name: str) -> BackboneEntry:
    import timm

    if not timm.is_model(model_name):
        close = _suggestions(model_name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown timm model {model_name!r}{hint} (`backbones list 'timm:*'` lists them)")
    architecture, _, tag = model_name.partition(".")  # "resnet18.a1_in1k": timm's weight tag in the name
    builder = functools.partial(TimmBackbone, model_name=model_name)
    description = f"timm's {model_name} (features_only)"
    weights = (TimmWeights(architecture, default=tag or None),)
    return BackboneEntry(f"timm:{model_name}", builder, "timm", None, description, weights)


def _list_names(pattern: Optional[str]) -> List[str]:
    import timm

    return timm.list_models(pattern or "*")


register_namespace("timm", _resolve, _list_names)
