"""``timm:<name>``: any timm model that supports ``features_only``, under the same contract.

Stages are timm's feature levels (``feature_info``): stage 0 is the first level (timm's ResNets report
their stem activation at /2, ConvNeXts their first stage at /4), the last level is the default output.
``output_stride`` is passed to timm, which reaches it by dilation, so it needs ``dilate=True``;
``strides=`` is not available. Models whose own size arithmetic rounds down (patchify stems, floor
pooling) get their input zero-padded on the bottom and right to a multiple of the deepest stride and each
level cropped to ``ceil(H / stride)`` rows and columns (the last ones are the partial, padded windows
that ceil rounding means); models that already round up run unpadded and give exactly timm's numbers.
Which of the two applies is probed once at build time on the meta device.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Backbone, BackboneConfig
from .checkpoints import LoadReport, WeightsMismatchError, load_weights
from .contract import FeatureInfo, ceil_div
from .weights import fetch, is_checkpoint_path, read_state_dict, resolve_weight_set

__all__ = ["TimmBackbone", "build_timm_backbone"]

_logger = logging.getLogger("backbones.weights")


def _check_unsupported(name: str, config: BackboneConfig) -> Optional[int]:
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

    Args:
        config: the common build options.
        model_name: a timm architecture name (``"convnext_atto"``, ``"resnet18d"``).
        pretrained_state: a timm-layout state dict handed to timm's own loader (it adapts the input
            conv and drops the classifier the timm way).
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate=0.1``, ...).
    """

    def __init__(
        self,
        config: BackboneConfig,
        model_name: str,
        *,
        pretrained_state: Optional[Dict[str, Tensor]] = None,
        **timm_kwargs: Any,
    ) -> None:
        import timm

        super().__init__(config)
        output_stride = _check_unsupported(model_name, config)
        kwargs: Dict[str, Any] = dict(features_only=True, in_chans=config.in_channels, **timm_kwargs)
        if output_stride is not None:
            kwargs["output_stride"] = output_stride
        if pretrained_state is not None:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(state_dict=pretrained_state))
        try:
            with torch.device("meta"):
                probe = timm.create_model(model_name, **{k: v for k, v in kwargs.items() if "pretrained" not in k})
        except RuntimeError as error:
            raise ValueError(f"timm:{model_name} cannot be built with features_only=True: {error}") from error
        except (TypeError, AssertionError) as error:
            options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "pretrained_cfg_overlay")
            detail = f"{type(error).__name__}: {error}"
            raise ValueError(f"timm:{model_name} does not accept {options} ({detail})") from error
        levels = len(probe.feature_info)
        num_stages = levels - 1
        last = config.last_stage(num_stages)
        kwargs["out_indices"] = tuple(range(last + 1))
        if pretrained_state is None:
            self.body = timm.create_model(model_name, **kwargs)
        else:
            try:
                self.body = timm.create_model(model_name, **kwargs)
            except RuntimeError as error:
                raise WeightsMismatchError(f"the weights do not fit timm:{model_name}: {error}") from error
        channels = self.body.feature_info.channels()
        reductions = self.body.feature_info.reduction()
        if output_stride is not None and reductions[-1] != output_stride and last == num_stages:
            raise ValueError(
                f"timm:{model_name} does not support output_stride={output_stride} (its deepest level stays "
                f"at /{reductions[-1]}); build it without output_stride"
            )
        groups = self._stage_modules(last)
        stages = [
            FeatureInfo(f"level{i}", i, channels[i], (reductions[i], reductions[i]), modules=groups[i])
            for i in range(last + 1)
        ]
        self.model_name = model_name
        self.align: int = 1
        self.finish(stages, num_stages=num_stages, output_dropout=config.drop_rate)
        self.align = self._probe_alignment(max(reductions))

    def _stage_modules(self, last: int) -> List[tuple]:
        """The body modules that compute each level (for ``frozen_stages`` and ``norm_eval``)."""
        names = list(self.body.return_layers) if hasattr(self.body, "return_layers") else []
        children = [name for name, _ in self.body.named_children()]
        if len(names) != last + 1 or any(n not in children for n in names):
            if self.config.frozen_stages >= 0:
                raise ValueError(f"frozen_stages is not available for timm:{self.body.__class__.__name__} bodies")
            return [()] * (last + 1)
        groups, start = [], 0
        for name in names:
            end = children.index(name) + 1
            groups.append(tuple(f"body.{child}" for child in children[start:end]))
            start = end
        return groups

    def _probe_alignment(self, deepest: int) -> int:
        """1 if timm's sizes already round up at every level, else ``deepest`` (pad to its multiples)."""
        from .testing import meta_clone

        meta = meta_clone(self.body)
        base = 4 * deepest
        sizes = [(base + 1, base + deepest - 1), (base + deepest // 2 + 1, base + deepest // 2), (base, base)]
        for align in (1, deepest):
            ok = True
            for height, width in sizes:
                x = torch.empty(1, self.in_channels, height, width, device="meta")
                outputs = self._crop(meta(self._pad(x, align)), height, width) if align > 1 else meta(x)
                for output, info in zip(outputs, self.feature_info):
                    wanted = (ceil_div(height, info.stride[0]), ceil_div(width, info.stride[1]))
                    ok = ok and tuple(output.shape[-2:]) == wanted
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
        for output, info in zip(outputs, self.feature_info):
            sh, sw = info.stride
            cropped.append(output[:, :, : (height + sh - 1) // sh, : (width + sw - 1) // sw])
        return cropped

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        if self.align == 1:
            return self.body(x)
        return self._crop(self.body(self._pad(x, self.align)), x.shape[2], x.shape[3])


def _timm_state(model_name: str, pretrained: Union[bool, str]) -> Optional[Dict[str, Tensor]]:
    if pretrained is False or pretrained is None:
        return None
    if is_checkpoint_path(pretrained):
        return read_state_dict(pretrained)  # type: ignore[arg-type]
    return read_state_dict(fetch(resolve_weight_set(f"timm:{model_name}", pretrained)))


def build_timm_backbone(
    model_name: str, config: BackboneConfig, pretrained: Union[bool, str] = False, **timm_kwargs: Any
) -> Backbone:
    """``timm:<model_name>`` under the contract; ``pretrained`` as in :func:`backbones.build_backbone`."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name[:6]}*")[:5]
        raise KeyError(f"unknown timm model {model_name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    state = _timm_state(model_name, pretrained)
    if state is not None and any(k.startswith(("body.", "adapters.")) for k in state):
        model = TimmBackbone(config, model_name, **timm_kwargs)  # a file saved from a TimmBackbone
        load_weights(model, state, source=str(pretrained))
        return model
    model = TimmBackbone(config, model_name, pretrained_state=state, **timm_kwargs)
    if state is not None:
        keys = list(model.state_dict())
        model.pretrained_report = LoadReport(  # type: ignore[assignment]
            source=f"{pretrained} (through timm's loader)",
            loaded=sum(not k.startswith("adapters.") for k in keys),
            initialised=[k for k in keys if k.startswith("adapters.")],
        )
        _logger.info("%s", model.pretrained_report)
    return model
