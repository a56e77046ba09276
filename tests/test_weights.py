"""pretrained=: files in every key layout, tags through the cache, offline errors, input-conv adaptation."""

import pickle
import urllib.error

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from backbones import WeightsUnavailableError, build_backbone, get_entry
from backbones.registry import weight_sets
from backbones.weights import WeightsMismatchError, adapt_first_conv, default_weight_set, load_weights, read_state_dict

TOLERANCE = 1e-5


def _save(tmp_path, state, name):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return str(path)


def _same_tensors(model, state, skip=("fc.", "classifier.")):
    own = model.state_dict()
    for key, value in state.items():
        if key.startswith(skip):
            continue
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize(
    "wrap, suffix",
    [
        (lambda s: s, ".pth"),
        (lambda s: s, ".safetensors"),
        (lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3}, ".pt"),
        (lambda s: {"model": {f"backbone.body.{k}": v for k, v in s.items()}}, ".pth"),
    ],
    ids=["plain-pth", "safetensors", "ddp-training-checkpoint", "nested-prefix"],
)
def test_torchvision_file_loads_strictly_in_any_container(tmp_path, wrap, suffix):
    reference = torchvision.models.resnet18()
    state = reference.state_dict()
    path = _save(tmp_path, wrap(state), "r18" + suffix)
    encoder = build_backbone("resnet18", pretrained=path)
    _same_tensors(encoder, state)
    report = encoder.pretrained_report
    assert report.loaded == len(state) - 2 and sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert report.initialised == []


def test_old_torchvision_densenet_names_are_remapped(tmp_path):
    state = torchvision.models.densenet121().state_dict()
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert any(".norm.1." in k for k in old)
    encoder = build_backbone("densenet121", pretrained=_save(tmp_path, old, "densenet121-a639ec97.pth"))
    _same_tensors(encoder, state)
    assert encoder.pretrained_report.renamed > 0


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_timm_file_gives_timm_features(tmp_path, name):
    reference = timm.create_model(name).eval()
    encoder = build_backbone(name, pretrained=_save(tmp_path, reference.state_dict(), "t.safetensors")).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert (encoder(x) - reference.forward_features(x)).abs().max().item() <= TOLERANCE


def test_own_layout_round_trip_keeps_the_adapter(tmp_path):
    first = build_backbone("resnet18", out_channels=32, in_channels=1).eval()
    second = build_backbone(
        "resnet18", out_channels=32, in_channels=1, pretrained=_save(tmp_path, first.state_dict(), "ours.pth")
    ).eval()
    assert second.pretrained_report.initialised == []
    x = torch.randn(1, 1, 40, 52)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_adapter_is_freshly_initialised_and_says_so(tmp_path):
    path = _save(tmp_path, torchvision.models.resnet18().state_dict(), "r18.pth")
    encoder = build_backbone("resnet18", out_channels=684, pretrained=path)
    assert "adapters.0.conv.weight" in encoder.pretrained_report.initialised
    assert "freshly initialised" in str(encoder.pretrained_report)


def test_stride_changes_and_dilation_keep_every_tensor(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    path = _save(tmp_path, state, "r50.pth")
    for options in (dict(output_stride=8, dilate=True), dict(strides=(1, 1, 2, 2)), dict(output_stride=(32, 4))):
        encoder = build_backbone("resnet50", pretrained=path, **options)
        assert encoder.pretrained_report.loaded == len(state) - 2, options
        _same_tensors(encoder, state)


def test_pruned_stages_are_ignored_not_refused(tmp_path):
    path = _save(tmp_path, torchvision.models.resnet18().state_dict(), "r18.pth")
    encoder = build_backbone("resnet18", out_indices=(1, 2), pretrained=path)
    assert "backbone.layer3.0.conv1.weight" in encoder.pretrained_report.ignored
    assert len(encoder.backbone.layer3) == 0 and not any(".layer3." in k for k in encoder.state_dict())


@pytest.mark.parametrize("family", ["resnet18", "densenet121", "densenet_hmer"])
def test_grayscale_gives_the_features_of_the_repeated_image(family):
    """Summed RGB kernels: exact identity, checked in float64 (max abs diff <= 1e-5)."""
    source = build_backbone(family, in_channels=3).double().eval()
    state = source.state_dict()
    gray = build_backbone(family, in_channels=1).double().eval()
    report = load_weights(gray, state)
    assert len(report.adapted) == 1 and report.adapted[0].endswith(", 1, 7, 7) (input channels)")
    x = torch.rand(2, 1, 48, 80, dtype=torch.float64)
    with torch.no_grad():
        diff = (gray(x) - source(x.repeat(1, 3, 1, 1))).abs().max().item()
    assert diff <= TOLERANCE


def test_other_channel_counts_repeat_and_rescale_like_timm():
    weight = torch.randn(8, 3, 7, 7)
    adapted = adapt_first_conv(weight, 5)
    expected = weight.repeat(1, 2, 1, 1)[:, :5] * (3 / 5)
    assert adapted.shape == (8, 5, 7, 7) and torch.allclose(adapted, expected)
    assert torch.equal(adapt_first_conv(weight, 3), weight)


def test_frozen_stages_stay_frozen_after_loading(tmp_path):
    path = _save(tmp_path, torchvision.models.resnet18().state_dict(), "r18.pth")
    encoder = build_backbone("resnet18", frozen_stages=1, pretrained=path)
    assert not encoder.conv1.weight.requires_grad and not encoder.layer1[0].conv1.weight.requires_grad
    assert encoder.layer2[0].conv1.weight.requires_grad


def _hmer_state(prefix, **options):
    encoder = build_backbone("densenet_hmer", **options)
    state = {f"{prefix}{k[len('features.') :]}": v for k, v in encoder.state_dict().items()}
    return encoder, state


def test_bttr_checkpoint_loads_into_densenet_hmer(tmp_path):
    """Lightning-style whole-model file: ``state_dict`` -> ``bttr.encoder.model.conv1.weight`` etc."""
    source, state = _hmer_state("bttr.encoder.model.")
    assert {"bttr.encoder.model.conv1.weight", "bttr.encoder.model.dense1.0.conv1.weight"} <= set(state)
    assert "bttr.encoder.model.trans1.conv1.weight" in state
    state["bttr.encoder.feature_proj.0.weight"] = torch.zeros(256, 684, 1, 1)
    state["bttr.decoder.word_embed.0.weight"] = torch.zeros(113, 256)
    path = _save(tmp_path, {"state_dict": state, "hyper_parameters": {"d_model": 256}}, "bttr.ckpt")
    encoder = build_backbone("densenet_hmer", pretrained=path).eval()
    report = encoder.pretrained_report
    assert report.prefix == "bttr.encoder.model." and report.outside_prefix == 2
    assert report.loaded == len(source.state_dict())
    x = torch.rand(1, 1, 64, 90)
    with torch.no_grad():
        assert torch.equal(encoder(x), source.eval()(x))


def test_comer_checkpoint_needs_the_norm_options(tmp_path):
    _, state = _hmer_state("encoder.model.", stem_norm=True, post_norm=True)
    path = _save(tmp_path, state, "comer.pth")
    with pytest.raises(WeightsMismatchError, match=r"unexpected .*features\.norm1\.weight.*\n.*stem_norm=True"):
        build_backbone("densenet_hmer", pretrained=path)
    encoder = build_backbone("densenet_hmer", stem_norm=True, post_norm=True, pretrained=path)
    assert encoder.pretrained_report.prefix == "encoder.model."


def test_mismatches_are_reported_by_name(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    broken = dict(state)
    del broken["layer2.0.conv1.weight"]
    broken["layer1.0.extra.weight"] = torch.zeros(3)
    broken["layer4.1.bn2.bias"] = torch.zeros(7)
    with pytest.raises(WeightsMismatchError) as caught:
        build_backbone("resnet18", pretrained=_save(tmp_path, broken, "broken.pth"))
    message = str(caught.value)
    assert "missing (1): layer2.0.conv1.weight" in message
    assert "unexpected (1): layer1.0.extra.weight" in message
    assert "mis-shaped (1): layer4.1.bn2.bias (file (7,), model (512,))" in message


def test_a_different_architecture_is_refused(tmp_path):
    path = _save(tmp_path, torchvision.models.resnet50().state_dict(), "r50.pth")
    with pytest.raises(WeightsMismatchError, match="mis-shaped"):
        build_backbone("resnet18", pretrained=path)
    with pytest.raises(WeightsMismatchError, match="no tensor of .* matches"):
        build_backbone("resnet18", pretrained=_save(tmp_path, {"a.b": torch.zeros(2)}, "junk.pth"))


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_files_are_never_unpickled_with_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"conv1.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch hub cache and a network that refuses every download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_offline_download_says_which_file_and_where_to_put_it(offline):
    with pytest.raises(WeightsUnavailableError) as caught:
        build_backbone("resnet50", pretrained=True)
    message = str(caught.value)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    assert str(offline / "resnet50-11ad3fa6.pth") in message


def test_tags_resolve_to_cached_files(offline):
    offline.mkdir(parents=True)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, offline / weight_sets("resnet18")["IMAGENET1K_V1"].filename)
    _same_tensors(build_backbone("resnet18", pretrained=True), state)
    timm_state = timm.create_model("resnet18").state_dict()
    save_file(timm_state, str(offline / "resnet18.a1_in1k.safetensors"))
    _same_tensors(build_backbone("resnet18", pretrained="a1_in1k"), timm_state)


def test_weight_tags_and_their_errors():
    tags = weight_sets("resnet50")
    assert {"DEFAULT", "IMAGENET1K_V1", "IMAGENET1K_V2", "a1_in1k", "tv_in1k"} <= set(tags)
    assert default_weight_set(get_entry("resnet50").weights).filename == "resnet50-11ad3fa6.pth"
    with pytest.raises(ValueError, match=r"weight tags of resnet50: .*IMAGENET1K_V2.*got 'imagenet'"):
        build_backbone("resnet50", pretrained="imagenet")
    with pytest.raises(ValueError, match="densenet_hmer has no published ImageNet weights"):
        build_backbone("densenet_hmer", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be a bool, a weight tag or a file path, got 3"):
        build_backbone("resnet18", pretrained=3)


def test_weight_sets_carry_the_preprocessing_their_sources_declare():
    """Read from torchvision's weight enums and timm's pretrained configs here, nothing downloaded."""
    from timm.models import get_pretrained_cfg
    from torchvision.models import ResNet50_Weights

    sets = weight_sets("resnet50")
    preset = ResNet50_Weights.IMAGENET1K_V2.transforms()
    ours = sets["IMAGENET1K_V2"].preprocess
    assert ours.mean == tuple(preset.mean) and ours.std == tuple(preset.std)
    assert ours.input_size == (preset.crop_size[0],) * 2 and ours.interpolation == preset.interpolation.value
    cfg = get_pretrained_cfg("resnet50.a1_in1k")
    timm_set = sets["a1_in1k"].preprocess
    assert (timm_set.mean, timm_set.std, timm_set.interpolation) == (cfg.mean, cfg.std, cfg.interpolation)
    assert timm_set.input_size == tuple(cfg.input_size[1:])
    vit = weight_sets("timm:vit_small_patch16_224")["augreg_in21k_ft_in1k"].preprocess
    assert vit.mean == get_pretrained_cfg("vit_small_patch16_224.augreg_in21k_ft_in1k").mean == (0.5, 0.5, 0.5)


def test_encoder_preprocess_follows_the_loaded_weights_and_the_input_channels(offline):
    offline.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), offline / weight_sets("resnet18")["IMAGENET1K_V1"].filename)
    rgb = build_backbone("resnet18", pretrained=True).preprocess
    assert rgb.mean == (0.485, 0.456, 0.406) and rgb.std == (0.229, 0.224, 0.225) and rgb.input_size == (224, 224)
    gray = build_backbone("resnet18", pretrained=True, in_channels=1).preprocess
    assert gray.mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,)) and len(gray.std) == 1
    assert build_backbone("resnet18", pretrained=True, in_channels=4).preprocess.mean == (0.485, 0.456, 0.406, 0.485)
    pyramid = build_backbone("resnet18", pretrained=True, out_indices=(2, 3))
    assert pyramid.preprocess == rgb
    assert build_backbone("resnet18").preprocess is None
    loaded = build_backbone("resnet18", pretrained=True)
    load_weights(loaded, torchvision.models.resnet18().state_dict())  # a bare state dict does not say
    assert loaded.preprocess is None


def test_preprocess_normalises_like_torchvision():
    from torchvision.transforms.functional import normalize

    preprocess = weight_sets("resnet18")["IMAGENET1K_V1"].preprocess
    images = torch.randint(0, 256, (2, 3, 17, 23), dtype=torch.uint8)
    expected = normalize(images.float() / 255, list(preprocess.mean), list(preprocess.std))
    torch.testing.assert_close(preprocess(images), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(preprocess(images.float() / 255), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"images must have 3 channels for this Preprocess, got shape \[2, 1, 17"):
        preprocess(images[:, :1])


def test_pretrained_reads_tags_first_and_paths_by_their_form(offline, tmp_path, monkeypatch):
    """A folder named like a tag does not turn the tag into a path; a string is a path by its suffix or folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a1_in1k").mkdir()
    with pytest.raises(WeightsUnavailableError, match="resnet18.a1_in1k"):  # the tag, not the folder
        build_backbone("resnet18", pretrained="a1_in1k")
    with pytest.raises(FileNotFoundError, match="pretrained file 'missing.ckpt' does not exist"):
        build_backbone("resnet18", pretrained="missing.ckpt")
    with pytest.raises(ValueError, match=r"or a checkpoint path \(an os.PathLike, or a string with a suffix"):
        build_backbone("resnet18", pretrained="best")  # neither a tag nor a path
    with pytest.raises(ValueError, match="is a directory, not a checkpoint file"):
        build_backbone("resnet18", pretrained=tmp_path / "a1_in1k")  # a Path is a path


def test_a_string_that_is_both_a_tag_and_a_path_is_refused():
    from backbones.weights import WeightSet, WeightSource, resolve_pretrained

    class Odd(WeightSource):
        def sets(self):
            return [WeightSet("lab", "v2/best.pth", "https://example.org/best.pth", "best.pth")]

        def default_tag(self):
            return "v2/best.pth"

    with pytest.raises(ValueError, match=r"'v2/best.pth' is both a weight tag of m and a file path; pass pathlib"):
        resolve_pretrained("m", [Odd()], "v2/best.pth")
    assert resolve_pretrained("m", [Odd()], True).tag == "v2/best.pth"
