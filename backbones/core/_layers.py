"""The layers the core and every family share: the 1x1 projection adapter, weight initialisation, and the stride
and dilation helpers (ceil pooling is in ``_pooling``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import nn

from ._contract import Pair
from ._pooling import CeilPool2d
from ._validate import check_choice, check_int

__all__ = ["ADAPTER_KINDS", "Projection", "dilate_3x3_convs", "init_conv_weights", "stride_of"]


def init_conv_weights(model: nn.Module, mode: Literal["fan_in", "fan_out"] = "fan_out") -> None:
    """He initialisation of every conv of ``model``: ``fan_out`` as torchvision's ResNets (and the OCR and HMER
    projects), ``fan_in`` as its DenseNets. BatchNorms keep their construction values (weight 1, bias 0). Meta
    weights (``build_on_meta``) have no values to set."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")


def stride_of(*modules: nn.Module) -> Pair:
    """Total ``(sh, sw)`` downsampling of ``modules`` run one after the other (their convs and pools)."""
    total = (1, 1)
    for module in modules:
        stride = module.stride if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, CeilPool2d)) else 1
        pair = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
        total = (total[0] * pair[0], total[1] * pair[1])
    return total


def dilate_3x3_convs(module: nn.Module, dilation: Pair) -> None:
    """Dilate every 3x3 stride-1 conv inside ``module`` in place, keeping its output size."""
    if dilation == (1, 1):
        return
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1):
            conv.dilation = dilation
            conv.padding = dilation


ADAPTER_KINDS = ("conv", "conv_bn", "conv_bn_relu")


class Projection(nn.Sequential):
    """The 1x1 adapter ``[N, in_channels, H, W] -> [N, out_channels, H, W]`` that ``out_channels=`` attaches.

    Args:
        in_channels: channels of the incoming feature map.
        out_channels: channels wanted.
        kind: ``"conv"`` (1x1 conv with bias), ``"conv_bn"`` (conv without bias, then BatchNorm;
            the default, what the seeds added after ResNet-50) or ``"conv_bn_relu"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "conv_bn") -> None:
        check_choice(kind, "adapter", ADAPTER_KINDS)
        check_int(in_channels, "in_channels", 1)
        check_int(out_channels, "out_channels", 1)
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=kind == "conv")
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv)
        if kind != "conv":
            layers["bn"] = nn.BatchNorm2d(out_channels)
        if kind == "conv_bn_relu":
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = kind
