"""densenet_hmer as docs/families.md describes it (the WAP/BTTR/CoMER encoder), and the seeds' ResNet-50 swap
against it."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import built, meta_built

from backbones.testing import assert_swappable, odd_sizes


def test_parameter_count_and_shape_of_the_default():
    encoder = built("densenet_hmer")
    assert sum(p.numel() for p in encoder.parameters()) == 2_979_288
    assert encoder.in_channels == 1 and encoder.out_channels == 684 and encoder.output_stride == (16, 16)
    assert [info.channels for info in encoder.feature_info] == [48, 432, 600, 684]
    assert [m.out_channels for n, m in encoder.named_modules() if n.endswith("conv1") and "trans" in n] == [216, 300]
    with torch.no_grad():
        assert tuple(encoder(torch.randn(4, 1, 128, 316)).shape) == (4, 684, 8, 20)


def test_options():
    encoder = built("densenet_hmer", stem_norm=True, post_norm=True)
    names = dict(encoder.named_modules())
    assert isinstance(names["features.norm1"], torch.nn.BatchNorm2d)
    assert isinstance(names["features.post_norm"], torch.nn.BatchNorm2d)
    assert sum(p.numel() for p in encoder.parameters()) == 2_979_288 + 2 * 48 + 2 * 684
    small = built("densenet_hmer", growth_rate=12, block_layers=(4, 4), reduction=0.5, bottleneck=False)
    assert small.out_channels == 24 + 48 - 36 + 48 and small.output_stride == (8, 8)
    assert len(small.feature_info) == 3
    dropped = built("densenet_hmer", drop_rate=0.2).train()
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.2 for m in dropped.modules()) == 3 * 16 + 2


def test_state_dict_keys_follow_hmer_checkpoints():
    keys = set(built("densenet_hmer", stem_norm=True, post_norm=True).state_dict())
    for key in (
        "features.conv1.weight",
        "features.norm1.weight",
        "features.dense1.0.conv1.weight",
        "features.dense1.0.bn2.running_var",
        "features.trans1.conv1.weight",
        "features.trans2.bn1.bias",
        "features.dense3.15.conv2.weight",
        "features.post_norm.weight",
    ):
        assert key in keys


class ReferenceDenseNetB(torch.nn.Module):
    """The DenseNet-B forward written out with functional ceil-mode pooling, as in the HMER repos."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        f = self.encoder.features
        out = F.max_pool2d(F.relu(f.conv1(x)), 2, ceil_mode=True)
        for i in (1, 2, 3):
            if i > 1:
                t = f[f"trans{i - 1}"]
                out = F.avg_pool2d(F.relu(t.bn1(t.conv1(out))), 2, ceil_mode=True)
            for layer in f[f"dense{i}"]:
                y = F.relu(layer.bn1(layer.conv1(out)))
                out = torch.cat((out, F.relu(layer.bn2(layer.conv2(y)))), 1)
        return out


def test_numbers_equal_ceil_mode_pooling_reference():
    encoder = built("densenet_hmer")
    reference = ReferenceDenseNetB(encoder)
    for h, w in [(45, 77), (128, 316), (17, 33)]:
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            torch.testing.assert_close(encoder(x), reference(x), atol=1e-5, rtol=1e-5)


SWAPS = {
    "layer2_layout": {"strides": (1, 1, 2, 2)},
    "last_stride_removed": {"output_stride": 16},
}


@pytest.mark.parametrize("route", SWAPS)
def test_resnet50_swap_gives_the_densenet_grid(route):
    reference = meta_built("densenet_hmer")
    candidate = meta_built("resnet50", in_channels=1, out_channels=684, **SWAPS[route])
    sizes = odd_sizes(200, low=(16, 16), high=(320, 1800), seed=7)
    masks = torch.rand(2, 320, 1800) > 0.5  # each size takes its top-left corner
    # analytic grid and downsampled masks on every pair; real (meta-device) forward on a sample of them
    for h, w in sizes:
        assert candidate.output_size(h, w) == reference.output_size(h, w) == (math.ceil(h / 16), math.ceil(w / 16))
        mask = masks[:, :h, :w]
        assert torch.equal(candidate.downsample_mask(mask), reference.downsample_mask(mask))
    assert_swappable(reference, candidate, sizes[:24])


def test_unmodified_resnet50_is_not_swappable():
    with pytest.raises(AssertionError, match=r"channels differ"):
        assert_swappable(meta_built("densenet_hmer"), meta_built("resnet50", in_channels=1), [(64, 64)])
    with pytest.raises(
        AssertionError, match=r"128x316: reference \[\(1, 684, 8, 20\)\], candidate \[\(1, 684, 4, 10\)\]"
    ):
        assert_swappable(
            meta_built("densenet_hmer"), meta_built("resnet50", in_channels=1, out_channels=684), [(128, 316)]
        )
