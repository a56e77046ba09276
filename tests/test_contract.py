"""The shape contract (README, "The contract") on every registered backbone and configuration."""

import math

import pytest
import torch
from conftest import HEAVY, LIGHT, built, meta_built, reduced_stride

from backbones import list_backbones
from backbones.testing import assert_contract, odd_sizes

# Sizes that exercise the rounding: 1, just below/above the stride, and odd in-between values.
REAL_SIZES = [(1, 3), (31, 33), (45, 17), (66, 97)]


def grid(names):
    for name in names:
        for output_stride in (reduced_stride(name, 1), reduced_stride(name, 2), reduced_stride(name, 4)):
            if output_stride[0] * output_stride[1] < 16:  # real forwards that dense are slow; the meta tests cover them
                continue
            for in_channels in (1, 3):
                for out_channels in (None, 684):
                    yield pytest.param(
                        name,
                        output_stride,
                        in_channels,
                        out_channels,
                        id=f"{name}-os{output_stride[0]}x{output_stride[1]}-in{in_channels}-out{out_channels}",
                    )


def heavy_grid():
    for name in sorted(HEAVY):
        yield pytest.param(name, (16, 16), 1, 684, id=f"{name}-os16x16-in1-out684", marks=pytest.mark.slow)


@pytest.mark.parametrize("name, output_stride, in_channels, out_channels", [*grid(LIGHT), *heavy_grid()])
def test_forward_shape_matches_contract(name, output_stride, in_channels, out_channels):
    encoder = built(name, output_stride=output_stride, in_channels=in_channels, out_channels=out_channels)
    assert encoder.output_stride == output_stride
    assert encoder.in_channels == in_channels
    expected_channels = out_channels or encoder.feature_info[-1].channels
    assert encoder.out_channels == expected_channels
    for h, w in REAL_SIZES:
        with torch.no_grad():
            y = encoder(torch.randn(2, in_channels, h, w))
        expected = (2, expected_channels, math.ceil(h / output_stride[0]), math.ceil(w / output_stride[1]))
        assert tuple(y.shape) == expected, (h, w)
        assert encoder.output_size(h, w) == expected[2:]
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", LIGHT)
def test_contract_over_many_odd_sizes(name):
    """Seeded sweep over formula-image sizes, forward on the meta device (shapes only)."""
    encoder = meta_built(name, output_stride=reduced_stride(name), out_channels=684)
    assert_contract(encoder, odd_sizes(30, low=(1, 1), high=(320, 1800), seed=1))


@pytest.mark.parametrize("name", list_backbones())
def test_feature_info_tells_the_truth(name):
    """Every stage's recorded channels and stride against its real output (meta device: shapes only)."""
    encoder = meta_built(name, out_indices=tuple(range(meta_built(name).num_stages + 1)))
    outputs = encoder(torch.empty(1, encoder.in_channels, 37, 45, device="meta"))
    assert len(outputs) == len(encoder.feature_info)
    for output, info in zip(outputs, encoder.feature_info):
        assert output.shape[1] == info.channels, info
        assert tuple(output.shape[2:]) == (math.ceil(37 / info.stride[0]), math.ceil(45 / info.stride[1])), info
        for module in info.modules:
            encoder.backbone.get_submodule(module)


@pytest.mark.parametrize("name", LIGHT)
def test_backward_reaches_every_parameter(name):
    encoder = built(name, output_stride=reduced_stride(name), out_channels=32).train()
    encoder(torch.randn(2, encoder.in_channels, 35, 51)).square().mean().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None]
    assert not missing


def test_readme_example():
    from backbones import build_backbone

    encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1).eval()
    with torch.no_grad():
        y = encoder(torch.randn(4, 1, 128, 316))
    assert tuple(y.shape) == (4, 684, 8, 20)
    assert encoder.output_size(128, 316) == (8, 20)
