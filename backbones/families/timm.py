"""``timm:<name>``: any timm model that supports ``features_only``, under the same contract.

This module registers the ``timm`` namespace: ``get_entry("timm:convnext_atto")`` resolves through it,
``list_backbones("timm:conv*")`` lists timm's names. Stages are timm's feature levels (``feature_info``):
stage 0 is the first level (timm's ResNets report their stem activation at /2, ConvNeXts their first
stage at /4), the last level is the default output. ``output_stride`` is passed to timm, which reaches it
by dilation, so it needs ``dilate=True``; ``strides=`` is not available. Models whose own size arithmetic
rounds down (patchify stems, floor pooling) get their input zero-padded on the bottom and right to a
multiple of the deepest stride and each level cropped to ``ceil(H / stride)`` rows and columns (the last
ones are the partial, padded windows that ceil rounding means); models that already round up run
unpadded and give exactly timm's numbers. Which of the two applies is probed once at build time on the
meta device.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Backbone, Stages
from ..config import BackboneConfig
from ..contract import FeatureInfo, ceil_div
from ..loading import LoadReport, WeightsMismatchError, load_weights
from ..meta import meta_call
from ..registry import BackboneEntry, UnknownBackboneError, register_namespace
from ..sources import TimmWeights

__all__ = ["TimmBackbone"]


def _timm_output_stride(name: str, config: BackboneConfig) -> Optional[int]:
    if config.strides is not None:
        raise ValueError(
            f"strides={config.strides!r} is not available for timm:{name} (timm models take only an "
            f"output_stride); use output_stride=..., dilate=True"
        )
    if config.output_stride is None:
        return None
    stride = config.output_stride
    if isinstance(stride, (tuple, list)):
        if len(stride) != 2 or stride[0] != stride[1]:
            raise ValueError(f"output_stride for timm:{name} must be one int (timm is isotropic), got {stride!r}")
        stride = stride[0]
    if not config.dilate:
        raise ValueError(
            f"output_stride={stride} for timm:{name}: timm reaches it by dilating the later stages; "
            f"pass dilate=True as well (or use a registered backbone, which can also drop strides)"
        )
    return int(stride)


class TimmBackbone(Backbone):
    """A timm ``features_only`` model: ``[N, C_in, H, W] -> [N, C, ceil(H/s), ceil(W/s)]``.

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
        output_stride = _timm_output_stride(model_name, config)
        kwargs: Dict[str, Any] = dict(features_only=True, in_chans=self.in_channels, **timm_kwargs)
        probe = self._create_on_meta(kwargs)
        native = probe.feature_info.reduction()
        if output_stride is not None:
            kwargs["output_stride"] = output_stride
            probe = self._create_on_meta(kwargs)
        num_stages = len(probe.feature_info) - 1
        last = config.last_stage(num_stages)
        kwargs["out_indices"] = tuple(range(last + 1))
        self._timm_kwargs = kwargs
        self.body = timm.create_model(model_name, **kwargs)
        channels = self.body.feature_info.channels()
        reductions = self.body.feature_info.reduction()
        if output_stride is not None and reductions[-1] != output_stride and last == num_stages:
            raise ValueError(
                f"timm:{model_name} does not support output_stride={output_stride} (its deepest level stays "
                f"at /{reductions[-1]}); build it without output_stride"
            )
        groups = self._stage_modules(last, config.frozen_stages)
        stages = []
        for i in range(last + 1):
            dilation = max(native[i] // reductions[i], 1)
            stride, dilations = (reductions[i], reductions[i]), (dilation, dilation)
            stages.append(FeatureInfo(f"level{i}", i, channels[i], stride, dilations, groups[i]))
        self.level_strides: List[int] = [info.stride[0] for info in stages]
        self.align: int = self._probe_alignment(max(reductions))
        return Stages(stages, num_stages)

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
        """The body modules that compute each level (for ``frozen_stages`` and ``norm_eval``)."""
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

    def _probe_alignment(self, deepest: int) -> int:
        """1 if timm's sizes already round up at every level, else ``deepest`` (pad to its multiples)."""
        base = 4 * deepest
        sizes = [(base + 1, base + deepest - 1), (base + deepest // 2 + 1, base + deepest // 2), (base, base)]
        for align in (1, deepest):
            ok = True
            for height, width in sizes:
                x = torch.empty(1, self.in_channels, height, width, device="meta")
                outputs = meta_call(self.body, "forward", self._pad(x, align))
                outputs = self._crop(outputs, height, width) if align > 1 else outputs
                for output, stride in zip(outputs, self.level_strides):
                    ok = ok and tuple(output.shape[-2:]) == (ceil_div(height, stride), ceil_div(width, stride))
            if ok:
                return align
        raise ValueError(f"timm:{self.model_name} does not give ceil(H/stride) outputs even on padded input")

    @staticmethod
    def _pad(x: Tensor, align: int) -> Tensor:
        if align == 1:
            return x
        pad_h = (align - x.shape[2] % align) % align
        pad_w = (align - x.shape[3] % align) % align
        return F.pad(x, (0, pad_w, 0, pad_h))

    def _crop(self, outputs: List[Tensor], height: int, width: int) -> List[Tensor]:
        cropped: List[Tensor] = []
        for output, stride in zip(outputs, self.level_strides):
            cropped.append(output[:, :, : (height + stride - 1) // stride, : (width + stride - 1) // stride])
        return cropped

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        if self.align == 1:
            return self.body(x)
        return self._crop(self.body(self._pad(x, self.align)), x.shape[2], x.shape[3])

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
