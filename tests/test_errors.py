"""Bad input gets a clear error naming the parameter, the allowed values and what was given."""

import pytest
import torch
from conftest import built

from backbones import build_backbone


def test_unknown_name_suggests_closest():
    with pytest.raises(KeyError) as info:
        build_backbone("resnet5")
    message = str(info.value)
    assert "unknown backbone name 'resnet5'" in message and "did you mean" in message and "resnet50" in message


def test_unknown_family_option_is_refused_by_name():
    with pytest.raises(TypeError, match=r"unknown option\(s\) stemm; the resnet family takes stem, zero_init_residual"):
        build_backbone("resnet18", stemm="cifar")
    with pytest.raises(TypeError, match="unknown option.*growth_rate"):
        build_backbone("resnet18", growth_rate=12)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"in_channels": 0}, ValueError, "in_channels must be an int >= 1, got 0"),
        ({"in_channels": 1.5}, TypeError, "in_channels must be an int >= 1, got 1.5"),
        ({"out_channels": -3}, ValueError, "out_channels must be an int >= 1, got -3"),
        ({"out_channels": (8, 16)}, ValueError, "out_channels must be an int unless out_indices is given"),
        ({"adapter": "mlp"}, ValueError, "adapter must be one of conv, conv_bn, conv_bn_relu, got 'mlp'"),
        ({"frozen_stages": 5}, ValueError, "frozen_stages must be in -1..4"),
        ({"frozen_stages": -2}, ValueError, "frozen_stages must be an int >= -1, got -2"),
        ({"norm_eval": "yes"}, TypeError, "norm_eval must be a bool"),
        ({"drop_rate": 1.5}, ValueError, "drop_rate must be a float in [0, 1), got 1.5"),
        ({"out_indices": (5,)}, ValueError, "out_indices must hold stage indices in 0..4"),
        ({"out_indices": (3, 2)}, ValueError, "out_indices must be strictly increasing"),
        ({"out_indices": ()}, ValueError, "out_indices must name at least one stage"),
        ({"out_indices": 3}, TypeError, "out_indices must be a tuple or list, got 3"),
        ({"out_indices": (2, 3), "out_channels": (8, 16, 32)}, ValueError, "one int per output (2 for"),
        ({"stem": "tiny"}, ValueError, "stem must be one of imagenet, cifar, got 'tiny'"),
        ({"pretrained": "weights.pth"}, FileNotFoundError, "pretrained file 'weights.pth' does not exist"),
        (
            {"pretrained": "imagenet"},
            ValueError,
            "or one of the weight tags of resnet18: IMAGENET1K_V1, DEFAULT, a1_in1k",
        ),
    ],
)
def test_bad_build_arguments(kwargs, error, message):
    with pytest.raises(error) as info:
        build_backbone("resnet18", **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"growth_rate": 0}, "growth_rate must be a positive int, got 0"),
        ({"block_layers": ()}, "block_layers must be a non-empty tuple of positive ints"),
        ({"reduction": 1.5}, "reduction must be a float in (0, 1], got 1.5"),
    ],
)
def test_bad_hmer_options(kwargs, message):
    with pytest.raises(ValueError) as info:
        build_backbone("densenet_hmer", **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 128, 316), "input must be a 4-D tensor [N, 1, H, W], got shape [1, 128, 316]"),
        ((2, 3, 64, 64), "input must have 1 channels ([N, 1, H, W]), got shape [2, 3, 64, 64]"),
        ((1, 1, 0, 64), "input H and W must be >= min_input_size=1, got shape [1, 1, 0, 64]"),
    ],
)
@pytest.mark.parametrize("name", ["resnet18", "densenet121", "densenet_hmer"])
def test_bad_input_tensor(name, shape, message):
    encoder = built(name, in_channels=1)
    with pytest.raises(ValueError) as info:
        encoder(torch.randn(shape))
    assert message in str(info.value)


def test_bad_output_size_arguments():
    encoder = built("resnet18")
    with pytest.raises(ValueError, match="height must be an int >= min_input_size=1, got 0"):
        encoder.output_size(0, 10)
    with pytest.raises(ValueError, match="width must be an int"):
        encoder.output_size(10, 2.5)


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.zeros(2, 3, 8, 8), "mask must be [N, H, W] or [N, 1, H, W], got shape [2, 3, 8, 8]"),
        (torch.zeros(8, 8), "mask must be [N, H, W] or [N, 1, H, W], got shape [8, 8]"),
    ],
)
def test_bad_mask(mask, message):
    with pytest.raises(ValueError) as info:
        built("resnet18").downsample_mask(mask)
    assert message in str(info.value)
