"""Our encoders inside Hugging Face transformers (UperNet, DETR, the PP-OCRv5 recogniser; save/load) and
segmentation_models_pytorch (Unet, FPN, DeepLabV3Plus at 16 and 8, UPerNet, Segformer, PAN): tiny configs, offline,
on the CPU; feature maps against build_backbone on the same weights; the strides smp receives, measured."""

import subprocess
import sys

import pytest
import torch

from backbones import build_backbone

transformers = pytest.importorskip("transformers")
smp = pytest.importorskip("segmentation_models_pytorch")

from backbones.adapters.hf import backbone_config  # noqa: E402
from backbones.adapters.smp import smp_encoder  # noqa: E402

FAMILIES = ["resnet18", "timm:convnext_atto"]


def _upernet(cfg):
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    return UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=cfg, num_labels=3, hidden_size=16, use_auxiliary_head=False)
    )


@pytest.mark.parametrize("spec", FAMILIES)
def test_hf_backbone_equals_build_backbone_and_trains_in_upernet(spec):
    """AutoBackbone's feature maps are build_backbone's on the same weights, at an anisotropic stride UperNet takes;
    UperNet trains a step on 1-channel images."""
    from transformers import AutoBackbone

    cfg = backbone_config(spec, out_indices=(1, 2, 3), output_stride=(16, 8), in_channels=1)
    assert cfg.stage_names[:2] == ["stem", "stage1"] and cfg.out_features == ["stage1", "stage2", "stage3"]
    backbone = AutoBackbone.from_config(cfg).eval()
    ours = build_backbone(spec, out_indices=(1, 2, 3), output_stride=(16, 8), in_channels=1).eval()
    ours.load_state_dict(backbone.encoder.state_dict())
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        maps = backbone(x).feature_maps
        assert [torch.equal(a, b) for a, b in zip(maps, ours(x))] == [True] * 3
    assert backbone.channels == list(ours.out_channels)
    model = _upernet(cfg).train()
    out = model(pixel_values=x, labels=torch.randint(0, 3, (2, 64, 96)))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 3, 64, 96)
    assert model.backbone.encoder.backbone.input_conv() and all(
        p.grad is not None for p in model.backbone.parameters() if p.requires_grad
    )


@pytest.mark.parametrize("spec", ["resnet18", "densenet121"])
def test_detr_trains_with_its_frozen_batchnorm(spec):
    from transformers import DetrConfig, DetrForObjectDetection

    config = DetrConfig(
        backbone_config=backbone_config(spec, out_indices=(4,)), use_timm_backbone=False, d_model=16,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, num_queries=4, num_labels=3,
    )  # fmt: skip
    model = DetrForObjectDetection(config)
    norms = [type(m).__name__ for m in model.model.backbone.modules() if "BatchNorm" in type(m).__name__]
    assert norms and set(norms) == {"DetrFrozenBatchNorm2d"}
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])} for _ in range(2)]
    loss = model(pixel_values=torch.randn(2, 3, 64, 96), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "recogniser, spec, options",
    [("Mobile", "pplcnetv3_rec", {}), ("Mobile", "resnet34", {"output_stride": (16, 4)}),
     ("Server", "resnet18", {"output_stride": (16, 4)})],
)  # fmt: skip
def test_pp_ocrv5_recognisers_on_a_48x320_line(recogniser, spec, options):
    """PP-OCRv5's recognisers pool feature_maps[-1] by (3, 2); the mobile one sizes its neck from block_configs, the
    server one from stage_out_channels: with pplcnetv3_rec (its own body, 480 channels) or any family at stride
    (16, 4) they give 40 steps at 48x320."""
    config_class = getattr(transformers, f"PPOCRV5{recogniser}RecConfig")
    model_class = getattr(transformers, f"PPOCRV5{recogniser}RecForTextRecognition")
    cfg = backbone_config(spec, **options)
    assert (
        cfg.block_configs[-1][-1][2] * cfg.scale == cfg.stage_out_channels[-1] == {"pplcnetv3_rec": 480}.get(spec, 512)
    )
    model = model_class(config_class(backbone_config=cfg, head_out_channels=12))
    with torch.no_grad():
        out = model.eval()(pixel_values=torch.randn(2, 3, 48, 320))
    assert out.last_hidden_state.shape == (2, 40, 12)


def test_consumers_that_need_what_a_spec_cannot_give_are_named_with_the_reason():
    """DPT (without is_hybrid) reads backbone_config.patch_size and hidden_size, which only a ViT has; the PP-OCR
    recognisers need a height stride of 16, which SVTRv2 (8) cannot reach."""
    from transformers import DPTConfig, DPTForDepthEstimation

    model = DPTForDepthEstimation(DPTConfig(backbone_config=backbone_config("resnet18", out_indices=(1, 2, 3, 4))))
    message = r"dpt \(transformers.models.dpt.modeling_dpt\) reads backbone_config.patch_size: it is built on a ViT"
    with pytest.raises(AttributeError, match=message + r".*channels \[64, 128, 256, 512\]"):
        model.eval()(pixel_values=torch.randn(1, 3, 64, 64))
    assert getattr(backbone_config("resnet18"), "hidden_size", None) is None
    from transformers import PPOCRV5MobileRecConfig, PPOCRV5MobileRecForTextRecognition

    message = r"pp_ocrv5_mobile_rec \(.*\) pools feature_maps\[-1\] by \(3, 2\).*'svtrv2_tiny' gives height stride 8"
    with pytest.raises(ValueError, match=message):
        PPOCRV5MobileRecForTextRecognition(PPOCRV5MobileRecConfig(backbone_config=backbone_config("svtrv2_tiny")))


def test_pretrained_weights_load_at_build_and_survive_the_consumers_initialisation(tmp_path):
    """pretrained='path' in the build options loads when AutoBackbone builds the encoder; UperNet's post_init leaves
    the loaded weights alone (transformers re-initialises a model's convs and norms unless it says otherwise)."""
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = _upernet(backbone_config("resnet18", out_indices=(1, 2, 3, 4), pretrained=str(tmp_path / "resnet18.pth")))
    loaded = dict(model.backbone.encoder.backbone.named_parameters())
    assert torch.equal(loaded["conv1.weight"], reference.conv1.weight)
    assert torch.equal(loaded["layer4.1.conv2.weight"], reference.layer4[1].conv2.weight)


def test_save_and_load_in_a_fresh_process(tmp_path):
    model = _upernet(backbone_config("resnet18", out_indices=(1, 2, 3, 4), output_stride=16)).eval()
    model.save_pretrained(tmp_path / "upernet")
    model.backbone.save_pretrained(tmp_path / "backbone")
    x = torch.randn(1, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save((model(pixel_values=x).logits, model.backbone(x).feature_maps[-1]), tmp_path / "out.pt")
    probe = f"""
import torch, backbones.adapters.hf
from backbones.adapters.hf import BackbonesBackbone
from transformers import AutoConfig, UperNetForSemanticSegmentation
x, (logits, last) = torch.load("{tmp_path}/x.pt"), torch.load("{tmp_path}/out.pt")
config = AutoConfig.from_pretrained("{tmp_path}/backbone")
assert (config.spec, config.build_options, config.out_indices) == ("resnet18", {{"output_stride": 16}}, [1, 2, 3, 4])
backbone = BackbonesBackbone.from_pretrained("{tmp_path}/backbone").eval()
model = UperNetForSemanticSegmentation.from_pretrained("{tmp_path}/upernet").eval()
with torch.no_grad():
    assert torch.equal(backbone(x).feature_maps[-1], last)
    assert torch.allclose(model(pixel_values=x).logits, logits, atol=1e-6)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_hf_bad_specs_and_a_missing_framework():
    with pytest.raises(KeyError, match="did you mean resnet50"):
        backbone_config("resnet5")
    with pytest.raises(TypeError, match="unknown option"):
        backbone_config("resnet18", stemm="cifar")
    with pytest.raises(ValueError, match="output_stride must be one of"):
        backbone_config("resnet18", output_stride=12)
    with pytest.raises(TypeError, match="backbone_config takes out_indices as its own keyword"):
        backbone_config("resnet18:out_indices=1x2")
    for module, extra in (("backbones.adapters.hf", "hf"), ("backbones.adapters.smp", "smp")):
        blocked = "transformers" if extra == "hf" else "segmentation_models_pytorch"
        probe = f"import sys; sys.modules[{blocked!r}] = None\ntry:\n    import {module}\n"
        probe += "except ImportError as error:\n    print(error)"
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert f"pip install 'backbone-swap[{extra}]'" in result.stdout, result.stderr[-1000:]


@pytest.mark.parametrize("spec", FAMILIES)
@pytest.mark.parametrize("model, options", [("Unet", {}), ("FPN", {}), ("DeepLabV3Plus", {"encoder_output_stride": 16}),
                                            ("DeepLabV3Plus", {"encoder_output_stride": 8})])  # fmt: skip
def test_smp_models_train_on_one_channel_and_get_the_strides_they_ask_for(spec, model, options):
    net = getattr(smp, model)(encoder_name=smp_encoder(spec), encoder_weights=None, in_channels=1, classes=2, **options)
    x = torch.randn(2, 1, 64, 96)
    features = net.encoder(x)
    output_stride = options.get("encoder_output_stride", 32)
    strides = [min(2**i, output_stride) for i in range(6)]
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in features] == [(s, s) for s in strides]
    assert [f.shape[1] for f in features] == list(net.encoder.out_channels)
    net.train()(x).square().mean().backward()
    assert all(p.grad is not None for p in net.encoder.parameters() if p.requires_grad)


def test_smp_other_decoders_the_half_map_and_refusals():
    """UPerNet, Segformer, PAN train; the /2 map is the stem's (ResNet: relu after conv1), smp's 0-channel placeholder
    for a 4x4 patchify stem; a family without smp's levels, or an option smp sets, is refused by name."""
    for model, size in (("UPerNet", 64), ("Segformer", 64), ("PAN", 128)):
        net = getattr(smp, model)(encoder_name=smp_encoder("resnet18"), encoder_weights=None, classes=2)
        net(torch.randn(2, 3, size, size)).mean().backward()
    resnet = smp.Unet(encoder_name=smp_encoder("resnet18"), encoder_weights=None, classes=2).encoder
    assert resnet.half_module == "relu" and resnet.out_channels[1] == 64
    convnext = smp.FPN(encoder_name=smp_encoder("timm:convnext_atto"), encoder_weights=None, classes=2).encoder
    assert convnext.out_channels[1] == 0 and convnext(torch.randn(1, 3, 64, 64))[1].shape == (1, 0, 32, 32)
    with pytest.raises(ValueError, match=r"smp needs a map at /8 \(square: \(8, 8\)\), and its stages are stem"):
        smp_encoder("resnet45_aster")
    with pytest.raises(TypeError, match="smp_encoder does not take in_channels: pass in_channels to the smp model"):
        smp_encoder("resnet18", in_channels=1)
