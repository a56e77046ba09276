"""The registered families, one module each (the OCR encoders in ``ocr/``, timm's models in ``timm/``); importing
this package registers them."""

from .densenet import DenseNet
from .densenet_hmer import DenseNetHMER
from .ocr import VGGCRNN, PPHGNetV2, PPLCNetV3, ResNet31OCR, ResNet45ABINet, ResNet45ASTER, ResNetFAN, SVTRv2
from .resnet import ResNet
from .timm import TimmBackbone

__all__ = [
    "VGGCRNN",
    "DenseNet",
    "DenseNetHMER",
    "PPHGNetV2",
    "PPLCNetV3",
    "ResNet",
    "ResNet31OCR",
    "ResNet45ABINet",
    "ResNet45ASTER",
    "ResNetFAN",
    "SVTRv2",
    "TimmBackbone",
]
