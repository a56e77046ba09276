"""Which of the newer OCR encoders a checkpoint belongs to, by the key names only each of them has (the families'
``mismatch_hint``s name the right one when a file of one is given to another)."""

from __future__ import annotations

from typing import Sequence

__all__ = ["SIGNATURES", "new_ocr_family_hint"]

SIGNATURES = {
    "svtrv2": ("pope.patch_embed.", "an SVTRv2 (svtrv2_tiny, svtrv2_small or svtrv2_base)"),
    "pplcnetv3": ("dw_conv.conv_kxk.", "pplcnetv3_rec"),
    "pphgnetv2": ("stem.stem2a.", "pphgnetv2_b4_rec"),
}


def new_ocr_family_hint(unexpected: Sequence[str], own: str) -> str:
    """``""``, or which other family's checkpoint the ``unexpected`` keys come from."""
    for family, (fragment, name) in SIGNATURES.items():
        if family != own and any(fragment in key for key in unexpected):
            return f"the file looks like a checkpoint of {name}: build that instead"
    return ""
