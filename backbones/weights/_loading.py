"""Tensors go into a model: key layout detection, remapping, input-conv adaptation, strict checks, atomic copy.

The checkpoint may use torchvision's, timm's, an OCR or HMER project's or our own key names, and may be a whole
model (a recognizer, a Lightning module) of which the backbone is a part: the family first translates a whole
foreign layout (``Backbone.translate_checkpoint``: timm's full-model names), the prefix under which most keys match
is found and stripped, the family renames the rest key by key (``Backbone.checkpoint_key``), and then every tensor
of the model must be found with the right shape. Only three things are forgiven, and reported: the first conv's
input channels are adapted (summed over RGB for one channel, repeated and rescaled otherwise, as timm does),
adapters missing from the file keep their fresh initialisation, and tensors of stages this configuration does
not build (``out_indices``) or of a classifier head are ignored.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..core import Encoder, LoadReport, key_list
from ._files import read_state_dict, unwrap_container

__all__ = ["WeightsMismatchError", "adapt_first_conv", "copy_atomically", "load_outside", "load_weights"]

_logger = logging.getLogger(__name__)
_ADAPTERS = "adapters."


class WeightsMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model; the message lists the keys by name."""


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """``[O, C, kh, kw] -> [O, in_channels, kh, kw]``: summed over C for one channel (a gray image then gives
    the features of its C-fold repetition), else timm's repeat-and-rescale by ``C / in_channels``."""
    if in_channels == 1:
        return weight.double().sum(dim=1, keepdim=True).to(weight.dtype)
    from timm.models import adapt_input_conv  # imported when needed: timm costs ~0.3 s at import

    return adapt_input_conv(in_channels, weight.float(), base_chans=weight.shape[1]).to(weight.dtype)


def _model_key(model: Encoder, key: str) -> Optional[str]:
    """``model``'s state-dict name for a checkpoint key (prefix already stripped), or ``None`` to drop it."""
    if key.startswith(_ADAPTERS):
        return key
    prefix = model.key_prefix
    inner = key[len(prefix) :] if prefix and key.startswith(prefix) else key
    name = model.stage_backbone().checkpoint_key(inner)
    return None if name is None else prefix + name


def _best_prefix(keys: List[str], fits: Callable[[str], bool]) -> Tuple[str, int]:
    """The prefix (``""`` or ending in ``.``) under which the most keys ``fit`` (the shortest of equals), and how
    many: a whole model's ``encoder.model.``, a Lightning module's ``bttr.``, DDP's ``module.``."""
    scores: Dict[str, int] = defaultdict(int)
    for key in keys:
        parts = key.split(".")
        for cut in range(len(parts)):
            prefix = ".".join(parts[:cut]) + ("." if cut else "")
            if fits(key[len(prefix) :]):
                scores[prefix] += 1
    if not scores:
        return "", 0
    best = max(scores.values())
    return min((p for p, s in scores.items() if s == best), key=len), best


def _find_prefix(model: Encoder, keys: List[str], targets: Collection[str]) -> Tuple[str, int]:
    """The prefix under which the most keys map onto ``targets`` through the family's names."""
    return _best_prefix(keys, lambda key: _model_key(model, key) in targets)


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


def _checked_state(checkpoint: object, source: Optional[str]) -> Tuple[Dict[str, object], str]:
    """A path or a mapping as a flat state dict (training containers unwrapped, as for files), and its name."""
    if isinstance(checkpoint, Mapping):
        state = unwrap_container(checkpoint)
        bad = [repr(key) for key in state if not isinstance(key, str)]
        if bad:
            raise WeightsMismatchError(f"state dict keys must be strings, got {', '.join(bad[:5])}")
        return dict(state), source or "a state dict"
    if isinstance(checkpoint, (str, os.PathLike)):
        return dict(read_state_dict(checkpoint)), source or str(checkpoint)
    raise TypeError(
        f"checkpoint must be a file path (.pth/.pt/.ckpt/.safetensors) or a state dict (a mapping of names to "
        f"tensors), got {type(checkpoint).__name__}"
    )


@dataclass
class _Plan:
    """The checked tensors to copy, and what is wrong, by kind."""

    to_load: Dict[str, Tensor] = field(default_factory=dict)
    unexpected: List[str] = field(default_factory=list)
    mis_shaped: List[str] = field(default_factory=list)
    unusable: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)

    def problems(self) -> List[str]:
        """One line per kind of problem, with the keys."""
        kinds = (("missing", self.missing), ("unexpected", self.unexpected), ("mis-shaped", self.mis_shaped),
                 ("unusable", self.unusable))  # fmt: skip
        return [f"{title} ({len(keys)}): {key_list(keys)}" for title, keys in kinds if keys]


def _map_keys(model: Encoder, state: Dict[str, object], prefix: str, report: LoadReport) -> Dict[str, object]:
    mapped: Dict[str, object] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            report.outside_prefix += 1
            continue
        name = _model_key(model, key[len(prefix) :])
        if name is None:
            report.ignored.append(key[len(prefix) :])
            continue
        report.renamed += name != key[len(prefix) :]
        mapped[name] = value
    return mapped


def _plan(
    own: Dict[str, Tensor],
    mapped: Dict[str, object],
    report: LoadReport,
    first_conv: str = "",
    reference: Collection[str] = (),
) -> _Plan:
    """Check every mapped tensor against the model's (``own``): the ones to copy, and what is wrong. The first conv's
    input channels are adapted; names outside ``own`` but in ``reference`` (unbuilt stages) are ignored, the other
    ones unexpected; the model's tensors absent from ``mapped`` are missing."""
    plan = _Plan()
    for name, tensor in mapped.items():
        if name not in own:
            if isinstance(tensor, Tensor):
                (report.ignored if name in reference else plan.unexpected).append(name)
            continue
        problem = _tensor_problem(tensor, own[name])
        if problem is not None or not isinstance(tensor, Tensor):
            plan.unusable.append(f"{name} ({problem})")
            continue
        wanted = own[name].shape
        same_kernel = tensor.dim() == 4 and tensor.shape[0] == wanted[0] and tensor.shape[2:] == wanted[2:]
        if name == first_conv and tensor.shape != wanted and same_kernel:
            source_shape = tuple(tensor.shape)
            tensor = adapt_first_conv(tensor, wanted[1])
            report.adapted.append(f"{name}: {source_shape} -> {tuple(wanted)} (input channels)")
        if tensor.shape != wanted:
            plan.mis_shaped.append(f"{name} (file {tuple(tensor.shape)}, model {tuple(wanted)})")
            continue
        plan.to_load[name] = tensor
    plan.missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    return plan


def _refusal(model: Encoder, plan: _Plan, source: str, prefix: str) -> Optional[WeightsMismatchError]:
    problems = plan.problems()
    if not problems:
        return None
    strip = model.key_prefix
    hint = model.stage_backbone().mismatch_hint(
        [k[len(strip) :] for k in plan.missing],
        [k[len(strip) :] for k in plan.unexpected],
        [k[len(strip) :] for k in plan.mis_shaped],
    )
    if hint:
        problems.append(f"hint: {hint}")
    where = f" under the prefix {prefix!r}" if prefix else ""
    return WeightsMismatchError(
        f"checkpoint {source} does not fit {type(model.stage_backbone()).__name__}{where} (the model is "
        f"unchanged):\n  " + "\n  ".join(problems)
    )


def copy_atomically(model: nn.Module, to_load: Mapping[str, Tensor], source: str) -> None:
    """``load_state_dict(to_load, strict=False)`` of checked tensors; if it fails part-way, every tensor it touched
    gets its old value back."""
    own = model.state_dict()
    backup = {name: own[name].detach().clone() for name in to_load}
    try:
        result = model.load_state_dict(dict(to_load), strict=False)
    except Exception as error:
        with torch.no_grad():
            for name, value in backup.items():
                own[name].copy_(value)
        raise WeightsMismatchError(f"loading {source} failed ({error}); the model was left as it was") from error
    if result.unexpected_keys:
        raise RuntimeError(f"unexpected keys after validation: {result.unexpected_keys}")


def _nothing_matches(model: Encoder, keys: List[str], own: List[str], source: str) -> WeightsMismatchError:
    backbone = model.stage_backbone()
    hint = backbone.mismatch_hint([], keys, [])
    return WeightsMismatchError(
        f"no tensor of {source} matches a parameter of {type(backbone).__name__}: the file has keys like "
        f"{key_list(keys[:5])}; the model expects keys like {key_list(own[:5])}" + (f"\n  hint: {hint}" if hint else "")
    )


def load_weights(
    model: Encoder,
    checkpoint: Union[str, os.PathLike, Mapping[str, Tensor]],
    *,
    source: Optional[str] = None,
) -> LoadReport:
    """Load a checkpoint into ``model`` strictly and atomically, in any supported key layout.

    Every tensor is checked (name, dense layout, device, dtype kind, shape) before anything is copied; a
    load that fails for any reason leaves the model bit-identical to before.

    Args:
        model: a :class:`~backbones.Backbone` or ``FeaturePyramid`` (its family renames foreign layouts).
        checkpoint: a file path (``.pth``/``.pt``/``.ckpt``/``.safetensors``) or a state dict; training
            containers (``state_dict``, ``model``, ...) are unwrapped, a whole model's prefix stripped.
        source: how the report names the checkpoint.

    Returns:
        A :class:`LoadReport`; also stored as ``model.pretrained_report`` (and ``model.preprocess`` becomes
        ``None``: a file does not say how to normalise the input).

    Raises:
        WeightsMismatchError: missing, unexpected, mis-shaped or unusable tensors, listed by name.
    """
    if not isinstance(model, Encoder):
        raise TypeError(f"model must be a backbones.Backbone or FeaturePyramid, got {type(model).__name__}")
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source must be a string (how reports name the checkpoint), got {source!r}")
    state, source = _checked_state(checkpoint, source)
    backbone = model.stage_backbone()
    state = backbone.translate_checkpoint(state)
    own = model.state_dict()
    reference = set(own) | {model.key_prefix + key for key in backbone.unbuilt_keys()}
    prefix, score = _find_prefix(model, list(state), reference)
    if score == 0:
        raise _nothing_matches(model, list(state), list(own), source)
    report = LoadReport(source=source, prefix=prefix)
    first_conv = model.key_prefix + backbone.input_conv() + ".weight"
    plan = _plan(own, _map_keys(model, state, prefix, report), report, first_conv, reference)
    report.initialised = [k for k in plan.missing if k.startswith(_ADAPTERS)]
    plan.missing = [k for k in plan.missing if not k.startswith(_ADAPTERS)]
    refusal = _refusal(model, plan, source, prefix)
    if refusal is not None:
        raise refusal
    copy_atomically(model, plan.to_load, source)
    report.loaded = len(plan.to_load)
    model.record_weights(report, None)
    _logger.info("%s", report)
    return report


def load_outside(
    model: nn.Module,
    checkpoint: Union[str, os.PathLike, Mapping[str, Tensor]],
    paths: Union[str, Sequence[str]],
    *,
    source: Optional[str] = None,
) -> LoadReport:
    """Load a whole-model checkpoint into ``model`` except the tensors under ``paths`` (a swapped encoder's, under
    every name the model holds it): every other tensor of ``model`` must be in it with its shape (strict), the
    checkpoint's tensors under ``paths`` are listed as ``dropped``, and a failure leaves the model bit-identical. The
    prefix under which the checkpoint holds the model (Lightning's attribute, ``model.``, ``module.``) is found by
    matching the model's own keys.

    Raises:
        WeightsMismatchError: missing, unexpected, mis-shaped or unusable tensors, listed by name.
    """
    state, source = _checked_state(checkpoint, source)
    inside = tuple(f"{path}." for path in ([paths] if isinstance(paths, str) else paths))
    rest = {key: value for key, value in model.state_dict().items() if not key.startswith(inside)}
    prefix, score = _best_prefix(list(state), lambda key: key in rest or key.startswith(inside))
    if score == 0:
        raise WeightsMismatchError(
            f"no tensor of {source} matches {type(model).__name__}: the file has keys like "
            f"{key_list(list(state)[:5])}; the model has keys like {key_list(list(rest)[:5])}"
        )
    report = LoadReport(source=source, prefix=prefix)
    mapped: Dict[str, object] = {}
    for key, tensor in state.items():
        name = key[len(prefix) :]
        if not key.startswith(prefix):
            report.outside_prefix += 1
        elif name.startswith(inside):
            report.dropped.append(name)
        else:
            mapped[name] = tensor
    plan = _plan(rest, mapped, report)
    problems = plan.problems()
    if problems:
        where = f" under the prefix {prefix!r}" if prefix else ""
        outside = ", ".join(path[:-1] for path in inside)
        raise WeightsMismatchError(
            f"checkpoint {source} does not fit {type(model).__name__} outside {outside}{where} (the model is "
            f"unchanged):\n  " + "\n  ".join(problems)
        )
    copy_atomically(model, plan.to_load, source)
    report.loaded = len(plan.to_load)
    return report
