"""Registry: listing, user families with the whole contract, duplicate names."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from backbones import Backbone, BackboneConfig, SequentialBackbone, build_backbone, list_backbones, register_backbone
from backbones.contract import FeatureInfo
from backbones.layers import CeilMaxPool2d
from backbones.testing import assert_contract, odd_sizes

EXPECTED = {
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "densenet_hmer",
}


def test_list_backbones():
    assert EXPECTED <= set(list_backbones())
    assert list_backbones("resnext*") == ["resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d"]
    assert list_backbones("nothing*") == []


class TinyCNN(SequentialBackbone):
    """A user family: conv stem, then stages that each halve the size with a ceil max pool."""

    def __init__(self, config: BackboneConfig, *, width: int) -> None:
        super().__init__(config)
        plan = config.plan(2, [(2, 2), (2, 2)])
        layers = OrderedDict(stem=nn.Conv2d(config.in_channels, width, 3, 2, 1), relu=nn.ReLU())
        stages = [FeatureInfo("stem", 0, width, plan.stem_stride, modules=("features.stem",))]
        for i, stage in enumerate(plan.stages, start=1):
            layers[f"stage{i}"] = nn.Sequential(
                CeilMaxPool2d(stage.stride), nn.Conv2d(width, width, 3, padding=stage.dilation, dilation=stage.dilation)
            )
            stages.append(
                FeatureInfo(f"stage{i}", i, width, stage.output_stride, stage.dilation, (f"features.stage{i}",))
            )
        self.set_features(layers, ["relu", "stage1", "stage2"])
        self.finish(stages, num_stages=2)


@register_backbone("test_tiny_cnn", family="tiny")
def tiny_cnn(config: BackboneConfig, *, width: int = 8) -> Backbone:
    return TinyCNN(config, width=width)


def test_user_family_gets_the_contract():
    encoder = build_backbone("test_tiny_cnn", out_channels=5, output_stride=(4, 8), in_channels=2, width=6)
    assert encoder.out_channels == 5 and encoder.output_stride == (4, 8)
    assert_contract(encoder, odd_sizes(10, low=(1, 1), high=(90, 90)), device="cpu")
    with pytest.raises(TypeError, match="the tiny family takes width"):
        build_backbone("test_tiny_cnn", depth=3)
    with pytest.raises(ValueError, match="output_stride must be one of 2, 4, 8"):
        build_backbone("test_tiny_cnn", output_stride=16)
    scripted = torch.jit.script(encoder.eval())
    assert scripted(torch.randn(1, 2, 17, 33)).shape == (1, 5, 5, 5)


def test_duplicate_name_is_refused():
    with pytest.raises(ValueError, match="a backbone named 'resnet50' is already registered"):
        register_backbone("resnet50")(tiny_cnn)
    with pytest.raises(ValueError, match="name must be a non-empty string without ':'"):
        register_backbone("timm:x")
