"""The shape contract (docs/contract.md) on every registered backbone and configuration."""

import math

import pytest
import torch
from conftest import HEAVY, LIGHT, built, meta_built, reduced_stride

from backbones import list_backbones
from backbones.core import meta_call
from backbones.testing import assert_contract, odd_sizes

# Sizes that exercise the rounding: 1, just below/above the stride, and odd in-between values.
SIZES = [(1, 3), (31, 33), (45, 17), (66, 97)]


def grid(names):
    """Each name at up to three output strides; the input and output channels touch only the first conv and the
    adapter, so the two channel pairs take turns over the strides (both at the one stride of a single-stride name)."""
    pairs = [(1, 684), (3, None)]
    for name in names:
        strides = list(dict.fromkeys(reduced_stride(name, factor) for factor in (1, 2, 4)))
        if len(strides) > 1:
            configs = [(stride, pairs[i % 2]) for i, stride in enumerate(strides)]
        else:
            configs = [(strides[0], pair) for pair in pairs]
        for output_stride, (in_channels, out_channels) in configs:
            yield pytest.param(
                name,
                output_stride,
                in_channels,
                out_channels,
                id=f"{name}-os{output_stride[0]}x{output_stride[1]}-in{in_channels}-out{out_channels}",
            )


def heavy_grid():
    for name in sorted(HEAVY):
        yield pytest.param(name, (16, 16), 1, 684, id=f"{name}-os16x16-in1-out684")


@pytest.mark.parametrize("name, output_stride, in_channels, out_channels", [*grid(LIGHT), *heavy_grid()])
def test_every_configuration_keeps_the_contract(name, output_stride, in_channels, out_channels):
    """Meta device: the attributes asked for, and forward == output_size == the ceil grid with the masks' cells."""
    encoder = meta_built(name, output_stride=output_stride, in_channels=in_channels, out_channels=out_channels)
    assert encoder.output_stride == output_stride
    assert encoder.in_channels == in_channels
    assert encoder.out_channels == (out_channels or encoder.feature_info[-1].channels)
    assert_contract(encoder, SIZES, batch=2)


@pytest.mark.parametrize("name", LIGHT)
def test_contract_over_many_odd_sizes(name):
    """Seeded sweep over formula-image sizes, forward on the meta device (shapes only)."""
    encoder = meta_built(name, output_stride=reduced_stride(name), out_channels=684)
    assert_contract(encoder, odd_sizes(16, low=(1, 1), high=(320, 1800), seed=1))


@pytest.mark.parametrize("name", list_backbones())
def test_feature_info_tells_the_truth(name):
    """Every stage's recorded channels and stride against its real output (meta device: shapes only)."""
    encoder = meta_built(name, out_indices=tuple(range(meta_built(name).num_stages + 1)))
    outputs = meta_call(encoder, "forward", torch.empty(1, encoder.in_channels, 37, 45, device="meta"))
    assert len(outputs) == len(encoder.feature_info)
    for output, info in zip(outputs, encoder.feature_info):
        assert output.shape[1] == info.channels, info
        assert tuple(output.shape[2:]) == (math.ceil(37 / info.stride[0]), math.ceil(45 / info.stride[1])), info
        for module in info.modules:
            encoder.backbone.get_submodule(module)


@pytest.mark.parametrize("name", LIGHT)
def test_backward_reaches_every_parameter(name):
    """The one real forward per family here: finite outputs and a finite gradient on every parameter."""
    encoder = built(name, output_stride=reduced_stride(name), out_channels=32).train()
    y = encoder(torch.randn(2, encoder.in_channels, 35, 51))
    assert tuple(y.shape[2:]) == encoder.output_size(35, 51) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_readme_example():
    from backbones import build_backbone

    encoder = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1).eval()
    with torch.no_grad():
        y = encoder(torch.randn(4, 1, 128, 316))
    assert tuple(y.shape) == (4, 684, 8, 20)
    assert encoder.output_size(128, 316) == (8, 20)
