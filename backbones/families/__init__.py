"""The registered families, one module each; importing this package registers them."""

from . import densenet, densenet_hmer, resnet, timm
from .densenet import DenseNet
from .densenet_hmer import DenseNetHMER
from .resnet import ResNet
from .timm import TimmBackbone

__all__ = ["DenseNet", "DenseNetHMER", "ResNet", "TimmBackbone", "densenet", "densenet_hmer", "resnet", "timm"]
