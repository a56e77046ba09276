"""A source becomes tensors: named weight sets, the local cache, downloads.

A registered name's weight sets are torchvision's (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``,
``"DEFAULT"``) and timm's pretrained tags (``"a1_in1k"``, ``"tv_in1k"``, ...), each with the
:class:`~backbones.records.Preprocess` its source declares. ``pretrained=True`` is torchvision's ``DEFAULT``
(timm's default tag for ``timm:<name>`` models). Files are cached under ``<torch hub dir>/checkpoints/`` with
torchvision's file names, and as ``<model>.<tag>.safetensors`` for timm's; a file already in the Hugging Face cache
is used as it is. Nothing is ever unpickled: ``torch.load(weights_only=True)`` or safetensors.

``pretrained=`` is read one way only: ``True``/``False``; a weight tag of the name (tags first); a path, which is
an ``os.PathLike`` or a string with a suffix or a folder separator. A string that is both is an error naming both
readings, and a string that is neither names the tags there are.
"""

from __future__ import annotations

import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from ..core import Preprocess
from ._files import read_state_dict

__all__ = [
    "PretrainedWeights",
    "TimmWeights",
    "TorchvisionWeights",
    "WeightSet",
    "WeightSource",
    "WeightsUnavailableError",
    "cache_dir",
    "collect_sets",
    "default_weight_set",
    "fetch",
    "read_pretrained",
    "resolve_pretrained",
]

_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsUnavailableError(RuntimeError):
    """A weight file that is neither cached nor downloadable; the message says where to put it."""


@dataclass(frozen=True)
class WeightSet:
    """One named set of pretrained weights.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        tag: the name users pass as ``pretrained=`` (``"IMAGENET1K_V2"``, ``"a1_in1k"``).
        url: where the file is downloaded from.
        filename: its name in ``<torch hub dir>/checkpoints/``.
        preprocess: the input normalisation the source declares (mean, std, input size, interpolation).
        hf_hub_id: the Hugging Face repository of a timm weight set.
    """

    source: str
    tag: str
    url: str
    filename: str
    preprocess: Optional[Preprocess] = None
    hf_hub_id: Optional[str] = None

    @property
    def cached_path(self) -> Path:
        return cache_dir() / self.filename


def cache_dir() -> Path:
    """``<torch hub dir>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


class WeightSource:
    """Where a registered name's published weight sets come from (declared beside its builder)."""

    def sets(self) -> List[WeightSet]:
        raise NotImplementedError

    def default_tag(self) -> Optional[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class TorchvisionWeights(WeightSource):
    """torchvision's weight enum of ``model`` (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT``)."""

    model: str

    def sets(self) -> List[WeightSet]:
        from torchvision.models import get_model_weights

        try:
            enum = get_model_weights(self.model)
        except ValueError:
            return []
        return [
            WeightSet("torchvision", tag, weights.url, weights.url.rsplit("/", 1)[-1], _torchvision_preprocess(weights))
            for tag, weights in enum.__members__.items()
        ]

    def default_tag(self) -> Optional[str]:
        return "DEFAULT"


@dataclass(frozen=True)
class TimmWeights(WeightSource):
    """timm's pretrained tags of ``architecture`` (``a1_in1k``, ``tv_in1k``, ...); ``default`` is the tag
    ``pretrained=True`` takes (``None``: timm's default for the architecture)."""

    architecture: str
    default: Optional[str] = None

    def sets(self) -> List[WeightSet]:
        import timm
        from timm.models import get_pretrained_cfg

        sets = []
        for full_name in timm.list_pretrained(f"{self.architecture}.*"):
            architecture, tag = full_name.split(".", 1)
            cfg = get_pretrained_cfg(full_name)
            if architecture != self.architecture or cfg is None:
                continue
            if cfg.hf_hub_id:
                url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
            elif isinstance(cfg.url, str) and cfg.url:
                url = cfg.url
            else:
                continue
            suffix = ".safetensors" if url.endswith(".safetensors") else Path(url).suffix or ".pth"
            size = (int(cfg.input_size[-2]), int(cfg.input_size[-1])) if cfg.input_size else None
            preprocess = Preprocess(tuple(cfg.mean), tuple(cfg.std), size, cfg.interpolation or "bilinear")
            sets.append(WeightSet("timm", tag, url, f"{full_name}{suffix}", preprocess, cfg.hf_hub_id or None))
        return sets

    def default_tag(self) -> Optional[str]:
        from timm.models import get_pretrained_cfg

        if self.default is not None:
            return self.default
        cfg = get_pretrained_cfg(self.architecture)
        return cfg.tag if cfg is not None else None


def _torchvision_preprocess(weights: Any) -> Preprocess:
    """What torchvision's ``weights.transforms`` (an ``ImageClassification`` preset) normalises with."""
    preset = weights.transforms()
    crop = preset.crop_size[0] if isinstance(preset.crop_size, (list, tuple)) else preset.crop_size
    return Preprocess(tuple(preset.mean), tuple(preset.std), (int(crop), int(crop)), preset.interpolation.value)


def collect_sets(sources: Sequence[WeightSource]) -> Dict[str, WeightSet]:
    """The weight sets of ``sources`` by tag, the first source's first (it also gives the default)."""
    sets: Dict[str, WeightSet] = {}
    for source in sources:
        for weight_set in source.sets():
            sets.setdefault(weight_set.tag, weight_set)
    return sets


def default_weight_set(sources: Sequence[WeightSource]) -> Optional[WeightSet]:
    """What ``pretrained=True`` means: the first source's default tag (``None`` when there are no weights)."""
    sets = collect_sets(sources)
    tag = next((t for t in (s.default_tag() for s in sources) if t in sets), next(iter(sets), None))
    return sets.get(tag) if tag is not None else None


def _looks_like_path(value: str) -> bool:
    return Path(value).suffix != "" or os.sep in value or "/" in value


def resolve_pretrained(
    name: str, sources: Sequence[WeightSource], pretrained: Union[bool, str, os.PathLike]
) -> Union[WeightSet, Path]:
    """What ``pretrained=`` names: a weight set (``True`` or a tag) or a checkpoint path.

    Raises:
        ValueError: no weights for ``True``; a string that is neither a tag nor a path (lists the tags), or both.
    """
    if isinstance(pretrained, os.PathLike):
        return Path(pretrained)
    sets = collect_sets(sources)
    if pretrained is True:
        chosen = default_weight_set(sources)
        if chosen is None:
            raise ValueError(
                f"pretrained=True: {name} has no published ImageNet weights; pass a checkpoint file "
                f"(.pth/.pt/.ckpt/.safetensors) as pretrained=..."
            )
        return chosen
    text = pretrained if isinstance(pretrained, str) else ""
    path_like = bool(text) and _looks_like_path(text)
    if text in sets and path_like:
        raise ValueError(
            f"pretrained={pretrained!r} is both a weight tag of {name} and a file path; pass pathlib.Path(...) "
            f"for the file, or a plain tag"
        )
    if text in sets:
        return sets[text]
    if path_like:
        return Path(text)
    tags = f"one of the weight tags of {name}: {', '.join(sets)}" if sets else f"a tag ({name} has none)"
    raise ValueError(
        f"pretrained must be True, False, {tags}, or a checkpoint path (an os.PathLike, or a string with a suffix "
        f"such as .pth or a folder, ./{pretrained}); got {pretrained!r}"
    )


def _hf_cached(weight_set: WeightSet) -> Optional[Path]:
    if not weight_set.hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(weight_set.hf_hub_id, "model.safetensors")
    return Path(found) if isinstance(found, str) else None


def fetch(weight_set: WeightSet, *, progress: bool = False) -> Path:
    """The local file of a weight set: the torch hub cache, the Hugging Face cache, else a download.

    Raises:
        WeightsUnavailableError: the download failed (e.g. no network); the message names the URL and the
            path where a copy of the file is picked up.
    """
    target = weight_set.cached_path
    if target.is_file():
        return target
    hf_file = _hf_cached(weight_set)
    if hf_file is not None:
        return hf_file
    match = _HASH_PREFIX.search(weight_set.filename) if weight_set.source == "torchvision" else None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weight_set.url, str(target), match.group(1) if match else None, progress)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsUnavailableError(
            f"could not download the {weight_set.source} weights {weight_set.tag!r} ({error}).\n"
            f"  wanted: {weight_set.url}\n"
            f"  to use them offline, download that file elsewhere and copy it to:\n"
            f"    {target}\n"
            f"  (the torch hub cache: $TORCH_HOME/hub/checkpoints, see torch.hub.get_dir()), or pass the "
            f"file itself as pretrained='path/to/{weight_set.filename}'"
        ) from error
    return target


class PretrainedWeights(NamedTuple):
    """What ``pretrained=`` gave: the tensors, how reports name them, and the preprocessing they declare."""

    state: Dict[str, Tensor]
    source: str
    preprocess: Optional[Preprocess]


def read_pretrained(
    name: str, sources: Sequence[WeightSource], pretrained: Union[bool, str, os.PathLike]
) -> PretrainedWeights:
    """The tensors that ``pretrained=`` names (see :func:`resolve_pretrained`).

    Args:
        name: the backbone name (for messages).
        sources: its declared weight sources (for ``True`` and tags).
        pretrained: ``True``, a weight tag, or a checkpoint file.
    """
    found = resolve_pretrained(name, sources, pretrained)
    if isinstance(found, Path):
        return PretrainedWeights(read_state_dict(found), str(found), None)
    return PretrainedWeights(read_state_dict(fetch(found)), f"{found.source} weights {found.tag!r}", found.preprocess)
