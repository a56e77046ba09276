"""Tensors go into a model: key layout detection, remapping, input-conv adaptation, strict checks.

The checkpoint may use torchvision's, timm's, an HMER project's or our own key names, and may be a whole
model (a recognizer, a Lightning module) of which the backbone is a part: the prefix under which most keys
match is found and stripped, the family renames the rest (:meth:`Backbone.checkpoint_key`), and then every
tensor of the backbone must be found with the right shape. Only three things are forgiven, and reported:
the first conv's input channels are adapted (summed over RGB for one channel, repeated and rescaled
otherwise, as timm does), adapters missing from the file keep their fresh initialisation, and tensors of
stages this configuration does not build (``out_indices``) or of a classifier head are ignored.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .sources import read_state_dict

if TYPE_CHECKING:
    from .base import Backbone

__all__ = ["LoadReport", "WeightsMismatchError", "adapt_first_conv", "first_conv_name", "load_weights"]

_logger = logging.getLogger(__name__)
_SHOWN = 12


class WeightsMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the backbone; the message lists the keys by name."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did. ``initialised`` lists tensors that kept their fresh initialisation."""

    source: str
    prefix: str = ""
    loaded: int = 0
    renamed: int = 0
    adapted: List[str] = field(default_factory=list)
    initialised: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    outside_prefix: int = 0

    def __str__(self) -> str:
        lines = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.prefix:
            lines.append(f"  prefix {self.prefix!r} stripped ({self.outside_prefix} tensors outside it skipped)")
        if self.renamed:
            lines.append(f"  {self.renamed} keys renamed to this library's module names")
        lines += [f"  adapted: {name}" for name in self.adapted]
        if self.initialised:
            lines.append(f"  freshly initialised (not in the file): {_names(self.initialised)}")
        if self.ignored:
            lines.append(f"  ignored (classifier head or stages not built): {_names(self.ignored)}")
        return "\n".join(lines)


def _names(keys: Collection[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


def first_conv_name(model: Backbone) -> str:
    """The conv whose input channels get adapted: the family's ``first_conv``, else the first ``nn.Conv2d``."""
    if model.first_conv:
        return model.first_conv
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt")


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """``[O, C, kh, kw] -> [O, in_channels, kh, kw]``: summed over C for one channel (a gray image then gives
    the features of its C-fold repetition), else timm's repeat-and-rescale by ``C / in_channels``."""
    if in_channels == 1:
        return weight.double().sum(dim=1, keepdim=True).to(weight.dtype)
    from timm.models import adapt_input_conv  # imported when needed: timm costs ~0.3 s at import

    return adapt_input_conv(in_channels, weight.float(), base_chans=weight.shape[1]).to(weight.dtype)


def _find_prefix(model: Backbone, keys: List[str], targets: Collection[str]) -> Tuple[str, int]:
    """The prefix (``""`` or ending in ``.``) under which the most keys map onto ``targets``."""
    scores: Dict[str, int] = defaultdict(int)
    for key in keys:
        parts = key.split(".")
        for cut in range(len(parts)):
            prefix = ".".join(parts[:cut]) + ("." if cut else "")
            if model.checkpoint_key(key[len(prefix) :]) in targets:
                scores[prefix] += 1
    if not scores:
        return "", 0
    best = max(scores.values())
    return min((p for p, s in scores.items() if s == best), key=len), best


def _tensor_problem(tensor: object, target: Tensor) -> Optional[str]:
    """What keeps ``tensor`` from being copied into ``target``, or ``None``."""
    if not isinstance(tensor, Tensor):
        return f"a {type(tensor).__name__}, not a tensor"
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"a {tensor.layout} tensor{' (quantized)' if tensor.is_quantized else ''}; only dense tensors load"
    if tensor.is_meta:
        return "on the meta device (it has no data)"
    if tensor.device.type != "cpu" and tensor.device != target.device:
        return f"on {tensor.device} while the model is on {target.device}"
    if target.is_floating_point() and not tensor.is_floating_point():
        return f"dtype {tensor.dtype}; a floating dtype is needed for this {target.dtype} tensor"
    if not target.is_floating_point() and (tensor.is_floating_point() or tensor.is_complex()):
        return f"dtype {tensor.dtype}; an integer dtype is needed for this {target.dtype} tensor"
    return None


def _checked_state(checkpoint: object, source: Optional[str]) -> Tuple[Dict[str, Tensor], str]:
    if isinstance(checkpoint, Mapping):
        bad = [repr(key) for key in checkpoint if not isinstance(key, str)]
        if bad:
            raise WeightsMismatchError(f"state dict keys must be strings, got {', '.join(bad[:5])}")
        return dict(checkpoint), source or "a state dict"
    if isinstance(checkpoint, (str, os.PathLike)):
        return read_state_dict(checkpoint), source or str(checkpoint)
    raise TypeError(
        f"checkpoint must be a file path (.pth/.pt/.ckpt/.safetensors) or a state dict (a mapping of names to "
        f"tensors), got {type(checkpoint).__name__}"
    )


def _copy_atomically(model: nn.Module, own: Dict[str, Tensor], to_load: Dict[str, Tensor], source: str) -> None:
    """``load_state_dict`` of ``to_load``; if it fails part-way, every tensor it touched gets its old value back."""
    backup = {name: own[name].detach().clone() for name in to_load}
    try:
        result = model.load_state_dict(to_load, strict=False)
    except Exception as error:
        with torch.no_grad():
            for name, value in backup.items():
                own[name].copy_(value)
        raise WeightsMismatchError(f"loading {source} failed ({error}); the model was left as it was") from error
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys after validation: {result.unexpected_keys}")


def load_weights(
    model: Backbone,
    checkpoint: Union[str, os.PathLike, Mapping[str, Tensor]],
    *,
    reference_keys: Optional[Collection[str]] = None,
    source: Optional[str] = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` strictly and atomically, in any supported key layout.

    Every tensor is checked (name, dense layout, device, dtype kind, shape) before anything is copied; a
    load that fails for any reason leaves the model bit-identical to before.

    Args:
        model: a built :class:`~backbones.Backbone` (its ``checkpoint_key`` renames foreign layouts).
        checkpoint: a file path (``.pth``/``.pt``/``.safetensors``) or a state dict.
        reference_keys: the keys of the family's full native model; checkpoint tensors under these keys
            that this model lacks (stages pruned by ``out_indices``) are ignored instead of refused.
        source: how the report names the checkpoint.

    Returns:
        A :class:`LoadReport`; also stored as ``model.pretrained_report``.

    Raises:
        WeightsMismatchError: missing, unexpected, mis-shaped or unusable tensors, listed by name.
    """
    from .base import Backbone

    if not isinstance(model, Backbone):
        raise TypeError(f"model must be a backbones.Backbone, got {type(model).__name__}")
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source must be a string (how reports name the checkpoint), got {source!r}")
    if reference_keys is not None and (isinstance(reference_keys, str) or not isinstance(reference_keys, Collection)):
        raise TypeError(f"reference_keys must be a collection of key names, got {reference_keys!r}")
    state, source = _checked_state(checkpoint, source)
    own = model.state_dict()
    reference = set(reference_keys or ()) | set(own)
    prefix, score = _find_prefix(model, list(state), reference)
    if score == 0:
        raise WeightsMismatchError(
            f"no tensor of {source} matches a parameter of {type(model).__name__}: the file has keys like "
            f"{_names(list(state)[:5])}; the model expects keys like {_names(list(own)[:5])}"
        )
    report = LoadReport(source=source, prefix=prefix)
    mapped: Dict[str, Tensor] = {}
    for key, tensor in state.items():
        if not key.startswith(prefix):
            report.outside_prefix += 1
            continue
        name = model.checkpoint_key(key[len(prefix) :])
        if name is None:
            report.ignored.append(key[len(prefix) :])
            continue
        report.renamed += name != key[len(prefix) :]
        mapped[name] = tensor

    first_conv = first_conv_name(model) + ".weight"
    unexpected, mis_shaped, unusable, to_load = [], [], [], {}
    for name, tensor in mapped.items():
        if name not in own:
            (report.ignored if name in reference else unexpected).append(name)
            continue
        problem = _tensor_problem(tensor, own[name])
        if problem is not None:
            unusable.append(f"{name} ({problem})")
            continue
        wanted = own[name].shape
        same_kernel = tensor.dim() == 4 and tensor.shape[0] == wanted[0] and tensor.shape[2:] == wanted[2:]
        if name == first_conv and tensor.shape != wanted and same_kernel:
            source_shape = tuple(tensor.shape)
            tensor = adapt_first_conv(tensor, wanted[1])
            report.adapted.append(f"{name}: {source_shape} -> {tuple(wanted)} (input channels)")
        if tensor.shape != wanted:
            mis_shaped.append(f"{name} (file {tuple(tensor.shape)}, model {tuple(wanted)})")
            continue
        to_load[name] = tensor
    missing = [k for k in own if k not in to_load and not k.endswith("num_batches_tracked") and k not in mapped]
    report.initialised = [k for k in missing if k.startswith("adapters.")]
    missing = [k for k in missing if not k.startswith("adapters.")]
    if missing or unexpected or mis_shaped or unusable:
        problems = [
            f"{title} ({len(keys)}): {_names(keys)}"
            for title, keys in (
                ("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped), ("unusable", unusable)
            )
            if keys
        ]  # fmt: skip
        where = f" under the prefix {prefix!r}" if prefix else ""
        hint = model.mismatch_hint(missing, unexpected)
        if hint:
            problems.append(f"hint: {hint}")
        raise WeightsMismatchError(
            f"checkpoint {source} does not fit {type(model).__name__}{where} (the model is unchanged):\n  "
            + "\n  ".join(problems)
        )
    _copy_atomically(model, own, to_load, source)
    report.loaded = len(to_load)
    model.pretrained_report = report
    _logger.info("%s", report)
    return report
