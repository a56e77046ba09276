"""Atomic loading (a failed load leaves the model bit-identical) and the contract over random configurations."""

import pytest
import torch
from conftest import LIGHT, padding_on_grid, reachable_strides
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbones import WeightsMismatchError, build_backbone, build_on_meta, load_weights
from backbones.core import meta_call


def _snapshot(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert set(after) == set(before)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, f"{len(changed)} tensors changed, e.g. {changed[:3]}"


def _broken(state, key, value):
    broken = {k: v.clone() for k, v in state.items()}
    broken[key] = value
    return broken


@pytest.fixture(scope="module")
def donor_state():
    torch.manual_seed(1)
    return build_backbone("resnet18").state_dict()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (
            lambda s: _broken(s, "layer4.1.conv2.weight", s["layer4.1.conv2.weight"].to_sparse()),
            "only dense tensors load",
        ),
        (lambda s: _broken(s, "layer4.1.bn2.weight", torch.empty(512, device="meta")), "on the meta device"),
        (
            lambda s: _broken(s, "layer3.0.conv1.weight", s["layer3.0.conv1.weight"].long()),
            "dtype torch.int64; a floating dtype",
        ),
        (lambda s: _broken(s, "layer4.1.bn2.num_batches_tracked", torch.tensor(1.5)), "an integer dtype is needed"),
        (lambda s: _broken(s, "layer4.1.bn2.bias", torch.zeros(7)), "mis-shaped (1): layer4.1.bn2.bias"),
        (lambda s: {k: v for k, v in s.items() if k != "layer4.1.bn2.bias"}, "missing (1): layer4.1.bn2.bias"),
        (lambda s: _broken(s, "layer4.1.extra.weight", torch.zeros(3)), "unexpected (1): layer4.1.extra.weight"),
        (lambda s: _broken(s, "layer4.1.bn2.weight", [1.0] * 512), "layer4.1.bn2.weight (a list, not a tensor)"),
    ],
)
def test_a_refused_checkpoint_changes_nothing(donor_state, corrupt, message):
    model = build_backbone("resnet18")
    before = _snapshot(model)
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(model, corrupt(donor_state))
    assert message in str(caught.value) and "the model is unchanged" in str(caught.value)
    _assert_unchanged(model, before)
    assert model.pretrained_report is None


def test_a_failure_half_way_through_the_copy_is_rolled_back(donor_state, monkeypatch):
    """The last module refuses its tensors after 120 others were already copied: all get their old values."""
    model = build_backbone("resnet18")
    before = _snapshot(model)

    def refuse(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(model.layer4[1].bn2, "_load_from_state_dict", refuse)
    with pytest.raises(WeightsMismatchError, match="failed \\(disk on fire\\); the model was left as it was"):
        load_weights(model, donor_state)
    _assert_unchanged(model, before)


def test_a_good_load_after_a_refused_one_loads_everything(donor_state):
    model = build_backbone("resnet18")
    with pytest.raises(WeightsMismatchError):
        load_weights(model, _broken(donor_state, "fc.weight", None) | {"conv1.weight": torch.zeros(1)})
    report = load_weights(model, donor_state)
    assert report.loaded == len(donor_state)
    _assert_unchanged(model, donor_state)


def test_half_tensors_for_a_float_model_are_cast_not_refused(donor_state):
    model = build_backbone("resnet18")
    load_weights(model, {k: v.half() if v.is_floating_point() else v for k, v in donor_state.items()})
    assert model.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.conv1.weight, donor_state["conv1.weight"].half().float())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(LIGHT),  # every family, its lighter names
    data=st.data(),
    dilate=st.booleans(),
    in_channels=st.integers(1, 4),
    out_channels=st.one_of(st.none(), st.integers(1, 700)),
    size=st.tuples(st.integers(1, 400), st.integers(1, 1800)),
    batch=st.integers(1, 3),
)
def test_random_valid_configurations_keep_the_contract(name, data, dilate, in_channels, out_channels, size, batch):
    """Meta device: forward == output_size == the ceil grid, and the mask of a padded image is padding exactly
    outside the image's cells. The output stride is drawn per axis from the strides the family's stages reach
    (removing the last first)."""
    reachable = reachable_strides(name)
    stride = (data.draw(st.sampled_from(reachable[0])), data.draw(st.sampled_from(reachable[1])))
    encoder = build_on_meta(
        name, output_stride=stride, dilate=dilate, in_channels=in_channels, out_channels=out_channels
    )
    h, w = size
    expected = (-(-h // stride[0]), -(-w // stride[1]))
    out = meta_call(encoder, "forward", torch.empty(batch, in_channels, h, w, device="meta"))
    assert encoder.output_stride == stride and encoder.output_size(h, w) == expected
    assert tuple(out.shape) == (batch, out_channels or encoder.feature_info[-1].channels, *expected)
    image = (data.draw(st.integers(1, h)), data.draw(st.integers(1, w)))  # the valid part of a padded canvas
    mask = torch.ones(batch, h, w, dtype=torch.bool)
    mask[:, : image[0], : image[1]] = False
    wanted = padding_on_grid([image] * batch, expected, stride)
    assert torch.equal(encoder.downsample_mask(mask), wanted)
    assert torch.equal(encoder.downsample_mask((~mask).float()[:, None]), (~wanted).float()[:, None])
