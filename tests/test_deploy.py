"""Deployment: ONNX export with dynamic batch, H, W checked by onnxruntime; fuse() parity; the export CLI."""

import json

import pytest
import torch
from backbones.adapters import MaskedEncoder
from conftest import LIGHT, reduced_stride

from backbones import build_backbone, export_onnx
from backbones.cli import main
from backbones.deploy import check_onnx

pytest.importorskip("onnxruntime")
SIZES = [(37, 101), (129, 317), (45, 33)]  # unseen by the exporter (it traces at another size)

# a plain resnet18's file is docs/deploying.md's example (tests/test_readme.py); a fused DenseNet's is
# test_export_cli_exit_codes's
CASES = {
    "densenet_hmer-pyramid": lambda: build_backbone(
        "densenet_hmer", block_layers=(3, 3, 3), stem_norm=True, out_indices=(1, 2), out_channels=(16, 32)
    ),
    "timm-convnext-edge-padded": lambda: build_backbone(
        "timm:convnext_zepto_rms", output_stride=(16, 8), out_channels=32
    ),
    "masked-resnet18-text-line": lambda: MaskedEncoder(
        build_backbone("resnet18", in_channels=1, out_channels=64, strides=(1, (2, 1), (2, 1), (2, 1)))
    ),
}
# what each case must give, from the configurations above: (channels, (sh, sw)) per output
EXPECTED = {
    "densenet_hmer-pyramid": [(16, (4, 4)), (32, (8, 8))],  # stem /4, each transition /2
    "timm-convnext-edge-padded": [(32, (16, 8))],
    "masked-resnet18-text-line": [(64, (32, 4))],  # stem /4, then three (2, 1) stages
}
CHANNELS = {"densenet_hmer-pyramid": 1, "timm-convnext-edge-padded": 3, "masked-resnet18-text-line": 1}


def randomise_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm running statistics, so that folding and export have something to get wrong."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def _run_onnx(path, x: torch.Tensor, mask=None) -> list:
    """The file's outputs for ``x`` (and a mask) by onnxruntime directly, not through check_onnx."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"image": x.numpy()} if mask is None else {"image": x.numpy(), "mask": mask.numpy()}
    return [torch.from_numpy(out) for out in session.run(None, feeds)]


@pytest.mark.parametrize("case", CASES)
def test_onnx_export_matches_pytorch_at_unseen_odd_sizes(case, tmp_path):
    """onnxruntime, run here, gives PyTorch's outputs (within 1e-4 of each output's scale) in the shapes the
    configuration means, [2, C, ceil(H/sh), ceil(W/sw)], at sizes the exporter never traced; check_onnx says so too."""
    encoder = randomise_norms(CASES[case]()).train()
    path = export_onnx(encoder, tmp_path / f"{case}.onnx")
    assert path.stat().st_size > 0 and encoder.training  # the caller's mode is kept
    masked = isinstance(encoder, MaskedEncoder)
    for h, w in SIZES:
        x = torch.randn(2, CHANNELS[case], h, w)
        mask = torch.rand(2, h, w) > 0.5 if masked else None
        got = _run_onnx(path, x, mask)
        with torch.no_grad():
            expected = list(encoder.eval()(x, mask)) if masked else list(encoder.eval().forward_outputs(x))
        encoder.train()
        shapes = [(2, c, -(-h // sh), -(-w // sw)) for c, (sh, sw) in EXPECTED[case]]
        assert [tuple(t.shape) for t in got[: len(shapes)]] == shapes
        for onnx_out, torch_out in zip(got, expected):
            scale = float(torch_out.abs().max()) if torch_out.is_floating_point() else 0.0
            torch.testing.assert_close(onnx_out, torch_out, rtol=0, atol=1e-4 * max(scale, 1e-12))
    assert all(check.ok for check in check_onnx(encoder, path, SIZES))


def test_export_errors_name_the_problem(tmp_path):
    encoder = build_backbone("resnet18")
    with pytest.raises(ValueError, match=r"opset must be an int in 18\.\.\d+, got 3"):
        export_onnx(encoder, tmp_path / "x.onnx", opset=3)
    with pytest.raises(ValueError, match=r"example_size must be >= 2, got \(1, 64\)"):
        export_onnx(encoder, tmp_path / "x.onnx", example_size=(1, 64))
    with pytest.raises(TypeError, match="encoder must be a backbones.Backbone, FeaturePyramid or MaskedEncoder, got"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.onnx")


@pytest.mark.parametrize("name", LIGHT)  # the HEAVY names are deeper stacks of a LIGHT name's blocks
def test_fuse_keeps_the_outputs_of_every_family(name):
    torch.manual_seed(0)
    kwargs = {"out_channels": 48, "output_stride": reduced_stride(name)}
    encoder = randomise_norms(build_backbone(name, **kwargs)).eval()
    x = torch.randn(2, encoder.in_channels, 45, 67)
    with torch.no_grad():
        before = encoder(x)
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
        fused = encoder.fuse()
        after = fused(x)
    assert fused is encoder and fused.folded_batchnorms > 0
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert left == norms - fused.folded_batchnorms
    if name.startswith("resnet") or name.startswith(("resnext", "wide")):
        assert left == 0
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5 * float(before.abs().max()))
    assert encoder.output_size(45, 67) == tuple(after.shape[2:])


def test_fuse_counts_what_stays_and_refuses_training_mode():
    dense = build_backbone("densenet121").eval().fuse()
    assert dense.folded_batchnorms == 1 + 58  # the stem's norm0 and each dense layer's norm2
    left = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(left) == 58 + 3 + 1 and all(n.endswith(("norm1", "norm", "norm5")) for n in left)
    with pytest.raises(RuntimeError, match=r"call encoder.eval\(\) first"):
        build_backbone("resnet18").train().fuse()
    state = build_backbone("resnet18", out_channels=8).eval().fuse().state_dict()
    assert "conv1.bias" in state and "bn1.weight" not in state and "adapters.0.bn.weight" not in state


def test_fused_models_script():
    """(A fused model's ONNX file is checked by test_export_cli_exit_codes, through --fuse.)"""
    encoder = randomise_norms(build_backbone("densenet_hmer", block_layers=(2, 2, 2), out_channels=32)).eval().fuse()
    x = torch.randn(1, 1, 41, 77)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(encoder)(x), encoder(x), rtol=1e-5, atol=1e-5)


def test_export_cli_exit_codes(capsys, tmp_path, monkeypatch):
    path = tmp_path / "r18.onnx"
    spec = "densenet_hmer:block_layers=2x2x2,out_channels=32"
    torch.manual_seed(0)
    assert main(["export", spec, "--onnx", str(path), "--check", "37x101,45x33", "--fuse", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [row["size"] for row in report["checks"]] == [[37, 101], [45, 33]]
    assert report["checks"][0]["shapes"] == [[2, 32, 3, 7]]  # 37x101 at /16
    # the same seed gives the same weights: the file just written is what a second export would write
    torch.manual_seed(0)
    monkeypatch.setattr("backbones.deploy.export_onnx", lambda encoder, onnx, opset=None: path)
    monkeypatch.setattr("backbones.deploy._onnx.RELATIVE_TOLERANCE", -1.0)  # no difference is within it: exit 1
    assert main(["export", spec, "--onnx", str(path), "--check", "37x101", "--fuse"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["export", "resnet5", "--onnx", str(path)]) == 2
    assert "did you mean resnet50" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["export", spec, "--onnx", str(path), "--check", "37"])
    assert caught.value.code == 2
