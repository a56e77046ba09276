"""``timm:<name>``: any timm model that supports ``features_only`` (:class:`TimmBackbone`).

Importing this package registers the ``timm`` namespace: ``get_entry("timm:convnext_atto")`` resolves through it,
``list_backbones("timm:conv*")`` lists timm's names. timm itself is imported when a name is resolved.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Dict, List, Optional

from ...registry import BackboneEntry, UnknownBackboneError, register_namespace
from ...weights import TimmWeights
from ._backbone import TimmBackbone

__all__ = ["TimmBackbone"]


def _suggestions(model_name: str) -> List[str]:
    """timm names close to ``model_name``: the same letters and digits ignoring case and ``_``/``-``, then names
    it starts, then spelling neighbours."""
    import timm

    names = timm.list_models()
    folded: Dict[str, str] = {}
    for name in names:
        folded.setdefault(re.sub(r"[^a-z0-9]", "", name.lower()), name)
    key = re.sub(r"[^a-z0-9]", "", model_name.lower())
    exact = [folded[key]] if key in folded else []
    prefixed = [name for form, name in folded.items() if form.startswith(key) and key][:5]
    close = [folded[form] for form in difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)]
    return list(dict.fromkeys(exact + prefixed + close))[:5]


def _resolve(model_name: str) -> BackboneEntry:
    import timm

    if not timm.is_model(model_name):
        close = _suggestions(model_name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownBackboneError(f"unknown timm model {model_name!r}{hint} (`backbones list 'timm:*'` lists them)")
    architecture, _, tag = model_name.partition(".")  # "resnet18.a1_in1k": timm's weight tag in the name
    builder = functools.partial(TimmBackbone, model_name=model_name)
    description = f"timm's {model_name} (features_only)"
    weights = (TimmWeights(architecture, default=tag or None),)
    return BackboneEntry(f"timm:{model_name}", builder, "timm", None, description, weights)


def _list_names(pattern: Optional[str]) -> List[str]:
    import timm

    return timm.list_models(pattern or "*")


register_namespace("timm", _resolve, _list_names)
