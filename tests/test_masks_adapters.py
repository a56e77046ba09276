"""Masks on the output grid, MaskedEncoder, Projection, sequences and positional encoding."""

import math

import pytest
import torch
from backbones.adapters import MaskedEncoder, SinePositionalEncoding2D, from_sequence, to_sequence, valid_mask
from conftest import built, padding_on_grid
from hypothesis import given, settings
from hypothesis import strategies as st

from backbones import build_on_meta
from backbones.core import Projection


def padded_batch(sizes, channels=1):
    """Zero-padded images and both mask conventions, as HMER data loaders build them."""
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    images = torch.zeros(len(sizes), channels, h, w)
    pad = torch.ones(len(sizes), h, w, dtype=torch.bool)
    for i, (hi, wi) in enumerate(sizes):
        images[i, :, :hi, :wi] = torch.rand(channels, hi, wi)
        pad[i, :hi, :wi] = False
    return images, pad, (~pad).float()[:, None]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 90), st.integers(1, 200)), min_size=1, max_size=4),
    st.sampled_from([4, 8, 16, 32]),
)
def test_downsample_mask_of_a_padded_batch_follows_the_image_sizes(resnet18_by_stride, sizes, output_stride):
    """A cell is padding exactly when its top-left pixel lies outside the image, for both conventions and dtypes."""
    encoder = resnet18_by_stride[output_stride]
    _, pad, valid = padded_batch(sizes)
    grid = (math.ceil(pad.shape[1] / output_stride), math.ceil(pad.shape[2] / output_stride))
    expected = padding_on_grid(sizes, grid, (output_stride, output_stride))
    out_pad, out_valid = encoder.downsample_mask(pad), encoder.downsample_mask(valid)
    assert out_pad.dtype == torch.bool and out_valid.dtype == torch.float32
    assert torch.equal(out_pad, expected) and torch.equal(out_valid, (~expected).float()[:, None])
    assert tuple(out_pad.shape[1:]) == encoder.output_size(pad.shape[1], pad.shape[2])
    assert torch.equal(encoder.downsample_mask(pad.long()), expected.long())


@pytest.fixture(scope="module")
def resnet18_by_stride():
    """Masks need no weights: meta-device encoders."""
    return {s: build_on_meta("resnet18", output_stride=s) for s in (4, 8, 16, 32)}


@pytest.mark.parametrize("name", ["resnet34", "densenet_hmer"])
def test_masked_encoder_matches_hmer_call(name):
    encoder = MaskedEncoder(built(name, in_channels=1, output_stride=16, out_channels=64))
    images, pad, valid = padded_batch([(37, 101), (54, 46), (20, 130)])
    with torch.no_grad():
        feature, mask = encoder(images, pad)
        _, float_mask = encoder(images, valid)
    assert tuple(feature.shape) == (3, 64, math.ceil(54 / 16), math.ceil(130 / 16))
    expected = padding_on_grid([(37, 101), (54, 46), (20, 130)], feature.shape[2:], (16, 16))
    assert torch.equal(mask, expected) and torch.equal(float_mask, (~expected).float()[:, None])
    scripted = torch.jit.script(encoder)
    with torch.no_grad():
        assert torch.equal(scripted(images, pad)[1], mask)


def test_masked_encoder_errors():
    encoder = MaskedEncoder(built("resnet18", in_channels=1))
    with pytest.raises(ValueError, match=r"mask must match the image's batch and size, got mask shape \[2, 30, 30\]"):
        encoder(torch.zeros(2, 1, 32, 32), torch.zeros(2, 30, 30, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be \[N, H, W\] or \[N, 1, H, W\], got shape \[2, 3, 32, 32\]"):
        encoder(torch.zeros(2, 1, 32, 32), torch.zeros(2, 3, 32, 32))
    with pytest.raises(TypeError, match="single-output backbone"):
        MaskedEncoder(built("resnet18", out_indices=(2, 3)))


@pytest.mark.parametrize(
    "kind, children", [("conv", ["conv"]), ("conv_bn", ["conv", "bn"]), ("conv_bn_relu", ["conv", "bn", "relu"])]
)
def test_projection_kinds(kind, children):
    projection = Projection(2048, 684, kind)
    assert [name for name, _ in projection.named_children()] == children
    assert (projection.conv.bias is not None) == (kind == "conv")
    assert tuple(projection(torch.randn(2, 2048, 3, 5)).shape) == (2, 684, 3, 5)
    encoder = built("resnet18", out_channels=684, adapter=kind)
    assert isinstance(encoder.adapters[0], Projection) and encoder.adapters[0].kind == kind


def test_projection_errors():
    with pytest.raises(ValueError, match="adapter must be one of conv, conv_bn, conv_bn_relu, got 'linear'"):
        Projection(8, 8, "linear")
    with pytest.raises(ValueError, match="out_channels must be an int >= 1, got 0"):
        Projection(8, 0)


def test_no_adapter_without_out_channels():
    encoder = built("resnet18")
    assert not any(isinstance(m, Projection) for m in encoder.modules())
    assert encoder.out_channels == 512


def test_sequence_round_trip_and_masks():
    feature = torch.randn(2, 16, 3, 5)
    pad = torch.rand(2, 3, 5) > 0.5
    sequence, flat = to_sequence(feature, pad)
    assert tuple(sequence.shape) == (2, 15, 16) and tuple(flat.shape) == (2, 15)
    assert torch.equal(sequence[1, 7], feature[1, :, 1, 2]) and flat[1, 7] == pad[1, 1, 2]
    assert torch.equal(from_sequence(sequence, 3, 5), feature)
    _, flat_valid = to_sequence(feature, (~pad).float()[:, None])
    assert torch.equal(flat_valid, (~flat).float())
    with pytest.raises(ValueError, match=r"mask must match the feature.s batch and size, got mask shape \[2, 2, 5\]"):
        to_sequence(feature, pad[:, :2])


def test_positional_encoding_ignores_padding():
    encoding = SinePositionalEncoding2D(32)
    feature = torch.randn(2, 8, 4, 6)
    pad = torch.zeros(2, 4, 6, dtype=torch.bool)
    pad[1, :, 3:] = True  # second image is 3 columns wide
    pos = encoding(feature, pad)
    assert tuple(pos.shape) == (2, 32, 4, 6)
    alone = encoding(feature[1:, :, :, :3], pad[1:, :, :3])
    torch.testing.assert_close(pos[1, :, :, :3], alone[0], atol=1e-6, rtol=0)  # same positions on the valid part
    float_valid = encoding(feature, (~pad).float()[:, None])
    torch.testing.assert_close(float_valid, pos, atol=0, rtol=0)
    assert torch.equal(valid_mask(pad), ~pad)
    # y half varies only along H, x half only along W
    assert torch.allclose(pos[0, :16, :, 0], pos[0, :16, :, 5]) and torch.allclose(pos[0, 16:, 0], pos[0, 16:, 3])
    with pytest.raises(ValueError, match="channels must be a positive multiple of 4, got 30"):
        SinePositionalEncoding2D(30)
