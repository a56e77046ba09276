"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` or safetensors, never an unpickled object;
training containers (``{"state_dict": ...}``, ``{"model": ...}``, Lightning files) unwrapped."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch
from torch import Tensor

__all__ = ["CheckpointReadError", "read_state_dict", "unwrap_container"]

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "params", "weights")


class CheckpointReadError(ValueError):
    """A weight file that cannot be read (not a checkpoint, truncated, a directory, code in a pickle)."""


def unwrap_container(checkpoint: Any) -> Any:
    """The state dict inside a training checkpoint: ``{"state_dict": ...}`` (Lightning, mmengine, OpenOCR),
    ``{"model": ..., "step": tensor(5)}``, ... up to three levels deep; anything else as it is."""
    for _ in range(3):
        if not isinstance(checkpoint, Mapping):
            break
        inner = next((checkpoint[k] for k in _CONTAINER_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    return checkpoint


def _tensors_of(checkpoint: Any, origin: str) -> Dict[str, Tensor]:
    checkpoint = unwrap_container(checkpoint)
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
        return _tensors_of(_read_safetensors(path), str(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler's refusal names the offending global
        kind = "a safetensors file: rename it to .safetensors" if _looks_like_safetensors(path) else str(error)
        raise CheckpointReadError(
            f"pretrained file {str(path)!r} cannot be read with torch.load(weights_only=True): {kind}. "
            f"Only tensors and plain containers are accepted (a truncated or foreign file fails too); re-save it "
            f"as a state dict or .safetensors"
        ) from error
    return _tensors_of(checkpoint, str(path))


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
