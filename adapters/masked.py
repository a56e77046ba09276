"""``MaskedEncoder``: ``feature, mask = encoder(image, mask)``, the call of BTTR/CoMER-style models (it lives with the
swap's other call-convention wrappers, ``backbones.swapping``)."""

from backbones.swapping import MaskedEncoder

__all__ = ["MaskedEncoder"]
