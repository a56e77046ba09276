"""A source becomes tensors: named weight sets, the local cache, downloads, safe file reading.

A registered name's weight sets are torchvision's (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``,
``"DEFAULT"``) and timm's pretrained tags (``"a1_in1k"``, ``"tv_in1k"``, ...). ``pretrained=True`` is
torchvision's ``DEFAULT`` (timm's default tag for ``timm:<name>`` models). Files are cached under
``<torch hub dir>/checkpoints/`` with torchvision's file names, and as ``<model>.<tag>.safetensors``
for timm's; a file already in the Hugging Face cache is used as it is. Nothing is ever unpickled:
``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import os
import re
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CheckpointReadError",
    "TimmWeights",
    "TorchvisionWeights",
    "WeightSet",
    "WeightSource",
    "WeightsUnavailableError",
    "cache_dir",
    "choose_weight_set",
    "collect_sets",
    "fetch",
    "is_checkpoint_path",
    "read_pretrained",
    "read_state_dict",
]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params", "weights")
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


class CheckpointReadError(ValueError):
    """A weight file that cannot be read (not a checkpoint, truncated, a directory, code in a pickle)."""


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
        hf_hub_id: the Hugging Face repository of a timm weight set.
    """

    source: str
    tag: str
    url: str
    filename: str
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
            WeightSet("torchvision", tag, weights.url, weights.url.rsplit("/", 1)[-1])
            for tag, weights in enum.__members__.items()
        ]

    def default_tag(self) -> Optional[str]:
        return "DEFAULT"


@dataclass(frozen=True)
class TimmWeights(WeightSource):
    """timm's pretrained tags of ``architecture`` (``a1_in1k``, ``tv_in1k``, ...)."""

    architecture: str

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
            elif cfg.url:
                url = cfg.url
            else:
                continue
            suffix = ".safetensors" if url.endswith(".safetensors") else Path(url).suffix or ".pth"
            sets.append(WeightSet("timm", tag, url, f"{full_name}{suffix}", cfg.hf_hub_id or None))
        return sets

    def default_tag(self) -> Optional[str]:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.architecture)
        return cfg.tag if cfg is not None else None


def collect_sets(name: str, sources: Sequence[WeightSource]) -> Dict[str, WeightSet]:
    """The weight sets of ``sources`` by tag, the first source's first (it also gives the default)."""
    sets: Dict[str, WeightSet] = {}
    for source in sources:
        for weight_set in source.sets():
            sets.setdefault(weight_set.tag, weight_set)
    return sets


def choose_weight_set(name: str, sources: Sequence[WeightSource], pretrained: Union[bool, str]) -> WeightSet:
    """The weight set for ``pretrained=True`` (the first source's default) or a tag; ``ValueError`` lists the
    tags there are."""
    sets = collect_sets(name, sources)
    tag: object = pretrained
    if pretrained is True:
        tag = next((t for t in (s.default_tag() for s in sources) if t in sets), next(iter(sets), None))
    if tag in sets:
        return sets[tag]  # type: ignore[index]
    if not sets:
        raise ValueError(
            f"pretrained={pretrained!r}: {name} has no published ImageNet weights; pass a checkpoint file "
            f"(.pth/.pt/.safetensors) as pretrained=..."
        )
    raise ValueError(
        f"pretrained must be True, False, a checkpoint path or one of the weight tags of {name}: "
        f"{', '.join(sets)}; got {pretrained!r}"
    )


def is_checkpoint_path(value: object) -> bool:
    """Whether ``pretrained=value`` names a file rather than a weight tag."""
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    return value.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in value or "/" in value or os.path.exists(value)


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


def _unwrap(checkpoint: Any, origin: str) -> Dict[str, Tensor]:
    for _ in range(3):
        if isinstance(checkpoint, Mapping) and not any(isinstance(v, Tensor) for v in checkpoint.values()):
            inner = next((checkpoint[k] for k in _CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
            if inner is None:
                break
            checkpoint = inner
    if not isinstance(checkpoint, Mapping):
        raise CheckpointReadError(f"pretrained file {origin} holds a {type(checkpoint).__name__}, not a state dict")
    tensors = {str(k): v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointReadError(
            f"pretrained file {origin} holds no tensors at its top level nor under {', '.join(_CONTAINER_KEYS)} "
            f"(keys: {', '.join(map(str, list(checkpoint)[:8]))})"
        )
    return tensors


def read_state_dict(path: Union[str, os.PathLike]) -> Dict[str, Tensor]:
    """The tensors of a ``.pth``/``.pt``/``.ckpt``/``.safetensors`` file, on the CPU, without running code from it.

    Training checkpoints are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, Lightning files). Any read
    error becomes one ``ValueError`` naming the file and what is wrong with it (``FileNotFoundError`` when
    there is no file).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a checkpoint file, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained file {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointReadError(f"pretrained file {str(path)!r} is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointReadError(f"pretrained file {str(path)!r} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        return _unwrap(_read_safetensors(path), str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler's refusal names the offending global
        kind = "a safetensors file: rename it to .safetensors" if _looks_like_safetensors(path) else str(error)
        raise CheckpointReadError(
            f"pretrained file {str(path)!r} cannot be read with torch.load(weights_only=True): {kind}. "
            f"Only tensors and plain containers are accepted (a truncated or foreign file fails too); re-save it "
            f"as a state dict or .safetensors"
        ) from error
    return _unwrap(checkpoint, str(path))


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _read_safetensors(path: Path) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError, OSError: header too small/large, truncated data
        hint = "; it is a zip archive, as torch.save writes: rename it to .pth" if zipfile.is_zipfile(path) else ""
        message = f"pretrained file {str(path)!r} is not a readable safetensors file ({error}){hint}"
        raise CheckpointReadError(message) from error


def read_pretrained(
    name: str, sources: Sequence[WeightSource], pretrained: Union[bool, str, os.PathLike]
) -> Tuple[Dict[str, Tensor], str]:
    """The tensors that ``pretrained=`` names, and how reports name their origin.

    Args:
        name: the backbone name (for messages).
        sources: its declared weight sources (for ``True`` and tags).
        pretrained: ``True``, a weight tag, or a checkpoint file.
    """
    if is_checkpoint_path(pretrained):
        path = Path(pretrained)
        return read_state_dict(path), str(path)
    weight_set = choose_weight_set(name, sources, pretrained)  # type: ignore[arg-type]
    return read_state_dict(fetch(weight_set)), f"{weight_set.source} weights {weight_set.tag!r}"
