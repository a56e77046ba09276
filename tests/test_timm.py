"""timm:<name>: any features_only timm model under the contract (small models, CPU)."""

import json

import pytest
import timm
import torch
from backbones.adapters import MaskedEncoder
from conftest import content_in_zeros_and_noise, padding_on_grid

from backbones import build_backbone, build_on_meta
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
    assert encoder.input_limits.padded_to == (1, 1)
    reference = timm.create_model("resnet18", features_only=True).eval()
    reference.load_state_dict(encoder.body.state_dict())
    x = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        assert torch.equal(encoder(x), reference(x)[-1])


def test_floor_models_are_padded_to_the_contract_and_equal_timm_on_aligned_sizes():
    encoder = build_backbone("timm:convnext_atto", out_indices=(0, 3)).eval()
    assert encoder.stage_backbone().input_limits.padded_to == (32, 32)
    reference = timm.create_model("convnext_atto", features_only=True).eval()
    reference.load_state_dict(encoder.backbone.body.state_dict())
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
        build_on_meta("timm:inception_v3")  # valid (unpadded) convs shrink every level: refused at build, by name


def test_models_made_for_one_size_pad_to_it_and_name_the_limit():
    """EfficientFormerV2's attention biases are sized for 224x224: smaller inputs are padded to it, larger ones are
    a ValueError that names the limit; timm's img_size= moves it."""
    encoder = build_on_meta("timm:efficientformerv2_s0")
    assert encoder.max_input_size == (224, 224) and encoder.min_input_size == 1
    assert_contract(encoder, [(17, 31), (224, 224), (100, 3)])
    with pytest.raises(
        ValueError,
        match=r"got shape \[1, 3, 225, 64\]; timm:efficientformerv2_s0 works at one input size, 224x224 .*; build it",
    ):
        encoder(torch.empty(1, 3, 225, 64, device="meta"))
    wide = build_on_meta("timm:efficientformerv2_s0", img_size=(64, 448))
    assert wide.max_input_size == (64, 448)
    assert_contract(wide, [(64, 448), (33, 300)])


def test_vit_blocks_are_levels_and_attention_ignores_padding():
    """Every block is a level; with a mask, the patches whose first pixel is padding are masked out of attention:
    what lies in the padding no longer changes the valid cells (it does without the mask)."""
    vit = build_backbone("timm:vit_tiny_patch16_224", out_indices=(3, 11)).eval()
    last_block = MaskedEncoder(build_backbone("timm:vit_tiny_patch16_224").eval())
    last_block.encoder.body.load_state_dict(vit.backbone.body.state_dict())
    assert [info.name for info in vit.feature_info] == [f"block{i}" for i in range(12)] and vit.attends_to_mask
    zeros, noise, mask = content_in_zeros_and_noise((64, 96), (32, 48), seed=0)
    with torch.no_grad():
        masked = [vit(x, mask)[1][:, :, :2, :3] for x in (zeros, noise)]
        plain = [vit(x)[1][:, :, :2, :3] for x in (zeros, noise)]
        assert torch.allclose(vit(zeros, torch.zeros_like(mask))[0], vit(zeros)[0], atol=1e-6)
        feature, small = last_block(noise, (~mask).float()[:, None])  # float mask, 1 = valid
    scale = plain[0].abs().max()
    assert (masked[0] - masked[1]).abs().max() <= 1e-5 * scale  # padding content does not reach the valid cells
    assert (plain[0] - plain[1]).abs().max() > 1e-2 * scale
    assert small.shape == (2, 1, 4, 6) and feature.shape == (2, 192, 4, 6)
    assert torch.allclose(feature[:, :, :2, :3], vit(zeros, mask)[1][:, :, :2, :3], atol=1e-5 * float(scale))
    assert not build_on_meta("timm:resnet18").attends_to_mask and not build_on_meta("resnet18").attends_to_mask
    with pytest.raises(ValueError, match="mask must match the image's batch and size"):
        vit(zeros, mask[:, :10])


def test_masked_attention_when_the_input_is_padded_to_a_fixed_size():
    """A ViT made for 64x64 (timm's img_size, no dynamic size) pads a 30x40 input to it: the extra patches are
    masked out too, and the output is the 2x3 ceil grid."""
    vit = build_backbone("timm:vit_tiny_patch16_224", img_size=64, dynamic_img_size=False).eval()
    assert vit.max_input_size == (64, 64) and vit.attends_to_mask
    x, mask = torch.randn(1, 3, 30, 40), torch.zeros(1, 30, 40, dtype=torch.bool)
    with torch.no_grad():
        assert vit(x, mask).shape == (1, 192, 2, 3)


def test_vit_frozen_stages_freeze_the_embeddings_and_the_first_blocks():
    vit = build_on_meta("timm:vit_tiny_patch16_224", frozen_stages=1)
    frozen = {name for name, parameter in vit.named_parameters() if not parameter.requires_grad}
    assert {"body.model.cls_token", "body.model.pos_embed", "body.model.patch_embed.proj.weight"} <= frozen
    assert {name.split(".")[3] for name in frozen if name.startswith("body.model.blocks.")} == {"0", "1"}
    assert "body.model.blocks.2.attn.qkv.weight" not in frozen
    vit.train()
    assert not vit.body.model.blocks[1].training and vit.body.model.blocks[2].training
    hiera = build_on_meta("timm:hiera_tiny_224", frozen_stages=1)  # levels end at blocks 0, 2, 9, 11
    frozen = {name.split(".")[3] for name, p in hiera.named_parameters() if not p.requires_grad and ".blocks." in name}
    assert frozen == {"0", "1", "2"} and not hiera.body.model.pos_embed.requires_grad
    with pytest.raises(ValueError, match="frozen_stages is not available for timm:mvitv2_tiny"):
        build_on_meta("timm:mvitv2_tiny", frozen_stages=0)


def test_coverage_script_on_a_subset(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "timm_coverage.py"
    spec = importlib.util.spec_from_file_location("timm_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    module.main(["--models", "resnet18,vit_tiny_patch16_224", "--configs", "native,os16,os32x4", "--json"])
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert all(rows["resnet18"][c]["verdict"] == "PASS" for c in ("native", "os16", "os32x4"))
    assert rows["vit_tiny_patch16_224"]["native"]["verdict"] == "PASS"
    assert rows["vit_tiny_patch16_224"]["os16"]["verdict"] == "PASS"  # its native stride
    assert rows["vit_tiny_patch16_224"]["os32x4"]["verdict"] == "REFUSED"


@pytest.mark.parametrize(
    "name, strides, output_stride",
    [
        ("resnet18", (2, 2, 2, 1), 16),
        ("resnet18", (2, 2, 1, 1), 8),
        ("convnext_atto", (2, 2, 1), 16),  # a 2x2 downsample at stride 1 (edge-padded) and dilated 7x7 dwconvs
        ("efficientnet_b0", (2, 2, 2, 1), 16),
    ],
)
def test_generic_dilation_equals_timms_own_route(name, strides, output_stride):
    """strides= with dilate=True takes the generic route; where timm has its own output_stride it must compute the
    same (same weights, same input; 1e-5 of the output's scale; 64x96 so that neither pads)."""
    levels = tuple(range(len(strides) + 1))
    ours = build_backbone(f"timm:{name}", strides=strides, dilate=True, out_indices=levels).eval()
    reference = timm.create_model(name, features_only=True, output_stride=output_stride).eval()
    reference.load_state_dict(ours.backbone.body.state_dict())
    assert ours.feature_info[-1].dilation == (32 // output_stride,) * 2
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for mine, theirs in zip(ours(x), reference(x)):
            assert mine.shape == theirs.shape
            assert (mine - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_generic_dilation_for_models_timm_cannot_dilate():
    densenet = build_on_meta("timm:densenet121", output_stride=(32, 8), dilate=True)
    assert [info.dilation for info in densenet.feature_info] == [(1, 1), (1, 1), (1, 1), (1, 2), (1, 4)]
    convs = dict(densenet.body.named_modules())
    dilations = [convs[f"features_denseblock{i}.denselayer1.conv2"].dilation for i in (1, 2, 3, 4)]
    assert dilations == [(1, 1), (1, 1), (1, 2), (1, 4)]
    assert convs["features_denseblock4.denselayer1.conv2"].padding == (1, 4)
    assert_contract(densenet, SIZES[:3])
    with pytest.raises(
        ValueError, match=r"swin_tiny_patch4_window7_224 cannot be dilated: layers_3.blocks.0 .*windows"
    ):
        build_on_meta("timm:swin_tiny_patch4_window7_224", output_stride=16, dilate=True)


def test_dilation_refuses_a_conv_that_does_not_keep_the_size():
    from backbones.families.timm._surgery import LayerTrace, dilate_traced_convs

    valid = torch.nn.Conv2d(4, 4, 3)
    trace = LayerTrace({}, [("body.3", valid, 32)], [("body.3", valid)], [])
    with pytest.raises(ValueError, match=r"timm:m cannot be dilated: body.3 \(a 3x3 conv with padding \(0, 0\)\)"):
        dilate_traced_convs(trace, [4, 8, 16, 32], [(4, 4), (8, 8), (16, 16), (16, 16)], {}, "m")
    assert valid.dilation == (1, 1)


def test_dynamic_same_convs_keep_computing_their_padding():
    """timm's SAME convs that pad at run time (NFNet's ScaledStdConv2dSame, TF ports' Conv2dSame) only change their
    stride and dilation: setting a static padding as well would pad twice."""
    from timm.layers import CondConv2d, Conv2dSame, ScaledStdConv2dSame

    from backbones.families.timm._surgery import remove_stride

    for conv in (ScaledStdConv2dSame(4, 8, 3, stride=2, padding="same"), Conv2dSame(4, 8, 3, stride=2)):
        remove_stride(torch.nn.Sequential(conv), "0", (True, False), "m")
        assert conv.stride == (1, 2) and conv.padding == (0, 0)
        with torch.no_grad():
            assert conv(torch.randn(1, 4, 13, 10)).shape == (1, 8, 13, 5)
    for padding, kept in (("same", (0, 0)), ("", (1, 1))):  # CondConv2d (EfficientNet-CC): dynamic or static
        conv = CondConv2d(4, 8, 3, stride=2, padding=padding, num_experts=2)
        remove_stride(torch.nn.Sequential(conv), "0", (True, False), "m")
        assert conv.stride == (1, 2) and tuple(conv.padding) == kept
        with torch.no_grad():
            assert conv(torch.randn(1, 4, 13, 10), torch.rand(1, 2)).shape == (1, 8, 13, 5)


def test_swin_patch_merging_with_strides_removed():
    """Swin's patch merging (a Linear over 2x2 neighbours) keeps timm's result at stride 2 and runs at stride 1."""
    from timm.models import swin_transformer, swin_transformer_v2, swin_transformer_v2_cr

    from backbones.families.timm._surgery import remove_stride

    x = torch.randn(2, 7, 9, 8)
    for module in (swin_transformer, swin_transformer_v2, swin_transformer_v2_cr):  # v2 reduces, then normalises
        body = torch.nn.Sequential(module.PatchMerging(8)).eval()
        with torch.no_grad():
            reference = body(x)
            remove_stride(body, "0", (False, False), "m")
            assert torch.equal(body(x), reference)
            remove_stride(body, "0", (False, True), "m")
            assert body(x).shape == (2, 4, 9, 16)
    swin = build_backbone("timm:swin_tiny_patch4_window7_224", output_stride=(32, 8), out_channels=16).eval()
    assert [info.stride for info in swin.feature_info] == [(4, 4), (8, 8), (16, 8), (32, 8)]
    with torch.no_grad():
        assert swin(torch.randn(1, 3, 37, 101)).shape == (1, 16, 2, 13)


def test_hrnet_fusion_upsamples_by_the_new_stride_ratios():
    """HRNet adds each branch to the others after fixed-factor upsampling; surgery gives every Upsample the ratio of
    its branches' new strides (branch 3 -> 0: x8 natively, (8, 2) once the W axis stays at /8)."""
    hrnet = build_on_meta("timm:hrnet_w18_small", output_stride=(32, 8))
    modules = hrnet.body.named_modules()
    factors = {name: module.scale_factor for name, module in modules if isinstance(module, torch.nn.Upsample)}
    assert factors["stage4.0.fuse_layers.0.3.2"] == (8.0, 2.0) and factors["stage4.0.fuse_layers.1.3.2"] == (4.0, 1.0)
    assert [info.stride for info in hrnet.feature_info][-2:] == [(16, 8), (32, 8)]
    assert_contract(hrnet, SIZES[:3])


def test_models_without_features_say_so():
    with pytest.raises(KeyError, match="unknown timm model 'resnet_18'; did you mean"):
        build_backbone("timm:resnet_18")


def test_masks_and_the_masked_encoder():
    encoder = MaskedEncoder(build_backbone("timm:convnext_atto", in_channels=1, out_channels=16)).eval()
    images, mask = torch.zeros(2, 1, 70, 150), torch.zeros(2, 70, 150, dtype=torch.bool)
    mask[1, :, 100:] = True
    with torch.no_grad():
        features, small = encoder(images, mask)
    assert features.shape == (2, 16, 3, 5) and torch.equal(
        small, padding_on_grid([(70, 150), (70, 100)], (3, 5), (32, 32))
    )


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
        ours, theirs = encoder(x), reference(x)[-1]
    assert (ours - theirs).abs().max() <= 1e-6 * theirs.abs().max()  # the summed kernel: float64 here, float32 in timm
    saved = tmp_path / "ours.safetensors"
    from safetensors.torch import save_file

    save_file(encoder.state_dict(), str(saved))
    again = build_backbone("timm:resnet18", in_channels=1, pretrained=str(saved)).eval()
    with torch.no_grad():
        assert torch.equal(again(x), encoder(x))
