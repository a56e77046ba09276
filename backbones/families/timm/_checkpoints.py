"""How timm checkpoints map onto a ``timm:`` model's body, strictly.

timm's own files are for the whole model (head included) and name modules as the full model does; a
``features_only`` body renames them (``FeatureListNet`` joins nested names with ``_``: ``features.conv0`` ->
``features_conv0``; ``FeatureGetterNet`` holds the model under ``model.``) and drops the head and the levels after
the last one. The mapping is read off timm's full model, built once on the meta device: a key of the full model
that the body has is renamed, one it does not have (the head, unbuilt levels) is dropped and reported, and
anything else is unexpected, refused like a wrong key of any family. timm's checkpoint filter for the architecture
(old key names, resized position embeddings and patch kernels) is applied to whole-model files first.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, NamedTuple, Optional, Set

import torch
from torch import Tensor, nn

from ...weights import WeightsMismatchError

__all__ = ["TimmNames", "body_key", "first_conv_of", "timm_names", "translate_timm_checkpoint"]

_NOT_FOR_THE_FULL_MODEL = ("features_only", "out_indices", "feature_cls", "flatten_sequential")


class TimmNames(NamedTuple):
    """timm's full model (meta device); its keys -> the body's; all its keys; the body's keys."""

    full: Any
    renamed: Dict[str, str]
    full_keys: Set[str]
    body_keys: Set[str]


def timm_names(model_name: str, timm_kwargs: Dict[str, Any], body: nn.Module) -> TimmNames:
    """Build timm's full model on the meta device with the body's options and map its keys onto the body's."""
    import timm

    with torch.device("meta"):
        options = {k: v for k, v in timm_kwargs.items() if k not in _NOT_FOR_THE_FULL_MODEL}
        full = timm.create_model(model_name, **options)
    body_keys = set(body.state_dict())
    by_form: Dict[str, List[str]] = {}
    for key in body_keys:
        by_form.setdefault(key.replace("_", "."), []).append(key)
    renamed = {}
    for key in full.state_dict():
        for form in (key.replace("_", "."), f"model.{key}".replace("_", ".")):
            if len(by_form.get(form, ())) == 1:  # an ambiguous form is left unmapped (reported as unexpected)
                renamed[key] = by_form[form][0]
                break
    return TimmNames(full, renamed, set(full.state_dict()), body_keys)


def translate_timm_checkpoint(state: Dict[str, Tensor], names: TimmNames, model_name: str) -> Dict[str, Tensor]:
    """``state`` through timm's checkpoint filter for the architecture when most of its keys are the full model's;
    anything else (our own layout, a features_only file, a foreign model) as it is."""
    if 2 * sum(key in names.full_keys for key in state) <= len(state):
        return state
    filter_fn = getattr(sys.modules.get(type(names.full).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return dict(filter_fn(dict(state), names.full))
    except Exception as error:  # a filter written for another checkpoint layout
        raise WeightsMismatchError(
            f"timm's checkpoint filter for {model_name} refuses this file ({type(error).__name__}: {error})"
        ) from error


def body_key(key: str, names: TimmNames) -> Optional[str]:
    """The TimmBackbone's name for a checkpoint key, ``None`` to drop it (see the module docstring)."""
    if key.startswith("body."):
        return key
    if key in names.body_keys:
        return f"body.{key}"
    if key in names.renamed:
        return f"body.{names.renamed[key]}"
    return None if key in names.full_keys else key


def first_conv_of(body: nn.Module, names: TimmNames) -> str:
    """timm's ``pretrained_cfg["first_conv"]`` as the module name in the TimmBackbone (``""`` when unknown)."""
    name = (getattr(body, "pretrained_cfg", None) or {}).get("first_conv")
    mapped = names.renamed.get(f"{name}.weight") if isinstance(name, str) else None
    return f"body.{mapped[: -len('.weight')]}" if mapped else ""
