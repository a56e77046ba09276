"""A careless user's calls: each gets a clear error naming the parameter, what is allowed and what was given."""

import numpy as np
import pytest
import torch
from backbones.adapters import MaskedEncoder, to_sequence
from PIL import Image

from backbones import build_backbone, build_on_meta, get_entry, load_weights, register_backbone, unregister_backbone

R18 = "resnet18"
BUILD = [
    # (name, options, error, message fragment)
    (R18, {"out_channels": "abc"}, TypeError, "out_channels must be an int, or one int per output"),
    (R18, {"out_channels": 0}, ValueError, "out_channels must be an int >= 1, got 0"),
    (R18, {"out_channels": (8, 16)}, ValueError, "out_channels must be an int unless out_indices is given"),
    (R18, {"out_channels": (8, 16, 32), "out_indices": (2, 3)}, ValueError, "one int per output (2 for"),
    (R18, {"out_channels": True}, TypeError, "out_channels must be an int, or one int per output"),
    (R18, {"out_channels": 2.5}, TypeError, "out_channels must be an int, or one int per output"),
    (R18, {"out_channels": (8, "x"), "out_indices": (2, 3)}, TypeError, "out_channels must be an int >= 1, got 'x'"),
    (R18, {"output_stride": 12}, ValueError, "output_stride must be one of 4, 8, 16, 32"),
    (R18, {"output_stride": (16, 16, 16)}, TypeError, "output_stride must be an int or a (h, w) tuple of two ints"),
    (R18, {"output_stride": -16}, ValueError, "output_stride must be >= 1, got -16"),
    (R18, {"output_stride": 16.0}, TypeError, "output_stride must be an int or a (h, w) tuple"),
    (R18, {"output_stride": True}, TypeError, "output_stride must be an int or a (h, w) tuple"),
    (R18, {"output_stride": (32, 2)}, ValueError, "output_stride must be one of 4, 8, 16, 32"),
    (R18, {"strides": "1222"}, TypeError, "strides must be a tuple or list, got '1222'"),
    (R18, {"strides": (1, 2, 2, 2, 2)}, ValueError, "strides must be a sequence of 4 per-stage strides"),
    (R18, {"strides": (1, 2, 2, "2")}, TypeError, "strides[3] must be an int or a (h, w) tuple"),
    (R18, {"strides": (1, 2, 2, 3)}, ValueError, "strides[3] must be 1 or 2 in each dimension"),
    (R18, {"strides": (1, 2, 2, (2, 2, 2))}, TypeError, "strides[3] must be an int or a (h, w) tuple of two ints"),
    (R18, {"dilate": "yes"}, TypeError, "dilate must be a bool (True or False), got 'yes'"),
    (R18, {"dilate": None}, TypeError, "dilate must be a bool (True or False), got None"),
    (R18, {"in_channels": 0}, ValueError, "in_channels must be an int >= 1, got 0"),
    (R18, {"in_channels": "3"}, TypeError, "in_channels must be an int >= 1, got '3'"),
    (R18, {"in_channels": True}, TypeError, "in_channels must be an int >= 1, got True"),
    (R18, {"in_channels": 1.5}, TypeError, "in_channels must be an int >= 1, got 1.5"),
    (R18, {"pretrained": 3}, TypeError, "pretrained must be a bool, a weight tag or a file path, got 3"),
    (R18, {"pretrained": {"a": 1}}, TypeError, "pretrained must be a bool, a weight tag or a file path"),
    (
        R18,
        {"pretrained": "imagenet"},
        ValueError,
        "one of the weight tags of resnet18: IMAGENET1K_V1, DEFAULT, a1_in1k",
    ),
    (R18, {"pretrained": {"conv1.weight": 1}}, TypeError, "got a state dict; build first, then load_weights(model, "),
    (
        R18,
        {"pretrained": "/nonexistent/r18.pth"},
        FileNotFoundError,
        "pretrained file '/nonexistent/r18.pth' does not exist",
    ),
    (R18, {"out_indices": 3}, TypeError, "out_indices must be a tuple or list, got 3"),
    (R18, {"out_indices": (1.0,)}, TypeError, "out_indices must be ints (stage indices)"),
    (R18, {"out_indices": (True,)}, TypeError, "out_indices must be ints (stage indices)"),
    (R18, {"out_indices": (9,)}, ValueError, "out_indices must hold stage indices in 0..4"),
    (R18, {"out_indices": (-6,)}, ValueError, "out_indices must hold stage indices in 0..4"),
    (R18, {"out_indices": (2, 2)}, ValueError, "out_indices must be strictly increasing"),
    (R18, {"out_indices": ()}, ValueError, "out_indices must name at least one stage, got ()"),
    (R18, {"frozen_stages": "all"}, TypeError, "frozen_stages must be an int >= -1, got 'all'"),
    (R18, {"frozen_stages": 9}, ValueError, "frozen_stages must be in -1..4"),
    (R18, {"frozen_stages": -2}, ValueError, "frozen_stages must be an int >= -1, got -2"),
    (R18, {"norm_eval": 1}, TypeError, "norm_eval must be a bool (True or False), got 1"),
    (R18, {"adapter": "linear"}, ValueError, "adapter must be one of conv, conv_bn, conv_bn_relu, got 'linear'"),
    (R18, {"adapter": None}, ValueError, "adapter must be one of conv, conv_bn, conv_bn_relu, got None"),
    (R18, {"drop_rate": 1.0}, ValueError, "drop_rate must be a float in [0, 1), got 1.0"),
    (R18, {"drop_rate": -0.1}, ValueError, "drop_rate must be a float in [0, 1), got -0.1"),
    (R18, {"drop_rate": "0.2"}, TypeError, "drop_rate must be a float in [0, 1), got '0.2'"),
    (R18, {"stem": "cifar10"}, ValueError, "stem must be one of imagenet, cifar, got 'cifar10'"),
    (R18, {"stem": None}, ValueError, "stem must be one of imagenet, cifar, got None"),
    (R18, {"zero_init_residual": "no"}, TypeError, "zero_init_residual must be a bool (True or False), got 'no'"),
    (R18, {"growth_rate": 12}, TypeError, "unknown option(s) growth_rate; the resnet family takes stem"),
    (R18, {"in_chans": 1}, TypeError, "unknown option(s) in_chans"),
    (R18, {"stemm": "cifar"}, TypeError, "unknown option(s) stemm; the resnet family takes stem, zero_init_residual"),
    ("densenet121", {"memory_efficient": "true"}, TypeError, "memory_efficient must be a bool (True or False)"),
    ("densenet121", {"stem": "cifar"}, TypeError, "unknown option(s) stem; the densenet family takes memory_efficient"),
    ("densenet121", {"output_stride": 64}, ValueError, "output_stride must be one of 4, 8, 16, 32"),
    ("densenet_hmer", {"output_stride": 32}, ValueError, "output_stride must be one of 4, 8, 16"),
    ("densenet_hmer", {"growth_rate": 0}, ValueError, "growth_rate must be an int >= 1, got 0"),
    ("densenet_hmer", {"growth_rate": 24.0}, TypeError, "growth_rate must be an int >= 1, got 24.0"),
    ("densenet_hmer", {"block_layers": (16, 0)}, ValueError, "block_layers must be a non-empty tuple of ints >= 1"),
    ("densenet_hmer", {"block_layers": 16}, TypeError, "block_layers must be a non-empty tuple of ints >= 1"),
    ("densenet_hmer", {"block_layers": ()}, ValueError, "block_layers must be a non-empty tuple of ints >= 1, got ()"),
    ("densenet_hmer", {"reduction": 0}, ValueError, "reduction must be a float in (0, 1], got 0"),
    ("densenet_hmer", {"reduction": 1.5}, ValueError, "reduction must be a float in (0, 1], got 1.5"),
    ("densenet_hmer", {"bottleneck": "yes"}, TypeError, "bottleneck must be a bool (True or False), got 'yes'"),
    ("densenet_hmer", {"stem_norm": 1}, TypeError, "stem_norm must be a bool (True or False), got 1"),
    ("densenet_hmer", {"post_norm": None}, TypeError, "post_norm must be a bool (True or False), got None"),
    ("densenet_hmer", {"pretrained": True}, ValueError, "densenet_hmer has no published ImageNet weights"),
    ("resnet5", {}, KeyError, "unknown backbone name 'resnet5'; did you mean resnet50"),
    ("RESNET18", {}, KeyError, "did you mean resnet18"),
    (" resnet18 ", {}, KeyError, "did you mean resnet18"),
    ("resnet-50", {}, KeyError, "did you mean resnet50"),
    ("densenet", {}, KeyError, "did you mean densenet121"),
    ("", {}, KeyError, "unknown backbone name ''"),
    ("nowhere:resnet18", {}, KeyError, "unknown namespace 'nowhere:' in 'nowhere:resnet18'; namespaces: timm:"),
    ("timm:resnet_18", {}, KeyError, "unknown timm model 'resnet_18'; did you mean"),
    ("timm:resnet18", {"strides": (1, 1, 2)}, ValueError, "strides must be a sequence of 4 per-stage strides"),
    ("timm:resnet18", {"output_stride": (16, 8), "strides": (2, 2, 2, 1)}, ValueError, "pass only one of them"),
    ("timm:vit_tiny_patch16_224", {"output_stride": 8}, ValueError, "works at one stride, its patch (16)"),
    ("timm:resnet18", {"no_such_timm_option": 1}, ValueError, "timm:resnet18 does not accept"),
    (None, {}, TypeError, "name must be a string such as 'resnet50'"),
    (50, {}, TypeError, "name must be a string such as 'resnet50'"),
]


@pytest.mark.parametrize("name, options, error, message", BUILD, ids=[f"{b[0]}-{list(b[1])}" for b in BUILD])
def test_bad_build_call(name, options, error, message):
    with pytest.raises(error) as caught:
        build_backbone(name, **options)
    assert message in str(caught.value)


@pytest.fixture(scope="module")
def encoders():
    """Input checks run before any computation: meta-device encoders serve."""
    return {name: build_on_meta(name, in_channels=1) for name in ("resnet18", "densenet121", "densenet_hmer")}


def _tensor(dtype, shape=(1, 1, 32, 32)):
    return torch.zeros(shape, dtype=dtype)


FORWARD = [
    (np.zeros((1, 1, 32, 32), dtype=np.float32), TypeError, "input must be a torch.Tensor [N, 1, H, W], got ndarray"),
    (None, TypeError, "input must be a torch.Tensor [N, 1, H, W], got NoneType"),
    ([[0.0]], TypeError, "input must be a torch.Tensor [N, 1, H, W], got list"),
    (Image.new("L", (32, 32)), TypeError, "input must be a torch.Tensor [N, 1, H, W], got Image"),
    (3.0, TypeError, "input must be a torch.Tensor [N, 1, H, W], got float"),
    (_tensor(torch.uint8), TypeError, "got dtype torch.uint8; for uint8 images use x.float() / 255"),
    (_tensor(torch.int64), TypeError, "input must be a floating tensor, got dtype torch.int64"),
    (_tensor(torch.bool), TypeError, "input must be a floating tensor, got dtype torch.bool"),
    (_tensor(torch.float16), TypeError, "input dtype torch.float16 differs from the weights' torch.float32"),
    (_tensor(torch.bfloat16), TypeError, "encoder.to(torch.bfloat16)), or run under torch.autocast"),
    (_tensor(torch.float64), TypeError, "input dtype torch.float64 differs from the weights' torch.float32"),
    (torch.zeros(1, 32, 32), ValueError, "input must be a 4-D tensor [N, 1, H, W], got shape [1, 32, 32]"),
    (torch.zeros(1, 1, 1, 32, 32), ValueError, "input must be a 4-D tensor [N, 1, H, W], got shape [1, 1, 1, 32, 32]"),
    (torch.zeros(1, 3, 32, 32), ValueError, "build the backbone with in_channels=3 for such input"),
    (torch.zeros(1, 1, 0, 32), ValueError, "input H and W must be >= min_input_size=1, got shape [1, 1, 0, 32]"),
]


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "densenet_hmer"])
@pytest.mark.parametrize("x, error, message", FORWARD, ids=[f"forward{i}" for i in range(len(FORWARD))])
def test_bad_forward_input(encoders, name, x, error, message):
    with pytest.raises(error) as caught:
        encoders[name](x)
    assert message in str(caught.value)


def test_autocast_inputs_are_accepted():
    encoder = build_backbone("resnet18", out_channels=8).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder(torch.zeros(1, 3, 33, 47, dtype=torch.bfloat16)).shape == (1, 8, 2, 2)
    assert encoder.double()(torch.zeros(1, 3, 33, 47, dtype=torch.float64)).dtype == torch.float64


MASKS = [
    (
        np.zeros((1, 32, 32), dtype=bool),
        TypeError,
        "mask must be a torch.Tensor [N, H, W] or [N, 1, H, W], got ndarray",
    ),
    (None, TypeError, "mask must be a torch.Tensor [N, H, W] or [N, 1, H, W], got NoneType"),
    (torch.zeros(32, 32), ValueError, "mask must be [N, H, W] or [N, 1, H, W], got shape [32, 32]"),
    (torch.zeros(1, 2, 32, 32), ValueError, "mask must be [N, H, W] or [N, 1, H, W], got shape [1, 2, 32, 32]"),
    (torch.zeros(1, 1, 1, 32, 32), ValueError, "got shape [1, 1, 1, 32, 32]"),
    (torch.zeros(1, 32, 32, dtype=torch.complex64), TypeError, "mask must be bool, integer or floating"),
]


@pytest.mark.parametrize("mask, error, message", MASKS, ids=[f"mask{i}" for i in range(len(MASKS))])
def test_bad_mask_for_downsample_mask_and_the_masked_encoder(encoders, mask, error, message):
    with pytest.raises(error) as caught:
        encoders["resnet18"].downsample_mask(mask)
    assert message in str(caught.value)
    with pytest.raises(error) as caught:
        MaskedEncoder(encoders["resnet18"])(torch.zeros(1, 1, 32, 32), mask)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "image, mask, message",
    [
        (
            torch.zeros(1, 32, 32),
            torch.zeros(1, 32, 32, dtype=torch.bool),
            "the image must be a 4-D tensor [N, C, H, W], got shape [1, 32, 32]",
        ),
        (
            torch.zeros(2, 1, 32, 32),
            torch.zeros(1, 32, 32, dtype=torch.bool),
            "mask must match the image's batch and size, got mask shape [1, 32, 32]",
        ),
        (
            torch.zeros(1, 1, 32, 32),
            torch.zeros(1, 1, 32, 31),
            "got mask shape [1, 1, 32, 31] for image shape [1, 1, 32, 32]",
        ),
    ],
)
def test_masked_encoder_names_the_real_problem(encoders, image, mask, message):
    with pytest.raises(ValueError) as caught:
        MaskedEncoder(encoders["resnet18"])(image, mask)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e: e.output_size(0, 10), ValueError, "height must be an int >= 1, got 0"),
        (lambda e: e.output_size(10, "10"), TypeError, "width must be an int >= 1, got '10'"),
        (lambda e: e.output_size(10, 2.5), TypeError, "width must be an int >= 1, got 2.5"),
        (lambda e: e.output_size(True, 10), TypeError, "height must be an int"),
        (lambda e: MaskedEncoder(build_on_meta(R18, out_indices=(1, 2))), TypeError, "a FeaturePyramid has one grid"),
        (lambda e: MaskedEncoder(torch.nn.Conv2d(1, 1, 1)), TypeError, "got Conv2d"),
        (
            lambda e: to_sequence(torch.zeros(1, 4, 2, 3), torch.zeros(1, 2, 2, dtype=torch.bool)),
            ValueError,
            "feature's batch and size",
        ),
        (lambda e: register_backbone("bad:name"), ValueError, "name must be a non-empty string without ':'"),
        (lambda e: register_backbone(" padded"), ValueError, "or surrounding spaces"),
        (lambda e: unregister_backbone("never_registered"), KeyError, "cannot unregister 'never_registered'"),
        (lambda e: get_entry(["resnet18"]), TypeError, "name must be a string"),
    ],
)
def test_other_bad_calls(encoders, call, error, message):
    with pytest.raises(error) as caught:
        call(encoders["resnet18"])
    assert message in str(caught.value)


def _files(tmp_path):
    state = build_backbone(R18).state_dict()
    torch.save(state, tmp_path / "real.pth")
    files = {
        "empty.safetensors": b"",
        "garbage.safetensors": b"\x00\x01not a safetensors file at all" * 3,
        "garbage.pth": b"this is not a pickle",
        "truncated.pth": (tmp_path / "real.pth").read_bytes()[:5000],
        "pth_renamed.safetensors": (tmp_path / "real.pth").read_bytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save([1, 2, 3], tmp_path / "a_list.pth")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    (tmp_path / "folder.pth").mkdir()
    return tmp_path


LOADS = [
    (lambda d: 123, TypeError, "checkpoint must be a file path (.pth/.pt/.ckpt/.safetensors) or a state dict"),
    (lambda d: None, TypeError, "checkpoint must be a file path"),
    (lambda d: [1, 2], TypeError, "checkpoint must be a file path"),
    (lambda d: str(d / "folder.pth"), ValueError, "is a directory, not a checkpoint file"),
    (lambda d: str(d / "missing.pth"), FileNotFoundError, "does not exist"),
    (lambda d: str(d / "empty.safetensors"), ValueError, "is empty (0 bytes)"),
    (lambda d: str(d / "garbage.safetensors"), ValueError, "is not a readable safetensors file"),
    (
        lambda d: str(d / "pth_renamed.safetensors"),
        ValueError,
        "it is a zip archive, as torch.save writes: rename it to .pth",
    ),
    (lambda d: str(d / "garbage.pth"), ValueError, "cannot be read with torch.load(weights_only=True)"),
    (lambda d: str(d / "truncated.pth"), ValueError, "cannot be read with torch.load(weights_only=True)"),
    (lambda d: str(d / "a_list.pth"), ValueError, "holds a list, not a state dict"),
    (lambda d: str(d / "no_tensors.pth"), ValueError, "holds no tensors"),
    (lambda d: {1: torch.zeros(1)}, ValueError, "state dict keys must be strings, got 1"),
    (lambda d: {"conv1.weight": [1.0, 2.0]}, ValueError, "conv1.weight (a list, not a tensor)"),
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """A resnet18 and a folder of broken checkpoints, shared: a refused load leaves the model as it was."""
    return build_backbone(R18), _files(tmp_path_factory.mktemp("checkpoints"))


@pytest.mark.parametrize("checkpoint, error, message", LOADS, ids=[f"load{i}" for i in range(len(LOADS))])
def test_bad_load_weights_call(bad_files, checkpoint, error, message):
    model, folder = bad_files
    with pytest.raises(error) as caught:
        load_weights(model, checkpoint(folder))
    assert message in str(caught.value)


def test_bad_load_weights_options():
    model = build_backbone(R18)
    with pytest.raises(TypeError, match="source must be a string"):
        load_weights(model, model.state_dict(), source=5)
    with pytest.raises(TypeError, match="model must be a backbones.Backbone or FeaturePyramid, got Conv2d"):
        load_weights(torch.nn.Conv2d(1, 1, 1), {})
