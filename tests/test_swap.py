"""swap(): infer the contract of the encoder inside a model, build the match, verify, replace, keep the rest of the
checkpoint. The client-like models are written here from the clients' call conventions (no client code)."""

import json

import pytest
import torch
import torch.nn.functional as F
from backbones.adapters import MaskedEncoder
from conftest import padding_on_grid
from torch import nn

from backbones import FeaturePyramid, WeightsMismatchError, swap
from backbones.cli import main

TARGETS = ["resnet18", "densenet_hmer", "timm:resnet10t"]  # a ResNet, a DenseNet, a timm model
SIZES = [(32, 100), (48, 160), (64, 96)]


class _DenseLayer(nn.Module):
    def __init__(self, channels, growth):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, 4 * growth, 1, bias=False), nn.BatchNorm2d(4 * growth)
        self.conv2, self.bn2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False), nn.BatchNorm2d(growth)

    def forward(self, x):
        return torch.cat((x, F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))), 1)


class SmallDenseB(nn.Module):
    """A BTTR/CoMER-style encoder: ``(img, mask) -> (feature, mask)``, the mask only sliced (``mask[:, 0::2, 0::2]``
    once per halving), /16, ceil pooling."""

    def __init__(self, growth=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2 * growth, 7, 2, 3, bias=False)
        channels, stages = 2 * growth, []
        for i in range(3):
            stages.append(_DenseLayer(channels, growth))
            channels += growth
            if i < 2:
                stages.append(nn.Sequential(nn.Conv2d(channels, channels // 2, 1), nn.BatchNorm2d(channels // 2)))
                channels //= 2
        self.stages, self.out_channels = nn.ModuleList(stages), channels

    def forward(self, x, x_mask):
        out = F.max_pool2d(F.relu(self.conv1(x)), 2, ceil_mode=True)
        mask = x_mask[:, 0::2, 0::2][:, 0::2, 0::2]
        for i, stage in enumerate(self.stages):
            out = stage(out)
            if i in (1, 3):
                out, mask = F.avg_pool2d(F.relu(out), 2, ceil_mode=True), mask[:, 0::2, 0::2]
        return out, mask


class MaskedRecognizer(nn.Module):
    """BTTR-like: ``encoder.model`` is the DenseNet, then a 1x1 projection, LayerNorm, a decoder over (h w)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.model = SmallDenseB()
        self.encoder.feature_proj = nn.Conv2d(self.encoder.model.out_channels, 16, 1)
        self.encoder.norm = nn.LayerNorm(16)
        self.decoder = nn.Linear(16, 7)

    def forward(self, img, mask):
        feature, mask = self.encoder.model(img, mask)
        feature = self.encoder.norm(self.encoder.feature_proj(feature).permute(0, 2, 3, 1)).flatten(1, 2)
        return self.decoder(feature).masked_fill(mask.flatten(1)[..., None].bool(), 0), mask


class CountingRecognizer(nn.Module):
    """CAN-like: ``feature = encoder(images)``; the float mask (1 = valid) is sliced outside by ``::16``."""

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(1, 8, 3, 2, 1)] + [nn.Conv2d(8, 8, 3, 2, 1) for _ in range(3)]
        self.encoder = nn.Sequential(*[m for layer in layers for m in (layer, nn.ReLU())])
        self.counting = nn.Conv2d(8, 5, 1)

    def forward(self, images, images_mask):
        return self.counting(self.encoder(images)) * images_mask[:, :, ::16, ::16]


def crnn_cnn():
    """CRNN's VGG shape: valid last conv, (2, 1) pools padding a column on each side: H/16 - 1 rows, W/4 + 1."""
    layers, channels = [], 1
    for width, pool in [(8, (2, 2)), (16, (2, 2)), (16, None), (32, "column"), (32, None)]:
        layers += [nn.Conv2d(channels, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU()]
        if pool == "column":
            layers.append(nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        elif pool:
            layers.append(nn.MaxPool2d(2, 2))
        channels = width
    return nn.Sequential(*layers, nn.MaxPool2d((2, 2), (2, 1), (0, 1)), nn.Conv2d(32, 32, 2), nn.ReLU())


class LineRecognizer(nn.Module):
    """CRNN-like: ``cnn`` then a BiLSTM over the columns of a 1-row map, CTC-style outputs [T, N, classes]."""

    def __init__(self):
        super().__init__()
        self.cnn = crnn_cnn()
        self.rnn = nn.LSTM(32, 8, bidirectional=True)
        self.head = nn.Linear(16, 11)

    def forward(self, x):
        conv = self.cnn(x)
        if conv.shape[2] != 1:
            raise ValueError(f"the height of conv must be 1, got {conv.shape[2]}")
        out, _ = self.rnn(conv.squeeze(2).permute(2, 0, 1))
        return self.head(out)


class PyramidEncoder(nn.Module):
    """Returns a list of maps at /8, /16 and /32 (a detector's body)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)
        )
        self.down = nn.ModuleList([nn.Conv2d(8, 16, 3, 2, 1), nn.Conv2d(16, 32, 3, 2, 1)])

    def forward(self, x):
        outputs = [self.stem(x)]
        for layer in self.down:
            outputs.append(layer(F.relu(outputs[-1])))
        return outputs


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = PyramidEncoder()
        self.heads = nn.ModuleList([nn.Conv2d(c, 4, 1) for c in (8, 16, 32)])

    def forward(self, x):
        return sum(head(f).mean((2, 3)) for head, f in zip(self.heads, self.body(x)))


def _padded(sizes, channels=1):
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    images, pad = torch.zeros(len(sizes), channels, h, w), torch.ones(len(sizes), h, w, dtype=torch.bool)
    for i, (hi, wi) in enumerate(sizes):
        images[i, :, :hi, :wi], pad[i, :hi, :wi] = torch.rand(channels, hi, wi), False
    return images, pad


def _backward_reaches(model, new, loss):
    loss.backward()
    assert all(p.grad is not None for p in new.parameters() if p.requires_grad)
    assert all(p.grad is not None for n, p in model.named_parameters() if "decoder" in n or "head" in n)


@pytest.mark.parametrize("target", TARGETS)
def test_a_masked_encoder_is_swapped_and_the_whole_model_trains(target):
    model = MaskedRecognizer()
    report = swap(model, "encoder.model", target, sizes=SIZES)
    new = model.encoder.model
    assert isinstance(new, MaskedEncoder) and new.encoder.in_channels == 1 and new.out_channels == 9
    assert report.old.call == report.new.call == "(x, mask) -> ([N, C, h, w], mask)" and report.changes == []
    images, pad = _padded([(37, 101), (64, 80)])
    logits, mask = model(images, pad)
    assert torch.equal(mask, padding_on_grid([(37, 101), (64, 80)], (4, 7), (16, 16)))
    assert logits.shape == (2, 28, 7)
    _backward_reaches(model, new, logits.square().mean())


@pytest.mark.parametrize("target", TARGETS)
def test_an_encoder_with_masks_outside_is_swapped(target):
    model = CountingRecognizer()
    swap(model, "encoder", target, sizes=SIZES)
    assert model.encoder.out_channels == 8 and model.encoder.output_stride == (16, 16)
    images, pad = _padded([(54, 46), (40, 100)])
    out = model(images, (~pad).float()[:, None])
    assert out.shape == (2, 5, 4, 7)
    _backward_reaches(model, model.encoder, out.square().mean())


@pytest.mark.parametrize("target", ["resnet18", "densenet121", "timm:resnet10t"])  # densenet_hmer stops at /16
def test_a_crnn_line_encoder_needs_allow_grid_change_and_then_trains(target):
    model = LineRecognizer()
    with pytest.raises(ValueError, match=r"at 32x100 it gives 1x26, .* gives 1x25 .*pass allow_grid_change=True"):
        swap(model, "cnn", target, sizes=SIZES)
    assert isinstance(model.cnn, nn.Sequential)  # nothing replaced
    report = swap(model, "cnn", target, sizes=SIZES, allow_grid_change=True)
    assert report.old.stride == "32 (only at 32) x 4 (floor+1)" and report.new.stride == "32 x 4"
    assert "grid at 32x100: 1x26 -> 1x25" in report.changes
    out = model(torch.randn(2, 1, 32, 100))
    assert out.shape == (25, 2, 11)
    _backward_reaches(model, model.cnn, out.square().mean())


def test_a_data_parallel_model_and_sizes_the_encoder_refuses():
    model = nn.DataParallel(LineRecognizer())
    report = swap(model, "cnn", "resnet18", sizes=[(16, 64), *SIZES], allow_grid_change=True)
    assert report.path == "module.cnn" and "16x64" in report.skipped and "16x64" not in report.old.grids
    assert model.module.cnn.output_stride == (32, 4)
    assert model(torch.randn(2, 1, 32, 64)).shape == (16, 2, 11)


@pytest.mark.parametrize("target", ["resnet18", "densenet121", "timm:resnet10t"])  # densenet_hmer stops at /16
def test_a_pyramid_encoder_becomes_a_feature_pyramid(target):
    model = Detector()
    report = swap(model, "body", target, sizes=[(64, 96), (77, 131)])
    pyramid = model.body
    assert isinstance(pyramid, FeaturePyramid) and pyramid.output_stride == ((8, 8), (16, 16), (32, 32))
    assert pyramid.out_channels == (8, 16, 32) and report.old.call == report.new.call == "(x) -> 3 maps"
    out = model(torch.randn(2, 3, 70, 90))
    _backward_reaches(model, pyramid, out.square().mean())


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training, type(m)) for n, m in model.named_modules()],
        [(n, p.requires_grad) for n, p in model.named_parameters()],
    )


def _same(model, snapshot):
    state, modes, grads = snapshot
    now = model.state_dict()
    assert set(now) == set(state) and all(torch.equal(now[k], v) for k, v in state.items())
    assert [(n, m.training, type(m)) for n, m in model.named_modules()] == modes
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == grads


def test_a_dry_run_and_the_probes_change_nothing():
    model = MaskedRecognizer().train()
    model.encoder.model.stages[1].eval()  # a submodule kept in eval by hand stays so
    model.encoder.feature_proj.weight.requires_grad_(False)
    before, encoder = _snapshot(model), model.encoder.model
    report = swap(model, "encoder.model", "resnet18", sizes=SIZES, dry_run=True)
    _same(model, before)
    assert model.encoder.model is encoder and report.dry_run and "dry run: nothing replaced" in str(report)
    with pytest.raises(RuntimeError, match="load_rest after a dry run: nothing was swapped"):
        report.load_rest({})


def test_load_rest_keeps_every_tensor_outside_the_encoder(tmp_path):
    torch.manual_seed(0)
    trained = MaskedRecognizer()
    checkpoint = {"state_dict": {f"lit.{k}": v for k, v in trained.state_dict().items()}, "epoch": 7}
    torch.save(checkpoint, tmp_path / "epoch=7.ckpt")
    model = MaskedRecognizer()
    report = swap(model, "encoder.model", "resnet18", sizes=SIZES)
    encoder_before = {k: v.clone() for k, v in model.encoder.model.state_dict().items()}
    loaded = report.load_rest(str(tmp_path / "epoch=7.ckpt"))
    assert loaded.prefix == "lit." and loaded.loaded == len([k for k in trained.state_dict() if ".model." not in k])
    assert sorted(loaded.dropped) == sorted(f"encoder.model.{k}" for k in trained.encoder.model.state_dict())
    for key, value in trained.state_dict().items():
        if not key.startswith("encoder.model."):
            assert torch.equal(model.state_dict()[key], value), key
    assert all(torch.equal(v, model.encoder.model.state_dict()[k]) for k, v in encoder_before.items())
    assert "dropped on purpose: encoder.model.conv1.weight" in str(loaded)


def test_load_rest_is_strict_and_atomic():
    trained, model = MaskedRecognizer(), MaskedRecognizer()
    report = swap(model, "encoder.model", "resnet18", sizes=SIZES)
    before = _snapshot(model)
    broken = dict(trained.state_dict())
    broken["decoder.weight"] = torch.zeros(3, 3)
    del broken["encoder.norm.bias"]
    broken["decoder.extra"] = torch.zeros(1)
    with pytest.raises(WeightsMismatchError) as caught:
        report.load_rest({"model": broken})
    message = str(caught.value)
    assert "missing (1): encoder.norm.bias" in message and "unexpected (1): decoder.extra" in message
    assert "mis-shaped (1): decoder.weight (file (3, 3), model (7, 16))" in message and "unchanged" in message
    _same(model, before)


def test_the_mask_layout_is_found_by_what_the_module_takes_and_returns():
    """BTTR's slicing takes float [N, 1, H, W] masks too but returns them off the grid: bool [N, H, W] it is. A
    module that slices [:, :, ::16, ::16] refuses 3-D masks: float [N, 1, H, W] it is, and stays float."""

    class FloatMasked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 16, 16, 0)

        def forward(self, x, mask):
            return F.pad(self.conv(x), (0, x.shape[3] % 16 > 0, 0, x.shape[2] % 16 > 0)), mask[:, :, ::16, ::16]

    model = nn.Module()
    model.encoder = FloatMasked()
    report = swap(model, "encoder", "resnet18", sizes=SIZES)
    assert report.old.mask.startswith("[N, 1, H, W], 1 = valid (float32")
    images, pad = _padded([(40, 90), (64, 64)])
    _, small = model.encoder(images, (~pad).float()[:, None])
    assert small.dtype == torch.float32 and small.shape == (2, 1, 4, 6)
    long_mask = MaskedRecognizer()
    long_report = swap(long_mask, "encoder.model", "resnet18", example=(images, pad.long()), sizes=SIZES)
    assert long_report.old.mask == "[N, H, W], True = padding (int64, passed through)"
    assert long_mask.encoder.model(images, pad.long())[1].dtype == torch.int64


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m: swap(m, "encoder.modle", "resnet18"), ValueError,
         "has no submodule 'encoder.modle': encoder has model, feature_proj, norm; did you mean encoder.model"),
        (lambda m: swap(m, "", "resnet18"), ValueError, "path must name a submodule such as 'encoder.model'"),
        (lambda m: swap(m, "encoder.model", 50), TypeError, "spec must be a backbone name, a spec string"),
        (lambda m: swap(m, "encoder.model", "resnet5", sizes=SIZES), KeyError, "did you mean resnet50"),
        (lambda m: swap(m, "encoder.model", "resnet45_abinet", sizes=SIZES), ValueError,
         "gives 9 channels at stride 16x16 from 1 input channels (inferred); resnet45_abinet cannot be built to "
         "match: output_stride must be one of 1, 2, 4"),
        (lambda m: swap(m, "encoder.model", "resnet18", sizes=SIZES, stemm="cifar"), TypeError,
         "unknown option(s) stemm"),
        (lambda m: swap(m, "encoder.model", "resnet18", sizes=SIZES, out_channels=99), ValueError,
         "does not fit the encoder at encoder.model: at 32x100 it gives [(2, 99, 2, 7)]"),
        (lambda m: swap(m, "encoder.model", "resnet18", example="image"), TypeError,
         "example must be a tensor [N, C, H, W] or a (tensor, mask) tuple"),
        (lambda m: swap(m, "encoder.model", "resnet18", sizes=[(32, 0)]), ValueError, "each of sizes must be >= 1"),
        (lambda m: swap(m, "encoder.model", "resnet18", dry_run="yes"), TypeError, "dry_run must be a bool"),
        (lambda m: swap(m, "decoder", "resnet18", sizes=SIZES), ValueError,
         "decoder has no Conv2d to read its input channels from; pass example=torch.zeros(...)"),
        (lambda m: swap(m, "decoder", "resnet18", example=torch.zeros(1, 3, 8, 8)), ValueError,
         "decoder: it cannot be called at any probe size: what each size gave: (x) at 8x8: RuntimeError: mat1 and "
         "mat2 shapes cannot be"),
    ],
)  # fmt: skip
def test_every_error_names_the_problem_and_changes_nothing(call, error, message):
    model = MaskedRecognizer()
    before = _snapshot(model)
    with pytest.raises(error) as caught:
        call(model)
    assert message in str(caught.value.args[0] if error is KeyError else caught.value)
    _same(model, before)


def test_the_cli_lists_which_candidates_fit(capsys, tmp_path, monkeypatch):
    factory = tmp_path / "factory.py"
    factory.write_text(
        f"import sys\nsys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "from test_swap import LineRecognizer, MaskedRecognizer\n"
        "def line():\n    return LineRecognizer()\n"
        "def formula(width=4):\n    return MaskedRecognizer()\n"
    )
    monkeypatch.chdir(tmp_path)
    files = sorted(tmp_path.iterdir())
    code = main(
        ["swap", f"{factory}:formula", "--at", "encoder.model", "--to", "resnet18", "resnet45_abinet", "--json"]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and [row["fits"] for row in result["candidates"]] == [True, False]
    assert result["encoder"]["out_channels"] == [9] and "cannot be built to match" in result["candidates"][1]["reason"]
    code = main(
        ["swap", f"{factory}:line", "--at", "cnn", "--to", "resnet34", "--allow-grid-change", "--input", "1x1x32x100"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "resnet34: fits as resnet34:in_channels=1,out_channels=32,output_stride=32x4" in out, out
    assert "stride 32 (only at 32) x 4 (floor+1)" in out and "OK: 1 of 1 candidates fit" in out
    for argv, message in [
        ([f"{factory}:nothing", "--at", "cnn", "--to", "resnet18"], "has no callable 'nothing'"),
        ([f"{factory}:line", "--at", "rnn.x", "--to", "resnet18"], "--at rnn.x: LineRecognizer has no submodule"),
        (["no/such/file.py:line", "--at", "cnn", "--to", "resnet18"], "TARGET file 'no/such/file.py' does not exist"),
        (
            [f"{factory}:formula", "--kwargs", "[1]", "--at", "cnn", "--to", "resnet18"],
            "--kwargs must be a JSON object",
        ),
    ]:
        assert main(["swap", *argv]) == 2 and message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == files  # it never writes files
