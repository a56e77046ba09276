"""timm:<name>: any features_only timm model under the contract (small models, CPU)."""

import json

import pytest
import timm
import torch
from backbones.adapters import MaskedEncoder

from backbones import build_backbone
from backbones.report import build_on_meta
from backbones.testing import assert_contract, odd_sizes

SMALL = ["resnet18", "convnext_atto", "mobilenetv3_small_050", "regnetx_002", "efficientnet_b0"]
SIZES = odd_sizes(6, low=(16, 16), high=(130, 400), seed=4)


@pytest.mark.parametrize("name", SMALL)
def test_contract_on_odd_sizes(name):
    assert_contract(build_backbone(f"timm:{name}"), SIZES)
    pyramid = build_backbone(f"timm:{name}", out_indices=(1, 2, 3), out_channels=(8, 16, 32), in_channels=1)
    assert pyramid.out_channels == (8, 16, 32)
    assert_contract(pyramid, SIZES[:3])


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_native_channels_and_strides_come_from_timm(name):
    reference = timm.create_model(name, features_only=True)
    encoder = build_backbone(f"timm:{name}", out_indices=tuple(range(len(reference.feature_info))))
    assert list(encoder.out_channels) == reference.feature_info.channels()
    assert [s[0] for s in encoder.output_stride] == reference.feature_info.reduction()


def test_ceil_models_run_unpadded_and_equal_timm():
    encoder = build_backbone("timm:resnet18").eval()
    assert encoder.align == [1, 1]
    reference = timm.create_model("resnet18", features_only=True).eval()
    reference.load_state_dict(encoder.body.state_dict())
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        assert torch.equal(encoder(x), reference(x)[-1])


def test_floor_models_are_padded_to_the_contract_and_equal_timm_on_aligned_sizes():
    encoder = build_backbone("timm:convnext_atto", out_indices=(0, 3)).eval()
    assert encoder.align == [32, 32]
    reference = timm.create_model("convnext_atto", features_only=True).eval()
    reference.load_state_dict(encoder.body.state_dict())
    aligned = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = encoder(aligned), reference(aligned)
        assert (ours[0] - theirs[0]).abs().max().item() <= 1e-5 and (ours[1] - theirs[3]).abs().max() <= 1e-5
        odd = encoder(torch.randn(1, 3, 65, 97))
    assert [tuple(o.shape[-2:]) for o in odd] == [(17, 25), (3, 4)]  # timm alone: (16, 24), (2, 3)


def test_output_stride_by_dilation():
    encoder = build_backbone("timm:resnet18", output_stride=16, dilate=True, out_channels=684, in_channels=1)
    assert encoder.output_stride == (16, 16) and encoder.out_channels == 684
    assert_contract(encoder, SIZES[:3])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(output_stride=(16, 8), dilate=True), "with dilate=True for timm:resnet18: timm dilates isotropically"),
        (dict(strides=(1, 1, 2, 2), dilate=True), "strides=... with dilate=True is not available for timm:resnet18"),
        (dict(output_stride=64), "output_stride must be one of 2, 4, 8, 16, 32"),
        (dict(strides=(1, 3, 2, 2)), "strides[1] must be 1 or 2 in each dimension"),
    ],
)
def test_unsupported_options_are_named(options, message):
    with pytest.raises(ValueError) as caught:
        build_backbone("timm:resnet18", **options)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "name, options, levels",
    [
        ("convnext_atto", dict(output_stride=16), [(4, 4), (8, 8), (16, 16), (16, 16)]),
        ("lcnet_050", dict(output_stride=(32, 4)), [(2, 2), (4, 4), (8, 4), (16, 4), (32, 4)]),
        ("resnet18d", dict(strides=(1, 2, 2, 1)), [(2, 2), (2, 2), (4, 4), (8, 8), (8, 8)]),
        ("efficientnet_b0", dict(output_stride=(16, 8)), [(2, 2), (4, 4), (8, 8), (16, 8), (16, 8)]),
    ],
)
def test_stride_surgery_removes_the_last_strides_on_the_meta_device(name, options, levels):
    encoder = build_on_meta(f"timm:{name}", **options)
    assert [info.stride for info in encoder.feature_info] == levels
    assert all(info.dilation == (1, 1) for info in encoder.feature_info)
    assert_contract(encoder, SIZES)


def test_text_line_recipe_and_surgery_keep_the_state_dict(tmp_path):
    """timm:lcnet_050 turns a 32x100 line into 25 columns; surgery changes no parameter, so a timm file loads."""
    source = timm.create_model("lcnet_050")
    path = tmp_path / "lcnet.pth"
    torch.save(source.state_dict(), path)
    encoder = build_backbone(
        "timm:lcnet_050", in_channels=1, out_channels=512, output_stride=(32, 4), pretrained=str(path)
    )
    with torch.no_grad():
        assert encoder.eval()(torch.randn(2, 1, 32, 100)).shape == (2, 512, 1, 25)
    native = build_backbone("timm:lcnet_050", in_channels=1)
    assert {k: v.shape for k, v in native.body.state_dict().items()} == {
        k: v.shape for k, v in encoder.body.state_dict().items()
    }
    assert torch.equal(
        encoder.body.state_dict()["blocks.5.0.conv_pw.weight"], source.state_dict()["blocks.5.0.conv_pw.weight"]
    )
    assert encoder.pretrained_report.loaded == len(native.body.state_dict())


def test_vision_transformers_take_any_size_and_keep_their_patch_stride():
    vit = build_backbone("timm:vit_tiny_patch16_224", out_channels=32).eval()
    with torch.no_grad():
        assert vit(torch.randn(1, 3, 37, 101)).shape == (1, 32, 3, 7)
    assert_contract(build_on_meta("timm:swin_tiny_patch4_window7_224"), SIZES[:3])
    with pytest.raises(ValueError, match="does not give the ceil"):
        build_on_meta("timm:efficientformerv2_s0")  # attention sized for 224x224: refused at build, by name


def test_coverage_script_on_a_subset(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "timm_coverage.py"
    spec = importlib.util.spec_from_file_location("timm_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    module.main(["--models", "resnet18,lcnet_050,vit_tiny_patch16_224", "--configs", "native,os16,os32x4", "--json"])
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert all(rows[m][c]["verdict"] == "PASS" for m in ("resnet18", "lcnet_050") for c in ("native", "os16", "os32x4"))
    assert rows["vit_tiny_patch16_224"]["native"]["verdict"] == "PASS"
    assert rows["vit_tiny_patch16_224"]["os16"]["verdict"] == "PASS"  # its native stride
    assert rows["vit_tiny_patch16_224"]["os32x4"]["verdict"] == "REFUSED"


def test_models_without_output_stride_or_features_say_so():
    with pytest.raises(ValueError, match=r"timm:densenet121 does not accept .*output_stride=16"):
        build_backbone("timm:densenet121", output_stride=16, dilate=True)
    with pytest.raises(KeyError, match="unknown timm model 'resnet_18'; did you mean"):
        build_backbone("timm:resnet_18")


def test_masks_and_the_masked_encoder():
    encoder = MaskedEncoder(build_backbone("timm:convnext_atto", in_channels=1, out_channels=16)).eval()
    images, mask = torch.zeros(2, 1, 70, 150), torch.zeros(2, 70, 150, dtype=torch.bool)
    mask[1, :, 100:] = True
    with torch.no_grad():
        features, small = encoder(images, mask)
    assert features.shape == (2, 16, 3, 5) and torch.equal(small, mask[:, ::32, ::32])


def test_frozen_stages_freeze_timm_levels():
    encoder = build_backbone("timm:regnetx_002", frozen_stages=1)
    frozen = {n.split(".")[1] for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "s1"}


def test_pretrained_timm_file_with_grayscale_matches_timm(tmp_path):
    source = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    encoder = build_backbone("timm:resnet18", in_channels=1, pretrained=str(path)).eval()
    reference = timm.create_model(
        "resnet18", features_only=True, in_chans=1, pretrained=True,
        pretrained_cfg_overlay=dict(state_dict=source.state_dict()),
    ).eval()  # fmt: skip
    x = torch.randn(1, 1, 45, 77)
    with torch.no_grad():
        assert torch.equal(encoder(x), reference(x)[-1])
    saved = tmp_path / "ours.safetensors"
    from safetensors.torch import save_file

    save_file(encoder.state_dict(), str(saved))
    again = build_backbone("timm:resnet18", in_channels=1, pretrained=str(saved)).eval()
    with torch.no_grad():
        assert torch.equal(again(x), encoder(x))
