"""The registered families, one module each; importing this package registers them."""

from .densenet import DenseNet
from .densenet_hmer import DenseNetHMER
from .pphgnetv2 import PPHGNetV2
from .pplcnetv3 import PPLCNetV3
from .resnet import ResNet
from .resnet31 import ResNet31OCR
from .resnet45 import ResNet45ABINet, ResNet45ASTER
from .resnet_fan import ResNetFAN
from .svtrv2 import SVTRv2
from .timm import TimmBackbone
from .vgg_crnn import VGGCRNN

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
