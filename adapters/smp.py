"""segmentation_models_pytorch: any ``build_backbone`` spec as an smp encoder (Unet, FPN, DeepLabV3Plus, UPerNet,
Segformer, PAN, ...). Needs ``pip install -e ".[smp]"``.

    >>> import segmentation_models_pytorch as smp                                 # doctest: +SKIP
    >>> from backbones.adapters.smp import smp_encoder                             # doctest: +SKIP
    >>> encoder_name = smp_encoder("densenet121")                                   # doctest: +SKIP
    >>> net = smp.Unet(encoder_name=encoder_name, encoder_weights=None, in_channels=1, classes=3)  # doctest: +SKIP

smp asks its encoders for ``[x, /2, /4, /8, /16, /32]`` (``depth + 1`` maps, the first the input). The ``/4`` to
``/32`` maps are the deepest stages of the spec at those square strides (a ``FeaturePyramid``); the ``/2`` map is the
family's stem at ``/2``: a stage at ``/2`` where the family has one (timm's ResNets), else the last module of the stem
whose output is at ``/2`` (ResNet: ``relu`` after ``conv1``; DenseNet: ``features.relu0``; ``densenet_hmer``:
``features.relu1``), else smp's own 0-channel placeholder (a 4x4 patchify stem: ConvNeXt). ``encoder_output_stride``
8 or 16 is this library's stride planning with ``dilate=True``; ``in_channels`` its input-channel adaptation (loaded
weights adapted as ``build_backbone`` adapts them).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

try:
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.encoders._base import EncoderMixin
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        f"backbones.adapters.smp needs segmentation_models_pytorch: pip install 'backbone-swap[smp]' ({error})"
    ) from None

import torch
from torch import Tensor, nn

from backbones import FeaturePyramid, build_backbone, build_on_meta, get_entry, load_weights
from backbones.core import Encoder, meta_call
from backbones.registry import format_spec, parse_spec
from backbones.registry import weight_sets as named_weight_sets

__all__ = ["BackbonesEncoder", "smp_encoder"]

_SMP_OWNS = {
    "in_channels": "pass in_channels to the smp model",
    "output_stride": "pass encoder_output_stride to the smp model (8, 16 or 32)",
    "out_indices": "smp takes its five levels: /2, /4, /8, /16, /32",
    "dilate": "encoder_output_stride dilates (DeepLab's way)",
}
_LEVELS = (4, 8, 16, 32)


class Levels(NamedTuple):
    """Where smp's levels come from: the stages for /4, /8, /16, /32; a stage at /2 (its index) or else a module of
    the stem at /2 (its name and channels); neither: smp's 0-channel placeholder."""

    stages: List[int]
    half_stage: Optional[int]
    half_module: Optional[str]
    half_channels: int


def _half_module(native: Encoder) -> Tuple[Optional[str], int]:
    """The last module to give a /2 map before the first smaller map (a meta forward at 64x96; ResNet: the ``relu``
    after ``conv1``, not ``conv1`` or ``bn1``), and its channels; ``(None, 0)`` where no module gives one."""
    backbone = native.stage_backbone()
    found: List[Tuple[str, Tuple[int, ...]]] = []

    def record(name: str) -> Any:
        return lambda module, inputs, output: found.append(
            (name, tuple(output.shape) if isinstance(output, Tensor) else ())
        )

    hooks = [module.register_forward_hook(record(name)) for name, module in backbone.named_modules() if name]
    try:
        meta_call(backbone, "forward_stages", torch.empty(1, backbone.in_channels, 64, 96, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    half: Tuple[Optional[str], int] = (None, 0)
    for name, shape in found:
        if len(shape) == 4 and shape[2] < 32:
            break
        if len(shape) == 4 and shape[2:] == (32, 48) and shape[1] > 0:
            half = (name, shape[1])
    return half


def levels(name: str, options: Dict[str, Any]) -> Levels:
    """Where smp's levels come from for ``build_backbone(name, **options)`` (see :class:`Levels`).

    Raises:
        ValueError: the family has no square stage at one of the strides (names the level and the stages).
    """
    native = build_on_meta(name, **options)
    strides = {info.stride: info.index for info in native.feature_info}
    missing = [s for s in _LEVELS if (s, s) not in strides]
    if missing:
        listed = ", ".join(f"{info.name} ({info.stride[0]}, {info.stride[1]})" for info in native.feature_info)
        raise ValueError(
            f"{name} cannot be an smp encoder: smp needs a map at /{missing[0]} (square: ({missing[0]}, "
            f"{missing[0]})), and its stages are {listed}"
        )
    stages, half = [strides[(s, s)] for s in _LEVELS], strides.get((2, 2))
    if half is not None:
        return Levels(stages, half, None, native.feature_info[half].channels)
    module, channels = _half_module(native)
    return Levels(stages, None, module, channels)


class BackbonesEncoder(nn.Module, EncoderMixin):
    """An smp encoder around ``build_backbone(spec, out_indices=<the /4../32 stages>, **build_options)``:
    ``forward(x) -> [x, /2, /4, /8, /16, /32][: depth + 1]`` (the ``/2`` map as the module docstring says)."""

    _is_torch_scriptable = False
    _is_torch_exportable = False

    def __init__(self, spec: str, build_options: Dict[str, Any], depth: int = 5, output_stride: int = 32, **_: Any):
        nn.Module.__init__(self)
        EncoderMixin.__init__(self)
        self.spec, self.build_options = spec, dict(build_options)
        self._depth, self._output_stride, self._in_channels = depth, output_stride, 3
        self._build(3, None)

    def _build(self, in_channels: int, state: Optional[Dict[str, Tensor]]) -> None:
        found = levels(self.spec, {**self.build_options, "in_channels": in_channels})
        half, self.half_module = found.half_stage, found.half_module
        wanted = ([half] if half is not None else []) + found.stages[: max(self._depth - 1, 0)]
        dilated = {"output_stride": self._output_stride, "dilate": True} if self._output_stride != 32 else {}
        options = {**self.build_options, "in_channels": in_channels, **dilated}
        self.pyramid: FeaturePyramid = build_backbone(self.spec, out_indices=tuple(wanted), **options)
        if state is not None:
            load_weights(self.pyramid, state)  # the first conv adapted to in_channels
        self.half_from_stage = half is not None
        outputs = list(self.pyramid.out_channels[1:] if self.half_from_stage else self.pyramid.out_channels)
        half_channels = self.pyramid.out_channels[0] if self.half_from_stage else found.half_channels
        self._out_channels = [in_channels, half_channels, *outputs]

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """smp's input-channel change: rebuilt for ``in_channels``; loaded weights (smp's ``encoder_weights`` or this
        library's ``pretrained``) come along, the first conv adapted.

        Args:
            in_channels: the input's channels.
            pretrained: whether loaded weights are carried (smp passes whether it loaded ``encoder_weights``).
        """
        if in_channels == self._in_channels:
            return
        carried = self.pyramid.state_dict() if pretrained and "pretrained" not in self.build_options else None
        self._in_channels = in_channels
        self._build(in_channels, carried)

    def make_dilated(self, output_stride: int) -> None:
        """smp's dilation: the encoder is rebuilt at ``output_stride`` with ``dilate=True``, its weights kept.

        Args:
            output_stride: 8 or 16.

        Raises:
            ValueError: another stride.
        """
        if output_stride not in (8, 16):
            raise ValueError(f"Output stride should be 16 or 8, got {output_stride}.")
        if output_stride != self._output_stride:
            self._output_stride = output_stride
            self._build(self._in_channels, self.pyramid.state_dict())

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """smp's ``encoder_weights``: a timm checkpoint of the whole model, loaded strictly through the library's key
        layouts (this encoder's own keys load as usual).

        Args:
            state_dict: the checkpoint's tensors.
            strict: for this encoder's own keys, as ``nn.Module.load_state_dict``; foreign layouts load strictly.
            assign: as ``nn.Module.load_state_dict``.

        Returns:
            ``nn.Module.load_state_dict``'s result, or this library's load report for a foreign layout.
        """
        if all(key.startswith("pyramid.") for key in state_dict):
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        return load_weights(self.pyramid, state_dict)

    def _half_map(self, x: Tensor, maps: List[Tensor], captured: List[Tensor]) -> Tensor:
        if self.half_from_stage:
            return maps[0]
        if captured:
            return captured[-1]
        return x.new_empty(x.shape[0], 0, -(-x.shape[2] // 2), -(-x.shape[3] // 2))

    def forward(self, x: Tensor) -> List[Tensor]:
        """smp's levels.

        Args:
            x: ``[N, C, H, W]``.

        Returns:
            ``[x, /2, /4, /8, /16, /32][: depth + 1]``, each ``[N, out_channels[i], ceil(H/s), ceil(W/s)]``.
        """
        captured: List[Tensor] = []
        hook = None
        if self.half_module is not None and not self.half_from_stage and self._depth >= 1:
            module = self.pyramid.backbone.get_submodule(self.half_module)
            hook = module.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            maps = list(self.pyramid(x))
        finally:
            if hook is not None:
                hook.remove()
        half = self._half_map(x, maps, captured)
        deeper = maps[1:] if self.half_from_stage else maps
        return [x, half, *deeper][: self._depth + 1]


def _pretrained_settings(name: str) -> Dict[str, Dict[str, Any]]:
    """``encoder_weights`` smp can fetch: the weight sets hosted on the Hugging Face hub (timm's), by tag."""
    settings = {}
    for tag, weight_set in named_weight_sets(name).items():
        if weight_set.hf_hub_id:
            preprocess = weight_set.preprocess
            extra = {"mean": list(preprocess.mean), "std": list(preprocess.std)} if preprocess else {}
            settings[tag] = {"repo_id": weight_set.hf_hub_id, "revision": None, "input_space": "RGB",
                             "input_range": [0, 1], **extra}  # fmt: skip
    return settings


def smp_encoder(spec: str, **build_options: Any) -> str:
    """Register ``spec`` as an smp encoder and return its name, for ``smp.Unet(encoder_name=...)`` and the other
    models.

    Args:
        spec: a registered name or ``timm:<model>`` (a ``NAME:key=value`` spec string is read too).
        **build_options: ``build_backbone`` options but those smp sets (``in_channels``, ``output_stride``: give them
            to the smp model), e.g. ``pretrained="IMAGENET1K_V2"``, ``frozen_stages``, ``norm_eval``, family options.

    Returns:
        The encoder name, ``"backbones:<spec>"``, for ``encoder_name=``.

    Raises:
        KeyError, TypeError, ValueError: an unknown name or option, an option smp owns, or a family without smp's
            levels (the error names the missing one).
    """
    name, spec_options = parse_spec(spec)
    get_entry(name)
    options = {**spec_options, **build_options}
    for key, why in _SMP_OWNS.items():
        if key in options:
            raise TypeError(f"smp_encoder does not take {key}: {why}")
    levels(name, options)
    encoder_name = f"backbones:{format_spec(name, options)}"
    smp.encoders.encoders[encoder_name] = {
        "encoder": BackbonesEncoder,
        "pretrained_settings": _pretrained_settings(name),
        "params": {"spec": name, "build_options": options},
    }
    return encoder_name
