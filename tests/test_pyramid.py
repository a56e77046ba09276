"""One type per method: Backbone (one output) and FeaturePyramid (out_indices); detectron2-style metadata; a
pyramid as a torchvision detection backbone (a training step for four families)."""

import math

import pytest
import torch
from backbones.adapters import MaskedEncoder, with_fpn

from backbones import Backbone, FeaturePyramid, build_backbone, build_on_meta

NAMES = ["resnet18", "densenet_hmer", "vgg_crnn", "timm:convnext_atto"]


@pytest.mark.parametrize("name", NAMES)
def test_every_method_has_one_type_per_class(name):
    single = build_on_meta(name, out_channels=16)
    pyramid = build_on_meta(name, out_indices=(1, 2), out_channels=(8, 16))
    assert isinstance(single, Backbone) and not isinstance(single, FeaturePyramid)
    assert isinstance(pyramid, FeaturePyramid) and not isinstance(pyramid, Backbone)
    x, mask = torch.empty(2, single.in_channels, 41, 67, device="meta"), torch.zeros(2, 41, 67, dtype=torch.bool)
    assert isinstance(single(x), torch.Tensor) and isinstance(single.out_channels, int)
    assert isinstance(single.output_stride, tuple) and all(isinstance(v, int) for v in single.output_stride)
    assert isinstance(single.output_size(41, 67), tuple) and isinstance(single.downsample_mask(mask), torch.Tensor)
    outputs = pyramid(x)
    assert isinstance(outputs, list) and [o.shape[1] for o in outputs] == [8, 16] == list(pyramid.out_channels)
    assert isinstance(pyramid.output_stride, tuple) and all(isinstance(s, tuple) for s in pyramid.output_stride)
    assert isinstance(pyramid.output_size(41, 67), list) and isinstance(pyramid.downsample_mask(mask), list)
    assert pyramid.in_channels == single.in_channels and pyramid.feature_info == pyramid.backbone.feature_info


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_says_what_a_forward_gives(name):
    """detectron2's output_shape(): name -> channels and stride, against a meta forward measured here."""
    pyramid = build_on_meta(name, out_indices=(0, 1, 2), out_channels=(4, 8, 12))
    h, w = 97, 131
    outputs = pyramid(torch.empty(1, pyramid.in_channels, h, w, device="meta"))
    shapes = pyramid.output_shape()
    assert list(shapes) == [pyramid.feature_info[i].name for i in (0, 1, 2)]
    for info, output in zip(shapes.values(), outputs):
        assert info.channels == output.shape[1]
        assert (math.ceil(h / info.stride[0]), math.ceil(w / info.stride[1])) == tuple(output.shape[2:])
    single = build_on_meta(name)
    assert single.output_shape() == {single.feature_info[-1].name: single.feature_info[-1]}


def test_scripted_encoders_need_no_narrowing():
    """A scripted module that calls an encoder gets a Tensor from a Backbone and a List from a pyramid."""
    encoder = MaskedEncoder(build_backbone("resnet18", in_channels=1, out_channels=8)).eval()
    pyramid = build_backbone("resnet18", out_indices=(2, 3)).eval()
    scripted, scripted_pyramid = torch.jit.script(encoder), torch.jit.script(pyramid)
    x, mask = torch.randn(1, 1, 37, 45), torch.zeros(1, 37, 45, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, mask)[0], encoder(x, mask)[0], rtol=1e-5, atol=1e-5)
        rgb = torch.randn(1, 3, 37, 45)
        for a, b in zip(scripted_pyramid(rgb), pyramid(rgb)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _targets(masks: bool):
    targets = []
    for box, label in (([10.0, 12.0, 50.0, 60.0], 1), ([5.0, 20.0, 40.0, 70.0], 2)):
        target = {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}
        if masks:
            target["masks"] = torch.zeros(1, 80, 100, dtype=torch.uint8)
            target["masks"][0, 12:60, 10:50] = 1
        targets.append(target)
    return targets


def _detector(kind, backbone):
    from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet

    small = dict(min_size=80, max_size=100)
    if kind == "retinanet":
        return RetinaNet(backbone, num_classes=3, **small)
    two_stage = dict(rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20, box_batch_size_per_image=16, **small)
    return (MaskRCNN if kind == "maskrcnn" else FasterRCNN)(backbone, num_classes=3, **two_stage)


@pytest.mark.parametrize(
    "name, options, kind",
    [
        ("resnet50", {}, "fasterrcnn"),
        ("densenet121", {}, "retinanet"),
        ("vgg_crnn", {"in_channels": 3, "out_indices": (2, 3, 4, 5)}, "maskrcnn"),
        ("timm:resnet18", {}, "fasterrcnn"),
    ],
)
def test_with_fpn_trains_a_torchvision_detector(name, options, kind):
    """No glue: with_fpn(pyramid) goes into FasterRCNN / RetinaNet / MaskRCNN as it is, one SGD step lowers
    nothing to NaN and moves the pyramid's first weights and the FPN's."""
    torch.manual_seed(0)
    pyramid = build_backbone(name, **{"out_indices": (1, 2, 3, 4), **options})
    backbone = with_fpn(pyramid, out_channels=32)
    assert backbone.out_channels == 32
    model = _detector(kind, backbone).train()
    first = next(p for p in pyramid.parameters() if p.requires_grad)
    before = first.detach().clone(), backbone.fpn.layer_blocks[0][0].weight.detach().clone()
    losses = model([torch.rand(3, 80, 100), torch.rand(3, 80, 100)], _targets(kind == "maskrcnn"))
    assert all(torch.isfinite(value) for value in losses.values()), losses
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(first, before[0]) and not torch.equal(backbone.fpn.layer_blocks[0][0].weight, before[1])
    with torch.no_grad():
        (detections,) = model.eval()([torch.rand(3, 80, 100)])
    assert set(detections) >= {"boxes", "labels", "scores"}


def test_with_fpn_takes_a_pyramid_only():
    with pytest.raises(TypeError, match=r"pyramid must be a backbones.FeaturePyramid \(build_backbone\(name, out_ind"):
        with_fpn(build_on_meta("resnet18"))
    with pytest.raises(ValueError, match="out_channels must be an int >= 1, got 0"):
        with_fpn(build_on_meta("resnet18", out_indices=(2, 3)), out_channels=0)
