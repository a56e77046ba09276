"""The 1x1 projection adapter that brings any backbone to the channel count a model expects."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

__all__ = ["ADAPTER_KINDS", "Projection"]

ADAPTER_KINDS = ("conv", "conv_bn", "conv_bn_relu")


class Projection(nn.Sequential):
    """1x1 convolution ``[N, in_channels, H, W] -> [N, out_channels, H, W]``.

    Args:
        in_channels: channels of the incoming feature map.
        out_channels: channels wanted.
        kind: ``"conv"`` (1x1 conv with bias), ``"conv_bn"`` (conv without bias, then BatchNorm;
            the default, what the seeds added after ResNet-50) or ``"conv_bn_relu"``.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "conv_bn") -> None:
        if kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter must be one of {', '.join(ADAPTER_KINDS)}, got {kind!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=kind == "conv")
        if kind != "conv":
            layers["bn"] = nn.BatchNorm2d(out_channels)
        if kind == "conv_bn_relu":
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kind = kind
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
