"""Stride planning: output_stride, explicit strides, anisotropic strides, dilation."""

import pytest
import torch
from conftest import built
from hypothesis import given, settings
from hypothesis import strategies as st

from backbones.core import plan_strides
from backbones.testing import assert_contract, odd_sizes

RESNET = ((1, 1), (2, 2), (2, 2), (2, 2))


@pytest.mark.parametrize(
    "output_stride, expected",
    [(32, (1, 2, 2, 2)), (16, (1, 2, 2, 1)), (8, (1, 2, 1, 1)), (4, (1, 1, 1, 1))],
)
def test_output_stride_removes_last_strides_first(output_stride, expected):
    plan = plan_strides(4, RESNET, output_stride=output_stride)
    assert [s.stride[0] for s in plan.stages] == list(expected)
    assert plan.output_stride == (output_stride, output_stride)


def test_anisotropic_output_stride():
    plan = plan_strides(4, RESNET, output_stride=(32, 4))
    assert [s.stride for s in plan.stages] == [(1, 1), (2, 1), (2, 1), (2, 1)]


@given(st.sampled_from([4, 8, 16, 32]), st.sampled_from([4, 8, 16, 32]), st.booleans())
def test_plan_reaches_every_allowed_target(sh, sw, dilate):
    plan = plan_strides(4, RESNET, output_stride=(sh, sw), dilate=dilate)
    assert plan.output_stride == (sh, sw)
    last = plan.stages[-1]
    # dilation makes up exactly for what was removed
    assert (sh * last.dilation[0], sw * last.dilation[1]) == ((32, 32) if dilate else (sh, sw))


def test_dilation_follows_torchvision_semantics():
    plan = plan_strides(4, RESNET, output_stride=8, dilate=True)
    assert [s.dilation for s in plan.stages] == [(1, 1), (1, 1), (2, 2), (4, 4)]
    assert [s.first_dilation for s in plan.stages] == [(1, 1), (1, 1), (1, 1), (2, 2)]


def test_explicit_strides_layer2_layout_of_the_seeds():
    encoder = built("resnet50", in_channels=1, strides=(1, 1, 2, 2), out_channels=684)
    assert encoder.output_stride == (16, 16)
    assert [info.stride for info in encoder.feature_info] == [(4, 4), (4, 4), (4, 4), (8, 8), (16, 16)]
    assert encoder.layer2[0].conv2.stride == (1, 1) and encoder.layer4[0].conv2.stride == (2, 2)
    with torch.no_grad():
        assert tuple(encoder(torch.randn(1, 1, 61, 93)).shape) == (1, 684, 4, 6)


def test_text_line_strides_resnet34():
    encoder = built("resnet34", strides=(1, (2, 1), (2, 1), (2, 1)))
    assert encoder.output_stride == (32, 4)
    with torch.no_grad():
        assert tuple(encoder(torch.randn(2, 3, 32, 100)).shape) == (2, 512, 1, 25)
    assert encoder.output_size(32, 100) == (1, 25)
    assert_contract(encoder, odd_sizes(10, low=(8, 8), high=(64, 400)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121", "densenet_hmer"])
def test_anisotropic_contract_every_family(name):
    strides = (1, (2, 1), (2, 1)) if name == "densenet_hmer" else (1, (2, 1), (2, 1), (2, 1))
    encoder = built(name, strides=strides, out_channels=64)
    assert_contract(encoder, [(1, 1), (31, 77), (64, 13)], device="cpu")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121", "densenet_hmer"])
def test_dilate_gives_same_shape_as_stride_removal(name):
    removed = built(name, output_stride=8)
    dilated = built(name, output_stride=8, dilate=True)
    dilated.load_state_dict(removed.state_dict())  # dilation keeps every tensor
    x = torch.randn(1, removed.in_channels, 45, 67)
    with torch.no_grad():
        assert removed(x).shape == dilated(x).shape
    assert dilated.feature_info[-1].dilation != (1, 1)


def receptive_field(encoder, size=(513, 33)):
    """Extent (rows) of the input that influences the centre output cell (a tall strip: rows are what is measured)."""
    x = torch.randn(1, encoder.in_channels, *size, generator=torch.Generator().manual_seed(0)).requires_grad_()
    y = encoder(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero()
    return int(rows.max() - rows.min() + 1)


def test_dilation_keeps_the_receptive_field():
    torch.manual_seed(0)
    native = built("resnet18")
    removed, dilated = built("resnet18", output_stride=8), built("resnet18", output_stride=8, dilate=True)
    for model in (removed, dilated):
        model.load_state_dict(native.state_dict())
    rf_native, rf_removed, rf_dilated = map(receptive_field, (native, removed, dilated))
    assert rf_native == rf_dilated == 435  # ResNet-18's published receptive field
    assert rf_removed < 0.6 * rf_native


def test_strides_and_agreeing_output_stride_are_accepted():
    assert built("resnet18", strides=(1, 2, 2, 1), output_stride=16).output_stride == (16, 16)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"output_stride": 12}, ValueError, "output_stride must be one of 4, 8, 16, 32"),
        ({"output_stride": 64}, ValueError, "got 64"),
        ({"output_stride": (16, 12)}, ValueError, "output_stride must be one of"),
        ({"output_stride": "16"}, TypeError, "output_stride must be an int or a (h, w) tuple"),
        ({"output_stride": 0}, ValueError, "output_stride must be >= 1, got 0"),
        ({"strides": (1, 2, 2)}, ValueError, "strides must be a sequence of 4 per-stage strides"),
        ({"strides": (1, 4, 2, 2)}, ValueError, "strides[1] must be 1 or 2 in each dimension"),
        ({"strides": (2, 2, 2, 2)}, ValueError, "strides[0] must be 1 in each dimension"),
        ({"strides": (1, (2, 3), 2, 2)}, ValueError, "strides[1] must be 1 or 2"),
        ({"strides": (1, 2, 2, 2), "output_stride": 16}, ValueError, "disagrees with strides"),
        ({"strides": 16}, TypeError, "strides must be a tuple or list, got 16"),
        ({"dilate": 1}, TypeError, "dilate must be a bool (True or False), got 1"),
    ],
)
def test_impossible_strides_are_refused(kwargs, error, message):
    with pytest.raises(error) as info:
        built("resnet18", **kwargs)
    assert message in str(info.value)


def test_hmer_strides_are_16_8_4():
    for output_stride in (16, 8, 4):
        assert built("densenet_hmer", output_stride=output_stride).output_stride == (output_stride,) * 2
    with pytest.raises(ValueError, match=r"output_stride must be one of 4, 8, 16 .*got 32"):
        built("densenet_hmer", output_stride=32)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.lists(st.sampled_from([1, 2, 3]), min_size=1, max_size=5), st.data())
def test_plan_is_consistent_for_any_family_layout(stem, native, data):
    """For any stem and native strides, every allowed target is reached exactly."""
    natives = [(s, s) for s in native]
    total = stem
    allowed = {stem}
    for s in native:
        total *= s
        allowed.add(total)
    target = data.draw(st.sampled_from(sorted(allowed)))
    plan = plan_strides(stem, natives, output_stride=target)
    assert plan.output_stride == (target, target)
    # removal goes from the last stage backwards: once a stride is removed, all later ones are too
    kept = [s.stride[0] == n for s, n in zip(plan.stages, native) if n > 1]
    assert kept == sorted(kept, reverse=True)
