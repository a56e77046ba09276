"""Text-recognition encoders: the classic ones (ResNet-45 of ABINet and ASTER, ResNet-31, FAN's ResNet, CRNN's VGG)
and today's (SVTRv2, PP-LCNetV3 and PP-HGNetV2-B4 as PP-OCRv5 uses them), one module each; importing this package
registers them."""

from .pphgnetv2 import PPHGNetV2
from .pplcnetv3 import PPLCNetV3
from .resnet31 import ResNet31OCR
from .resnet45 import ResNet45ABINet, ResNet45ASTER
from .resnet_fan import ResNetFAN
from .svtrv2 import SVTRv2
from .vgg_crnn import VGGCRNN

__all__ = ["VGGCRNN", "PPHGNetV2", "PPLCNetV3", "ResNet31OCR", "ResNet45ABINet", "ResNet45ASTER", "ResNetFAN", "SVTRv2"]
