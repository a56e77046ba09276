"""Hugging Face transformers: any ``build_backbone`` spec as an ``AutoBackbone``, for the models that take a
``backbone_config`` (UperNet, DETR, the PP-OCRv5 recognisers, ...). Needs ``pip install -e ".[hf]"``.

    >>> from transformers import UperNetConfig, UperNetForSemanticSegmentation    # doctest: +SKIP
    >>> from backbones.adapters.hf import backbone_config                          # doctest: +SKIP
    >>> cfg = backbone_config("resnet50", out_indices=(1, 2, 3, 4), output_stride=16, in_channels=1)  # doctest: +SKIP
    >>> model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=cfg, num_labels=19))  # doctest: +SKIP

Importing this module registers :class:`BackbonesConfig` (``model_type = "backbones"``) with ``AutoConfig`` and
:class:`BackbonesBackbone` with ``AutoBackbone``; ``AutoBackbone.from_config(cfg)`` builds
``build_backbone(spec, out_indices=..., **build_options)``. Hugging Face's stage names are ``stem``, ``stage1``,
``stage2``, ...: stage ``i`` of the library (0 = stem), so ``out_indices`` mean the same on both sides. The model's
``feature_maps`` are the pyramid's outputs; ``hidden_states`` (where asked) every built stage's map.
"""

from __future__ import annotations

import re
import sys
from types import FrameType
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    from transformers import AutoBackbone, AutoConfig, PreTrainedConfig, PreTrainedModel
    from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
    from transformers.modeling_outputs import BackboneOutput
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        f"backbones.adapters.hf needs Hugging Face transformers 5: pip install 'backbone-swap[hf]' ({error})"
    ) from None

from torch import Tensor

from backbones import FeaturePyramid, build_backbone, build_on_meta, get_entry
from backbones.registry import parse_spec

__all__ = ["BackbonesBackbone", "BackbonesConfig", "backbone_config"]

_NOT_OPTIONS = ("out_indices", "out_features")
LINE_HEIGHT = 48
"""The line height of the PP-OCR recognisers' inputs."""
_FEATURE_MAP_CONSUMERS = "UperNet, DETR, RT-DETR, Mask2Former, the PP-OCR recognisers and detectors"


def _consumer_module() -> str:
    """The module of the transformers model whose code is running: the nearest caller under ``transformers.models``
    (``AutoBackbone``'s own module skipped), or ``""``."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("transformers.models.") and not module.startswith("transformers.models.auto."):
            return module
        frame = frame.f_back
    return ""


def _consumer() -> str:
    """The consumer as the errors name it: ``dpt (transformers.models.dpt.modeling_dpt)``."""
    module = _consumer_module()
    return f"{module.split('.')[2]} ({module})" if module else "a transformers model"


def _check_line_recogniser(spec: str, stride: Tuple[int, int]) -> None:
    """The PP-OCR recognisers pool ``feature_maps[-1]`` by (3, 2) and squeeze its height: their 48-pixel lines
    need 3 to 5 rows (a height stride of 16)."""
    module = _consumer_module()
    rows = -(-LINE_HEIGHT // stride[0])
    if re.search(r"\.pp_ocrv\d+_\w+_rec\.", module) and not 3 <= rows <= 5:
        raise ValueError(
            f"{_consumer()} pools feature_maps[-1] by (3, 2) and squeezes its height, so its {LINE_HEIGHT}-pixel "
            f"lines need a last map of 3 to 5 rows (height stride 16); {spec!r} gives height stride {stride[0]} "
            f"({rows} rows): use output_stride=(16, 4) with a family whose height stride reaches 16 (ResNets, "
            f"DenseNets, pplcnetv3_rec, pphgnetv2_b4_rec, timm CNNs; strides are removed, never added)"
        )


def _vit_only(attribute: str) -> property:
    """An attribute only ViT-backed consumers read (DPT, ViTPose, SAM3, LW-DETR, ...): reading it raises an
    ``AttributeError`` that names the consumer and why no spec can give it."""

    def read(self: BackbonesConfig) -> Any:
        raise AttributeError(
            f"{_consumer()} reads backbone_config.{attribute}: it is built on a ViT (one hidden size, one patch "
            f"grid), and {self.spec!r} gives feature maps with channels {self.stage_out_channels}; use it where the "
            f"consumer reads feature_maps and .channels ({_FEATURE_MAP_CONSUMERS})"
        )

    return property(read, doc=f"Raises ``AttributeError``: ``{attribute}`` belongs to ViT backbones.")


def _jsonable(value: Any) -> Any:
    """Build options as JSON keeps them (tuples become lists; a path becomes its string)."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _built_options(options: Dict[str, Any]) -> Dict[str, Any]:
    """The stored options back as ``build_backbone`` takes them (lists as tuples)."""

    def tuples(value: Any) -> Any:
        return tuple(tuples(v) for v in value) if isinstance(value, list) else value

    return {key: tuples(value) for key, value in options.items()}


class BackbonesConfig(BackboneConfigMixin, PreTrainedConfig):
    """A ``build_backbone`` spec as a transformers backbone config.

    Attributes:
        spec: the name (``"resnet50"``, ``"timm:convnext_tiny"``, ``"pplcnetv3_rec"``).
        build_options: ``build_backbone``'s keyword options (JSON-able: tuples stored as lists).
        stage_names: ``["stem", "stage1", ...]``, one per stage of the spec.
        hidden_sizes: the channels of ``stage1`` on (what some consumers read, e.g. TVP).
        stage_out_channels: the channels of each output, in ``out_indices`` order (PP-OCRv5 server, PP-OCRv6 det).
        num_channels: input channels.
        block_configs, scale, divisor: what PP-OCRv5's recognisers read to size their neck: here
            ``make_divisible(block_configs[-1][-1][2] * scale, divisor)`` is the last output's channels.
    """

    model_type = "backbones"

    spec: str = "resnet50"
    build_options: Optional[Dict[str, Any]] = None
    num_channels: int = 3
    hidden_sizes: Optional[List[int]] = None
    block_configs: Optional[List[Any]] = None
    scale: float = 1.0
    divisor: int = 1
    hidden_size = _vit_only("hidden_size")
    patch_size = _vit_only("patch_size")
    image_size = _vit_only("image_size")
    num_register_tokens = _vit_only("num_register_tokens")

    def __post_init__(self, **kwargs: Any) -> None:
        self.build_options = {key: _jsonable(v) for key, v in (self.build_options or {}).items()}
        native = build_on_meta(self.spec, **{**_built_options(self.build_options), "out_channels": None})
        channels = [info.channels for info in native.feature_info]
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(channels))]
        self.num_channels = native.in_channels
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        outputs = build_on_meta(self.spec, out_indices=tuple(self.out_indices), **_built_options(self.build_options))
        self.stage_channels = channels
        for index, info in zip(self.out_indices, outputs.output_info):
            self.stage_channels[index] = info.channels
        self.hidden_sizes = self.stage_channels[1:]
        self.stage_out_channels = [self.stage_channels[index] for index in self.out_indices]
        last = self.stage_channels[self.out_indices[-1]]
        self.block_configs, self.scale, self.divisor = [[[3, last, last, 1, False]]], 1.0, 1
        super().__post_init__(**kwargs)


class BackbonesBackbone(BackboneMixin, PreTrainedModel):
    """``build_backbone(config.spec, out_indices=config.out_indices, **config.build_options)`` as an ``AutoBackbone``:
    ``forward(pixel_values [N, C, H, W]) -> BackboneOutput(feature_maps=(one [N, C_i, ceil(H/s_i), ceil(W/s_i)] per
    out index))``. Its weights are the library's (``encoder.`` + the pyramid's keys); ``pretrained`` in the build
    options loads them when it is built, and ``post_init`` leaves them as they are.

    Args:
        config: the :class:`BackbonesConfig`.

    Raises:
        ValueError: built for a PP-OCR recogniser with a last map that does not give its heads 3 to 5 rows at 48
            pixels (the message names the recogniser and the stride it needs).
    """

    config_class = BackbonesConfig
    main_input_name = "pixel_values"
    base_model_prefix = "encoder"
    has_attentions = False

    def __init__(self, config: BackbonesConfig) -> None:
        super().__init__(config)
        options = _built_options(config.build_options or {})
        self.encoder: FeaturePyramid = build_backbone(config.spec, out_indices=tuple(config.out_indices), **options)
        _check_line_recogniser(config.spec, self.encoder.output_info[-1].stride)
        self.num_features = list(config.stage_channels)
        self.post_init()

    def _init_weights(self, module: Any) -> None:
        """Nothing: the library initialised (or loaded) every weight when it built the encoder."""

    def forward(
        self,
        pixel_values: Tensor,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Any:
        """The feature maps of ``out_indices``, as transformers' backbones give them.

        Args:
            pixel_values: ``[N, C, H, W]``.
            output_hidden_states: also return every built stage's map (default: the config's).
            output_attentions: ignored (no attention maps).
            return_dict: a ``BackboneOutput`` (default: the config's) or a tuple.
            **kwargs: what consumers pass on (ignored).

        Returns:
            ``BackboneOutput(feature_maps=(one [N, C_i, ceil(H/s_i), ceil(W/s_i)] per out index), hidden_states,
            attentions=None)``, or its tuple.
        """
        stages = self.encoder.backbone.stage_outputs(pixel_values)
        maps: Tuple[Any, ...] = tuple(self.encoder.outputs_from(stages))  # transformers annotates tuple[Tensor]
        hidden = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output = BackboneOutput(feature_maps=maps, hidden_states=tuple(stages) if hidden else None, attentions=None)
        use_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if use_dict else output.to_tuple()


AutoConfig.register("backbones", BackbonesConfig, exist_ok=True)
AutoBackbone.register(BackbonesConfig, BackbonesBackbone, exist_ok=True)


def backbone_config(spec: str, *, out_indices: Optional[Sequence[int]] = None, **build_options: Any) -> BackbonesConfig:
    """A transformers backbone config for ``build_backbone(spec, out_indices=..., **build_options)``.

    Args:
        spec: a registered name or ``timm:<model>`` (a ``NAME:key=value`` spec string is read too).
        out_indices: the stages to output (0 = ``stem``); ``None``: the last stage.
        **build_options: any ``build_backbone`` option (``output_stride``, ``strides``, ``dilate``, ``in_channels``,
            ``frozen_stages``, ``norm_eval``, ``pretrained``, ``out_channels`` for 1x1 adapters, family options).

    Returns:
        The config, for a consumer's ``backbone_config=`` or ``AutoBackbone.from_config``.

    Raises:
        KeyError, TypeError, ValueError: what ``build_backbone`` says of the spec and options (checked here, on the
            meta device).
    """
    name, spec_options = parse_spec(spec)
    get_entry(name)
    options = {**spec_options, **build_options}
    for key in _NOT_OPTIONS:
        if key in options:
            raise TypeError(f"backbone_config takes {key} as its own keyword, got it among the build options")
    inherited: Dict[str, Any] = {"out_indices": list(out_indices) if out_indices is not None else None}
    return BackbonesConfig(spec=name, build_options=options, **inherited)
