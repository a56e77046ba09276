"""pretrained=: files in every key layout, tags through the cache, offline errors, input-conv adaptation."""

import pickle
import urllib.error

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from backbones import WeightsUnavailableError, build_backbone, get_entry, weight_sets
from backbones.loading import WeightsMismatchError, adapt_first_conv, load_weights
from backbones.sources import default_weight_set, read_state_dict

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
