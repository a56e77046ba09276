"""The second battery of bad calls, on the newer paths: strict timm loading, fuse() and export that cannot half-fail,
registry and namespace checks, timm options, the adapters' inputs, the CLI without tracebacks."""

import json
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from backbones.adapters import MaskedEncoder, SinePositionalEncoding2D, from_sequence, to_sequence
from torch import nn

from backbones import (
    BackboneConfig,
    WeightsMismatchError,
    build_backbone,
    build_on_meta,
    export_onnx,
    get_entry,
    list_backbones,
    load_weights,
    register_backbone,
    register_namespace,
    unregister_backbone,
    unregister_namespace,
)
from backbones.cli import main
from backbones.core import SequentialBackbone, Stages, stride_of
from backbones.deploy import check_onnx
from backbones.registry import BackboneEntry, weight_sets


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [(n, type(m)) for n, m in model.named_modules()]


def _unchanged(model, snapshot):
    state, modules = snapshot
    now = model.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], v) for k, v in state.items())
    assert [(n, type(m)) for n, m in model.named_modules()] == modules


# -- 1. timm checkpoints load strictly, as every family's ----------------------------------------------------
@pytest.fixture(scope="module")
def timm_resnet18_state():
    torch.manual_seed(0)
    return timm.create_model("resnet18").state_dict()


@pytest.mark.parametrize(
    "state, message",
    [
        (lambda s: {"foo.weight": torch.zeros(3)}, "no tensor of a state dict matches a parameter"),
        (lambda s: timm.create_model("resnet34").state_dict(), "unexpected (96): layer1.2.bn1.bias"),
        (lambda s: {f"vision.backbone.resnet.{k}": v for k, v in list(s.items())[:4]}, "missing ("),
        (lambda s: {k: v for k, v in s.items() if k != "layer4.1.bn2.running_var"},
         "missing (1): body.layer4.1.bn2.running_var"),
        (lambda s: {**s, "layer4.1.bn2.weight": torch.zeros(3)}, "mis-shaped (1): body.layer4.1.bn2.weight"),
    ],
    ids=["foreign-keys", "resnet34-file", "abinet-file", "missing-statistic", "mis-shaped"],
)  # fmt: skip
def test_timm_checkpoints_are_refused_by_name_and_change_nothing(timm_resnet18_state, tmp_path, state, message):
    encoder = build_backbone("timm:resnet18")
    before = _snapshot(encoder)
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(encoder, state(timm_resnet18_state))
    assert message in str(caught.value)
    _unchanged(encoder, before)
    torch.save(state(timm_resnet18_state), tmp_path / "file.pth")
    with pytest.raises(WeightsMismatchError, match="does not fit|matches a parameter"):
        build_backbone("timm:resnet18", pretrained=str(tmp_path / "file.pth"))


def test_timm_files_load_the_same_through_pretrained_and_load_weights(timm_resnet18_state, tmp_path):
    """A whole-model timm file (its fc reported as ignored), a features_only file, a training checkpoint, and a
    pyramid pruned by out_indices all load; the features equal timm's own."""
    torch.save({"model": timm_resnet18_state, "step": torch.tensor(5)}, tmp_path / "train.pth")
    built = build_backbone("timm:resnet18", pretrained=str(tmp_path / "train.pth")).eval()
    assert built.pretrained_report.loaded == 120 and sorted(built.pretrained_report.ignored) == ["fc.bias", "fc.weight"]
    loaded = load_weights(build_backbone("timm:resnet18").eval(), {"model": timm_resnet18_state, "step": 5})
    assert loaded.loaded == 120
    reference = timm.create_model("resnet18", features_only=True).eval()
    reference.load_state_dict(timm_resnet18_state, strict=False)
    assert load_weights(build_backbone("timm:resnet18"), reference.state_dict()).loaded == 120
    pyramid = build_backbone("timm:resnet18", out_indices=(1, 2)).eval()
    report = load_weights(pyramid, timm_resnet18_state)
    assert "fc.weight" in report.ignored and report.loaded == len(pyramid.state_dict())
    native = build_backbone("resnet18", out_indices=(1, 2))
    assert load_weights(native, build_backbone("resnet18").state_dict()).loaded == len(native.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(built(x), reference(x)[-1]) and torch.equal(pyramid(x)[1], reference(x)[2])


def test_the_weights_cli_refuses_a_foreign_file_for_a_timm_model(tmp_path, capsys):
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "foo.pth")
    assert main(["weights", "timm:resnet18", "--file", str(tmp_path / "foo.pth")]) == 1
    assert "cannot load" in capsys.readouterr().out


# -- 2. fuse() is all or nothing ---------------------------------------------------------------------------
def _realistic_norms(model):
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


class _ReluBetween(SequentialBackbone):
    """Declares (conv, bn) fusable although a ReLU sits between them: folding would change the outputs."""

    fusable_pairs = (("conv", "bn"),)

    def build(self, config: BackboneConfig) -> Stages:
        stem = OrderedDict(block=_Block(self.in_channels))
        return Stages(0, [self.add_stage("stem", stem, 8, stride_of())])


class _Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


def test_fuse_refuses_the_meta_device_up_front():
    meta = build_on_meta("resnet18")
    with pytest.raises(RuntimeError, match="fuse\\(\\) needs real weights, but the model is on the meta device"):
        meta.fuse()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in meta.modules()) == 20


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_fold_that_changes_the_outputs_is_undone(dtype):
    model = _realistic_norms(_ReluBetween(BackboneConfig())).eval().to(dtype)
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="nothing was folded, the model is as it was"):
        model.fuse()
    _unchanged(model, before)


def test_a_failure_half_way_through_fuse_is_undone(monkeypatch):
    import backbones.core._fusion as fusion

    model = _realistic_norms(build_backbone("resnet18", out_channels=8)).eval()
    before, calls, real = _snapshot(model), [], fusion.fuse_conv_bn_weights

    def failing(*args):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(fusion, "fuse_conv_bn_weights", failing)
    with pytest.raises(RuntimeError, match=r"folding BatchNorms into convs failed for ResNet \(out of memory\)"):
        model.fuse()
    _unchanged(model, before)


def test_half_precision_fuses_within_its_own_rounding():
    """A float16 model with realistic statistics fuses; the result stays within float16's rounding of the model."""
    model = _realistic_norms(build_backbone("resnet18", out_channels=8)).eval()
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        exact = model(x)
        half = model.half()
        unfused = half(x.half()).float()
        fused = half.fuse()(x.half()).float()
    rounding = (unfused - exact).abs().max()
    assert half.folded_batchnorms == 21  # resnet18's 20 and the adapter's
    assert (fused - unfused).abs().max() <= 4 * rounding + 1e-4 * exact.abs().max()


# -- 3. export_onnx and check_onnx check their arguments ---------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small 1-channel encoder and its ONNX file for batch 2 at 48x64 only (``dynamic=False``)."""
    folder = tmp_path_factory.mktemp("onnx")
    encoder = build_backbone("densenet_hmer", block_layers=(1, 1, 1), growth_rate=8).eval()
    return encoder, export_onnx(encoder, folder / "static.onnx", dynamic=False, example_size=(48, 64)), folder


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e, f: export_onnx(e, f / "x.onnx", opset=17), ValueError, "opset must be an int in 18.."),
        (lambda e, f: export_onnx(e, f / "x.onnx", example_size=0), ValueError, "example_size must be >= 2, got 0"),
        (lambda e, f: export_onnx(e, f / "x.onnx", example_size=()), TypeError, "example_size must be an int or a (h"),
        (lambda e, f: export_onnx(e, None), TypeError, "path must be a str or os.PathLike naming the .onnx file"),
        (lambda e, f: export_onnx(e, f / "x.onnx", dynamic="yes"), TypeError, "dynamic must be a bool"),
        (lambda e, f: export_onnx(build_on_meta("resnet18"), f / "x.onnx"), ValueError, "is on the meta device"),
        (lambda e, f: export_onnx(e, "/dev/null/x.onnx"), ValueError, "its folder cannot be created"),
    ],
)  # fmt: skip
def test_export_onnx_names_bad_arguments(tmp_path, call, error, message):
    """Refused before anything is exported."""
    with pytest.raises(error) as caught:
        call(build_backbone("resnet18", in_channels=1, out_channels=8), tmp_path)
    assert message in str(caught.value) and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e, s, f: check_onnx(e, s, [(-3, 40)]), ValueError, "each of sizes must be >= 1, got (-3, 40)"),
        (lambda e, s, f: check_onnx(e, s, ["axb"]), TypeError, "each of sizes must be an int or a (h, w) tuple"),
        (lambda e, s, f: check_onnx(e, s, []), ValueError, "sizes must be a non-empty list of (H, W) pairs"),
        (lambda e, s, f: check_onnx(e, s, [(32, 32)], batch=0), ValueError, "batch must be an int >= 1, got 0"),
        (lambda e, s, f: check_onnx(e, f / "missing.onnx", [(32, 32)]), ValueError, "must name an existing .onnx"),
        (lambda e, s, f: check_onnx(build_backbone("resnet18", out_channels=8).eval(), s, [(32, 32)]),
         ValueError, "was exported for 1 input channels, but the encoder takes 3"),
        (lambda e, s, f: check_onnx(e, s, [(32, 32)]), ValueError, "only takes batch 2 at 48x64, got batch 2"),
        (lambda e, s, f: check_onnx(e, f / "garbage.onnx", [(32, 32)]), ValueError, "is not a model onnxrun"),
    ],
)  # fmt: skip
def test_check_onnx_names_bad_arguments(exported, call, error, message):
    encoder, static, folder = exported
    (folder / "garbage.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(error) as caught:
        call(encoder, static, folder)
    assert message in str(caught.value)


# -- 4. the registry and namespaces check what they are given ---------------------------------------------
class _Tiny(SequentialBackbone):
    def build(self, config: BackboneConfig) -> Stages:
        stem = OrderedDict(conv=nn.Conv2d(self.in_channels, 4, 3, 2, 1))
        return Stages(0, [self.add_stage("stem", stem, 4, stride_of(*stem.values()))])


def test_namespaces_and_registrations_are_checked_where_they_are_made():
    with pytest.raises(TypeError, match=r"register_namespace\('bad'\): resolve must be a function, got None"):
        register_namespace("bad", None, None)
    register_namespace("lab", lambda name: None, lambda pattern: None)
    try:
        with pytest.raises(TypeError, match="the resolve function of namespace 'lab:' returned NoneType for 'x'"):
            build_backbone("lab:x")
        with pytest.raises(TypeError, match="the list_names of namespace 'lab:' must return a list of names"):
            list_backbones("lab:*")
    finally:
        unregister_namespace("lab")
    with pytest.raises(TypeError, match=r"weights must be a tuple of weight sources such as \(TorchvisionWeights"):
        register_backbone("test_bad_weights", weights="resnet50")
    with pytest.raises(TypeError, match="pattern must be a shell-style string such as 'resnet\\*' or None, got 123"):
        list_backbones(123)
    register_backbone("test_returns_42")(lambda config: 42)
    try:
        with pytest.raises(TypeError, match="the builder of 'test_returns_42' returned int, not a backbones.Backbone"):
            build_backbone("test_returns_42")
    finally:
        unregister_backbone("test_returns_42")
    assert "test_returns_42" not in list_backbones() and isinstance(get_entry("resnet18"), BackboneEntry)


# -- 5. timm options -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, options, error, message",
    [
        ("timm:resnet18", {"bogus_option": None}, ValueError, "got bogus_option=None: timm drops options set to None"),
        ("timm:resnet18", {"in_chans": 1}, TypeError, "got in_chans=1: use in_channels=, the common option"),
        ("timm:resnet18", {"features_only": False}, TypeError, "features are always on"),
        ("timm:resnet18", {"checkpoint_path": "/missing.pth"}, TypeError, "use pretrained='path/to/file'"),
        ("timm:resnet_18", {}, KeyError, "unknown timm model 'resnet_18'; did you mean resnet18"),
        ("timm:ResNet18", {}, KeyError, "unknown timm model 'ResNet18'; did you mean resnet18"),
    ],
)
def test_timm_options_that_timm_would_misread(name, options, error, message):
    with pytest.raises(error) as caught:
        build_on_meta(name, **options)
    assert message in str(caught.value.args[0] if error is KeyError else caught.value)


def test_a_timm_name_with_its_weight_tag_has_those_weights_by_default():
    sets = weight_sets("timm:resnet18.a1_in1k")
    assert "a1_in1k" in sets and get_entry("timm:resnet18.a1_in1k").weights[0].default_tag() == "a1_in1k"


def test_an_empty_batch_gives_an_empty_output_for_every_kind():
    for encoder in (build_backbone("timm:vit_tiny_patch16_224").eval(), build_backbone("resnet18").eval()):
        with torch.no_grad():
            assert encoder(torch.zeros(0, 3, 37, 45)).shape[0] == 0


# -- 6. the adapters and the inputs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda e: MaskedEncoder(e)(np.zeros((1, 1, 32, 32)), torch.zeros(1, 32, 32)), TypeError,
         "the image must be a torch.Tensor [N, C, H, W], got ndarray"),
        (lambda e: MaskedEncoder(e)(torch.zeros(1, 1, 32, 32), None), TypeError, "mask must be a torch.Tensor"),
        (lambda e: to_sequence(np.zeros((1, 4, 2, 3))), TypeError, "feature must be a torch.Tensor [N, C, h, w]"),
        (lambda e: to_sequence(None), TypeError, "feature must be a torch.Tensor [N, C, h, w], got NoneType"),
        (lambda e: from_sequence(torch.zeros(1, 6, 4), 2, 4), ValueError, "height * width = 8 positions"),
        (lambda e: from_sequence(torch.zeros(1, 6), 2, 3), ValueError, "sequence must be [N, h*w, C], got"),
        (lambda e: SinePositionalEncoding2D(32, temperature=0), ValueError, "temperature must be a float in (1, inf]"),
        (lambda e: SinePositionalEncoding2D(32)(torch.zeros(2, 3)), ValueError, "feature must be [N, C, h, w]"),
        (lambda e: build_backbone("resnet18", pretrained=e.state_dict()), TypeError,
         "got a state dict; build first, then load_weights(model, state_dict)"),
        (lambda e: e(torch.zeros(1, 1, 32, 32, device="meta")), ValueError, "input is on meta but the model is on cpu"),
        (lambda e: build_on_meta("resnet18", in_channels=1)(torch.zeros(1, 1, 32, 32)), ValueError,
         "input is on cpu but the model is on meta"),
    ],
)  # fmt: skip
def test_adapters_and_inputs_get_named_errors(call, error, message):
    encoder = build_backbone("resnet18", in_channels=1).eval()
    with pytest.raises(error) as caught:
        call(encoder)
    assert message in str(caught.value) and len(str(caught.value)) < 400


# -- 7. the CLI never shows a traceback ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["check", "timm:coatnet_0_rw_224", "--input", "1x3x512x512"], 2, "input H must be <= 224 and W <= 224"),
        (["export", "resnet18", "--onnx", "/dev/null/x.onnx"], 2, "--onnx /dev/null/x.onnx: its folder cannot be made"),
        (["list", "--family", "nosuchfamily"], 2, "--family must be one of densenet, densenet_hmer, ocr, resnet"),
        (["list", "timm:zzzz*"], 1, "no backbone matches 'timm:zzzz*' (`backbones list` shows all"),
        (["weights", "resnet18:bogus_option=1"], 2, "unknown option(s) bogus_option"),
    ],
)
def test_cli_errors_are_one_line_with_the_right_code(capsys, argv, code, message):
    for json_flag in ([], ["--json"]):
        assert main([*argv, *json_flag]) == code
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err + captured.out
        assert len(captured.err.strip().splitlines()) == 1
        if json_flag:
            assert json.loads(captured.out) == {"error": captured.err.split("error: ", 1)[1].strip(), "exit": code}
    assert "timm:timm:" not in message


def test_cli_argument_errors_exit_2_also_under_json(capsys):
    for argv in (["export", "resnet18", "--onnx", "x.onnx", "--opset", "17"], ["compare", "a", "b", "--verify", "-1"]):
        with pytest.raises(SystemExit) as caught:
            main([*argv, "--json"])
        captured = capsys.readouterr()
        assert caught.value.code == 2 and json.loads(captured.out)["exit"] == 2 and "Traceback" not in captured.err


def test_compare_reports_a_size_above_a_models_maximum_as_a_mismatch(capsys):
    code = main(["compare", "timm:coatnet_0_rw_224", "timm:coatnet_0_rw_224", "--sizes", "300x300,64x64", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and [m["what"] for m in result["mismatches"]] == ["input limits"]
    assert "max_input_size" in result["mismatches"][0]["reference"]
