"""Today's text-recognition encoders: SVTRv2 (OpenOCR), PP-LCNetV3 and PP-HGNetV2-B4 (PP-OCRv5). Parity with the
originals (rebuilt in ocr_references.py: SVTRv2 flattens before its first global mixer and reshapes by the size
its subsampling reports), their checkpoint containers, masks, fuse()."""

import pytest
import torch
import torch.nn.functional as F
from conftest import content_in_zeros_and_noise
from ocr_references import SVTR, RefHGNetV2B4, RefLCNetV3, RefRep, RefSVTRv2, close, randomised
from torch import nn

from backbones import WeightsMismatchError, build_backbone, load_weights

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")  # the reference's 2x2 convs


@pytest.fixture(scope="module")
def svtr_tiny():
    torch.manual_seed(0)
    return randomised(RefSVTRv2(*SVTR["svtrv2_tiny"]))


@pytest.mark.parametrize("name", list(SVTR))
def test_svtrv2_with_openocrs_checkpoint_gives_its_features(name, tmp_path):
    """OpenOCR's file: the whole recogniser in {"state_dict": ...} with the decoder beside the encoder; 32x128
    (the training size) and odd sizes, where SVTRv2's arithmetic is the ceil grid too."""
    torch.manual_seed(0)
    reference = randomised(RefSVTRv2(*SVTR[name]))
    state = {f"encoder.{k}": v for k, v in reference.state_dict().items()}
    state["decoder.fc.weight"] = torch.zeros(97, SVTR[name][0][-1])
    torch.save({"epoch": 20, "global_step": 9, "state_dict": state, "optimizer": {}, "config": {}}, tmp_path / "b.pth")
    encoder = build_backbone(name, pretrained=str(tmp_path / "b.pth")).eval()
    assert encoder.pretrained_report.prefix == "encoder." and encoder.pretrained_report.outside_prefix == 1
    sizes = [(32, 128), (31, 97)] if name == "svtrv2_base" else [(32, 128), (31, 97), (37, 101)]
    for h, w in sizes:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ours, theirs = encoder(x), reference(x)
        close(ours, theirs)
        assert tuple(ours.shape[2:]) == encoder.output_size(h, w) == (-(-h // 8), -(-w // 4))
    assert encoder.out_channels == SVTR[name][0][-1]


def test_svtrv2_attention_ignores_the_padding(svtr_tiny):
    """The same line in a canvas, once with zeros and once with noise around it: with the mask the valid cells are
    the same (0.0), without it they are not."""
    encoder = build_backbone("svtrv2_tiny").eval()
    load_weights(encoder, svtr_tiny.state_dict())
    zeros, noise, mask = content_in_zeros_and_noise((40, 100), (32, 64), seed=1)
    with torch.no_grad():
        masked = [encoder(x, mask)[:, :, :4, :16] for x in (zeros, noise)]
        plain = [encoder(x)[:, :, :4, :16] for x in (zeros, noise)]
        float_mask = encoder(noise, (~mask).float()[:, None])[:, :, :4, :16]
    scale = plain[0].abs().max()
    assert torch.equal(masked[0], masked[1]) and torch.equal(float_mask, masked[1])
    assert (plain[0] - plain[1]).abs().max() > 1e-2 * scale
    assert encoder.attends_to_mask


@pytest.fixture(scope="module")
def lcnet():
    torch.manual_seed(0)
    return randomised(RefLCNetV3())


def test_pplcnetv3_checkpoints_give_the_originals_body_and_its_eval_output(lcnet, tmp_path):
    """PaddleOCR2Pytorch's converted file: a bare state dict in torch's legacy format, the CTC head beside the
    backbone; OpenOCR's: the encoder under encoder.; 48x320 and odd sizes."""
    state = {f"backbone.{k}": v for k, v in lcnet.state_dict().items()}
    state.update(
        {"head.ctc_encoder.encoder.conv1.conv.weight": torch.zeros(1), "head.ctc_head.fc.weight": torch.zeros(1)}
    )
    torch.save(state, tmp_path / "ppocrv5_mobile.pth", _use_new_zipfile_serialization=False)
    encoder = build_backbone("pplcnetv3_rec", pretrained=str(tmp_path / "ppocrv5_mobile.pth")).eval()
    assert encoder.pretrained_report.outside_prefix == 2 and encoder.out_channels == 480
    openocr = {"state_dict": {f"encoder.{k}": v for k, v in lcnet.state_dict().items()}, "epoch": 1}
    assert load_weights(build_backbone("pplcnetv3_rec"), openocr).prefix == "encoder."
    for h, w in [(48, 320), (47, 301), (33, 77)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            close(encoder(x), lcnet.body(x))
    x = torch.randn(2, 3, 48, 320)
    with torch.no_grad():  # docs/ocr.md's recipe: the original's eval output from the body
        close(F.avg_pool2d(encoder(x), [3, 2]), lcnet(x))
        assert lcnet(x).shape == (2, 480, 1, 40)


def test_pplcnetv3_fuse_reparameterises_as_rep_does(lcnet):
    """fuse() folds each layer's five branches and identity into one conv: within 1e-4 of the unfused (measured
    about 1.5e-6) and equal, within 1e-5, to the original after its own rep()."""
    encoder = build_backbone("pplcnetv3_rec").eval()
    load_weights(encoder, lcnet.state_dict())
    x = torch.randn(2, 3, 48, 320)
    with torch.no_grad():
        before = encoder(x)
        encoder.fuse()
        after = encoder(x)
        repped = randomised(RefLCNetV3())
        repped.load_state_dict(lcnet.state_dict())
        for module in repped.modules():
            if isinstance(module, RefRep):
                module.rep()
        close(after, before, 1e-4)
        close(after, repped.body(x), 1e-5)
    assert encoder.reparameterized == 28 and encoder.folded_batchnorms == 1  # the stem's; no branch BN is left


def test_pphgnetv2_checkpoint_skips_the_classifier_and_gives_the_originals_body(tmp_path):
    torch.manual_seed(0)
    reference = randomised(RefHGNetV2B4())
    torch.save({f"backbone.{k}": v for k, v in reference.state_dict().items()}, tmp_path / "server.pth",
               _use_new_zipfile_serialization=False)  # fmt: skip
    encoder = build_backbone("pphgnetv2_b4_rec", pretrained=str(tmp_path / "server.pth")).eval()
    assert sorted(encoder.pretrained_report.ignored) == ["fc.bias", "fc.weight", "last_conv.weight"]
    for h, w in [(48, 320), (33, 77)]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            close(encoder(x), reference.body(x))
    x = torch.randn(1, 3, 48, 320)
    with torch.no_grad():
        assert encoder(x).shape == (1, 2048, 3, 80)
        close(F.avg_pool2d(encoder(x), [3, 2]), reference(x))


def test_a_checkpoint_of_one_new_family_given_to_another_names_the_right_one(lcnet, svtr_tiny):
    with pytest.raises(WeightsMismatchError, match="hint: the file looks like a checkpoint of pplcnetv3_rec"):
        load_weights(build_backbone("pphgnetv2_b4_rec"), lcnet.state_dict())
    with pytest.raises(WeightsMismatchError, match="hint: the file looks like a checkpoint of an SVTRv2"):
        load_weights(build_backbone("pplcnetv3_rec"), svtr_tiny.state_dict())
    with pytest.raises(WeightsMismatchError, match="hint: the file may be an SVTRv2 of another size"):
        load_weights(build_backbone("svtrv2_small"), svtr_tiny.state_dict())
    with pytest.raises(WeightsMismatchError, match="hint: the widths differ: the file may be of another scale"):
        load_weights(build_backbone("pplcnetv3_rec", scale=0.5), lcnet.state_dict())


@pytest.mark.parametrize(
    "name, options, stride, grid",
    [
        ("svtrv2_tiny", {"output_stride": 4, "dilate": True}, (4, 4), (8, 25)),
        ("pplcnetv3_rec", {"output_stride": (8, 4), "dilate": True}, (8, 4), (4, 25)),
        ("pplcnetv3_rec", {"strides": (1, 1, 1, (1, 2), (2, 1), (2, 1))}, (8, 4), (4, 25)),
        ("pphgnetv2_b4_rec", {"output_stride": (32, 4)}, None, None),
    ],
)
def test_strides_dilation_and_what_cannot_be_had(name, options, stride, grid):
    if stride is None:
        with pytest.raises(ValueError, match="output_stride must be .* sh in \\(2, 4, 8, 16\\)"):
            build_backbone(name, **options)
        return
    encoder = build_backbone(name, in_channels=1, out_channels=8, **options).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 1, 32, 100)).shape == (1, 8, *grid) and encoder.output_stride == stride
    dilated = [m.dilation for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)]
    assert bool(dilated) == (options.get("dilate", False) and name != "svtrv2_tiny")  # attention needs none
