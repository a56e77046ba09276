"""The contract arithmetic, input and mask checks, and stride planning, each against an independent computation
(exact fractions, index selection, the planning rules stated as properties). Fast: what the mutation run executes
for every mutant of ``backbones/core/_contract.py`` and ``_strides.py`` (benchmarks/README.md)."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backbones.core import (
    InputLimits,
    allowed_output_strides,
    ceil_div,
    check_input,
    check_input_size,
    check_mask,
    crop_to_ceil_grid,
    downsample_mask,
    output_size,
    padding_on_grid,
    plan_strides,
    size_problem,
    slice_mask,
)
from backbones.core._strides import _format_allowed

SIZES = st.integers(1, 500)
STRIDES = st.integers(1, 64)


def exact_ceil(a: int, b: int) -> int:
    return math.ceil(Fraction(a, b))


def cells(mask: torch.Tensor, stride) -> torch.Tensor:
    """The mask's cells at multiples of the stride, by index selection."""
    rows, columns = torch.arange(0, mask.shape[-2], stride[0]), torch.arange(0, mask.shape[-1], stride[1])
    return mask.index_select(mask.dim() - 2, rows).index_select(mask.dim() - 1, columns)


@given(st.integers(0, 10**7), STRIDES)
def test_ceil_div_is_the_exact_ceiling(a, b):
    assert ceil_div(a, b) == exact_ceil(a, b)


@given(SIZES, SIZES, STRIDES, STRIDES)
def test_output_size_is_the_ceil_grid_per_axis(h, w, sh, sw):
    assert output_size(h, w, (sh, sw)) == (exact_ceil(h, sh), exact_ceil(w, sw))


def test_input_limits_bounds_and_text():
    assert InputLimits().bounds() == [1, 0, 0] and str(InputLimits()) == "input H, W >= 1"
    limits = InputLimits(3, (40, 50), (2, 4), "why")
    assert limits.bounds() == [3, 40, 50]
    assert str(limits) == "input H, W >= 3, H <= 40, W <= 50; padded inside to multiples of 2x4"


@given(st.integers(1, 9), st.integers(10, 60), st.integers(10, 60))
def test_size_problem_at_every_boundary(low, high_h, high_w):
    bounds = [low, high_h, high_w]
    small, large = f"input H and W must be >= min_input_size={low}", f"must be <= {high_h} and W <= {high_w}"
    assert size_problem(low, low, bounds) == "" and size_problem(high_h, high_w, bounds) == ""
    assert size_problem(low - 1, low, bounds) == small and size_problem(low, low - 1, bounds) == small
    assert size_problem(high_h + 1, low, bounds) == f"input H {large} (max_input_size)"
    assert size_problem(low, high_w + 1, bounds) == f"input H {large} (max_input_size)"
    assert size_problem(10**6, 10**6, [low, 0, 0]) == ""


def _check(x, channels=3, weights=None, bounds=(1, 0, 0), reason=""):
    weights = torch.empty(0) if weights is None else weights
    check_input(x, channels, weights, list(bounds), reason)


@pytest.mark.parametrize(
    "x, kwargs, error, message",
    [
        ([1.0], {}, TypeError, "input must be a torch.Tensor [N, 3, H, W], got list"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), {}, TypeError, "for uint8 images use x.float() / 255"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.float64), {}, TypeError, "differs from the weights' torch.float32"),
        (torch.zeros(3, 4, 4), {}, ValueError, "input must be a 4-D tensor [N, 3, H, W], got shape [3, 4, 4]"),
        (torch.zeros(1, 2, 4, 4), {}, ValueError, "build the backbone with in_channels=2"),
        (torch.zeros(1, 3, 4, 4), {"bounds": (5, 0, 0), "reason": "; because"}, ValueError,
         "input H and W must be >= min_input_size=5, got shape [1, 3, 4, 4]; because"),
        (torch.zeros(1, 3, 4, 9), {"bounds": (1, 8, 8)}, ValueError, "input H must be <= 8 and W <= 8"),
        (torch.zeros(1, 3, 4, 4, device="meta"), {}, ValueError, "input is on meta but the model is on cpu"),
    ],
)  # fmt: skip
def test_each_input_check_alone(x, kwargs, error, message):
    with pytest.raises(error) as caught:
        _check(x, **kwargs)
    assert message in str(caught.value)


def test_inputs_that_pass_and_autocast_lets_the_dtype_differ():
    _check(torch.zeros(2, 3, 5, 7))
    _check(torch.zeros(2, 3, 8, 8), bounds=(8, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _check(torch.zeros(1, 3, 4, 4), weights=torch.empty(0, dtype=torch.bfloat16))


def test_check_input_size_names_the_axis():
    limits = InputLimits(2, (10, 20))
    check_input_size(10, 20, limits)
    for args, message in [((1, 5), "height must be an int >= 2, got 1"), ((5, 1), "width must be an int >= 2"),
                          ((11, 5), "height must be <= 10 (max_input_size), got 11"),
                          ((5, 21), "width must be <= 20 (max_input_size), got 21")]:  # fmt: skip
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_input_size(*args, limits)
    check_input_size(10**5, 10**5, InputLimits(2))


@pytest.mark.parametrize(
    "mask, image, error, message",
    [
        ([[0]], None, TypeError, "mask must be a torch.Tensor [N, H, W] or [N, 1, H, W], got list"),
        (torch.zeros(4, 4), None, ValueError, "mask must be [N, H, W] or [N, 1, H, W], got shape [4, 4]"),
        (torch.zeros(1, 2, 4, 4), None, ValueError, "got shape [1, 2, 4, 4]"),
        (torch.zeros(1, 1, 1, 4, 4), None, ValueError, "got shape [1, 1, 1, 4, 4]"),
        (torch.zeros(1, 4, 4, dtype=torch.complex64), None, TypeError, "mask must be bool, integer or floating"),
        (torch.zeros(1, 4, 4), "image", TypeError, "the image must be a torch.Tensor [N, C, H, W], got str"),
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), ValueError, "the image must be a 4-D tensor"),
        (torch.zeros(2, 4, 4), torch.zeros(1, 3, 4, 4), ValueError, "mask must match the image's batch and size"),
        (torch.zeros(1, 5, 4), torch.zeros(1, 3, 4, 4), ValueError, "got mask shape [1, 5, 4] for image shape"),
        (torch.zeros(1, 4, 5), torch.zeros(1, 3, 4, 4), ValueError, "got mask shape [1, 4, 5]"),
    ],
)
def test_each_mask_check_alone(mask, image, error, message):
    with pytest.raises(error) as caught:
        check_mask(mask, image)
    assert message in str(caught.value)


def test_valid_masks_come_back_as_they_are_and_the_grid_is_named():
    for mask in (torch.zeros(2, 4, 6, dtype=torch.bool), torch.ones(2, 1, 4, 6), torch.zeros(2, 4, 6).long()):
        assert check_mask(mask, torch.zeros(2, 3, 4, 6)) is mask and check_mask(mask) is mask
    with pytest.raises(ValueError, match="mask must match the feature's batch and size"):
        check_mask(torch.zeros(1, 4, 4), torch.zeros(2, 8, 4, 4), grid="feature")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9))
def test_mask_slicing_and_downsampling_are_index_selection(h, w, sh, sw):
    padding = torch.rand(2, h, w) > 0.5
    valid = torch.rand(2, 1, h, w).round()
    for mask in (padding, valid, padding.long()):
        for result in (slice_mask(mask, [sh, sw]), downsample_mask(mask, (sh, sw))):
            assert result.dtype == mask.dtype and torch.equal(result, cells(mask, (sh, sw)))
    assert torch.equal(padding_on_grid(padding, [sh, sw]), cells(padding, (sh, sw)))
    assert torch.equal(padding_on_grid(valid, [sh, sw]), cells(valid, (sh, sw))[:, 0] == 0)
    with pytest.raises(ValueError, match="mask must be"):
        downsample_mask(torch.zeros(h, w), (sh, sw))


def test_padding_on_grid_thresholds_float_masks_at_one_half_and_counts_any_integer_as_padding():
    valid = torch.tensor([0.0, 0.49, 0.5, 1.0]).reshape(1, 1, 1, 4)
    assert padding_on_grid(valid, [1, 1]).tolist() == [[[True, True, False, False]]]
    padding = torch.tensor([0, 1, 2, -1]).reshape(1, 1, 4)
    assert padding_on_grid(padding, [1, 1]).tolist() == [[[False, True, True, True]]]


@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 6), st.integers(1, 6), st.integers(0, 3))
def test_crop_to_ceil_grid_keeps_exactly_the_ceil_grid(h, w, sh, sw, extra):
    rows, columns = exact_ceil(h, sh), exact_ceil(w, sw)
    x = torch.randn(1, 2, rows + extra, columns + extra)
    cropped = crop_to_ceil_grid(x, h, w, [sh, sw])
    assert cropped.shape == (1, 2, rows, columns) and torch.equal(cropped, x[:, :, :rows, :columns])


RESNET = ((1, 1), (2, 2), (2, 2), (2, 2))


def test_allowed_output_strides_and_their_text():
    assert allowed_output_strides((4, 4), RESNET) == ((4, 8, 16, 32), (4, 8, 16, 32))
    line = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))
    assert allowed_output_strides((1, 1), line) == ((1, 2, 4, 8, 16, 32), (1, 2, 4))
    assert _format_allowed(((4, 8), (4, 8))) == "4, 8 (or an (sh, sw) tuple of those)"
    assert _format_allowed(((1, 2), (1, 4))) == "(sh, sw) with sh in (1, 2) and sw in (1, 4)"


NATIVES = st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from([1, 2])), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(1, 4), st.integers(1, 4)), NATIVES, st.booleans(), st.data())
def test_a_planned_target_keeps_a_prefix_of_strides_and_dilates_by_what_it_removed(stem, natives, dilate, data):
    """Per axis: the target is reached; the kept strides are the first ones (removal goes from the last); each
    stage's output stride is the stem times the kept strides so far; with dilate, a stage's dilation is the product of
    the strides removed up to it and its first layer keeps the previous stage's."""
    reachable = allowed_output_strides(stem, natives)
    target = (data.draw(st.sampled_from(reachable[0])), data.draw(st.sampled_from(reachable[1])))
    plan = plan_strides(stem, natives, output_stride=target, dilate=dilate)
    assert plan.output_stride == target and plan.stem_stride == stem and len(plan.stages) == len(natives)
    for axis in (0, 1):
        kept = [stage.stride[axis] == native[axis] for stage, native in zip(plan.stages, natives) if native[axis] > 1]
        assert kept == sorted(kept, reverse=True)
        total, removed, previous = stem[axis], 1, 1
        for stage, native in zip(plan.stages, natives):
            assert stage.stride[axis] in (1, native[axis])
            total *= stage.stride[axis]
            removed *= native[axis] // stage.stride[axis]
            assert stage.output_stride[axis] == total
            assert stage.dilation[axis] == (removed if dilate else 1)
            assert stage.first_dilation[axis] == (previous if dilate else 1)
            previous = stage.dilation[axis]


def test_explicit_strides_native_plan_and_the_refusals():
    assert plan_strides(4, RESNET).output_stride == (32, 32)
    assert plan_strides((2, 3), []).output_stride == (2, 3)
    plan = plan_strides(4, RESNET, strides=(1, (2, 1), 2, [1, 2]))
    assert [s.stride for s in plan.stages] == [(1, 1), (2, 1), (2, 2), (1, 2)] and plan.output_stride == (16, 16)
    assert plan_strides(4, RESNET, strides=(1, 2, 2, 1), output_stride=16).output_stride == (16, 16)
    refusals = [
        ({"strides": (1, 2, 2)}, "strides must be a sequence of 4 per-stage strides (stages after the stem, native "
         "(1, 2, 2, 2)), got (1, 2, 2)"),
        ({"strides": "1222"}, "strides must be a sequence of 4"),
        ({"strides": (1, 2, 2, 4)}, "strides[3] must be 1 or 2 in each dimension (the native stride of that stage "
         "is 2"),
        ({"strides": (2, 2, 2, 2)}, "strides[0] must be 1 in each dimension (the native stride of that stage is 1"),
        ({"strides": (1, 2, 2, (1, 3))}, "strides[3] must be 1 or 2"),
        ({"output_stride": 12}, "output_stride must be one of 4, 8, 16, 32 (or an (sh, sw) tuple of those) for this "
         "backbone (strides can only be removed, last first), got 12"),
        ({"output_stride": (8, 64)}, "got (8, 64)"),
        ({"strides": (1, 2, 2, 2), "output_stride": 16}, "output_stride=16 disagrees with strides=(1, 2, 2, 2), which "
         "give (32, 32); pass only one of them"),
    ]  # fmt: skip
    for kwargs, message in refusals:
        with pytest.raises(ValueError) as caught:
            plan_strides(4, RESNET, **kwargs)
        assert message in str(caught.value), (kwargs, str(caught.value))
    with pytest.raises(TypeError, match=r"strides\[3\] must be an int or a \(h, w\) tuple of ints, got '2'"):
        plan_strides(4, RESNET, strides=(1, 2, 2, "2"))
    anisotropic = plan_strides(1, ((2, 1), (2, 2)), strides=((2, 1), (1, 2)))
    assert [s.stride for s in anisotropic.stages] == [(2, 1), (1, 2)]
    with pytest.raises(ValueError, match=r"strides\[0\] must be 1 in each dimension \(the native stride of that stage "
                       r"is \(2, 1\)"):  # fmt: skip
        plan_strides(1, ((2, 1), (2, 2)), strides=((2, 2), 1))
