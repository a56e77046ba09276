"""The text-recognition encoders: parity with the originals (rebuilt here from their published code), their
checkpoint layouts, the stride-placement trap of the two ResNet-45s, and the grids on text lines."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones import WeightsMismatchError, build_backbone, list_backbones, load_weights
from backbones.cli import main

OCR = ["resnet45_abinet", "resnet45_aster", "resnet31_ocr", "resnet_fan", "vgg_crnn"]
ODD = [(32, 128), (31, 97), (48, 160), (37, 101)]


def _bn(c):
    return nn.BatchNorm2d(c)


class RefBlock45(nn.Module):
    """ABINet's / ASTER's basic block: a 1x1 conv then a 3x3 conv; ``stride_on`` names the conv with the stride."""

    def __init__(self, inplanes, planes, stride, stride_on):
        super().__init__()
        s1, s2 = (stride, 1) if stride_on == "conv1" else (1, stride)
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False), _bn(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, s2, 1, bias=False), _bn(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), _bn(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet45(nn.Module):
    def __init__(self, aster):
        super().__init__()
        stem = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), _bn(32), nn.ReLU()]
        if aster:
            self.layer0 = nn.Sequential(*stem)
            strides = [(2, 2), (2, 2), (2, 1), (2, 1), (2, 1)]
        else:
            self.conv1, self.bn1, self.relu = stem
            strides = [2, 1, 2, 1, 1]
        self.aster, inplanes = aster, 32
        for i, (planes, blocks, stride) in enumerate(zip([32, 64, 128, 256, 512], [3, 4, 6, 6, 3], strides), 1):
            layers = [RefBlock45(inplanes, planes, stride, "conv1" if aster else "conv2")]
            layers += [RefBlock45(planes, planes, 1, "conv1" if aster else "conv2") for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = planes

    def forward(self, x):
        x = self.layer0(x) if self.aster else self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        return x


def _randomised(model):
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _assert_close_relative(ours, theirs, tolerance=1e-5):
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max()


@pytest.mark.parametrize("aster", [False, True], ids=["abinet", "aster"])
def test_resnet45_checkpoints_give_the_originals_features(aster, tmp_path):
    reference = _randomised(RefResNet45(aster))
    if aster:  # aster.pytorch: the encoder with its BiLSTM, inside a whole-model state dict
        state = {f"encoder.{k}": v for k, v in reference.state_dict().items()}
        state["encoder.rnn.weight_ih_l0"] = torch.zeros(1024, 512)
        state["decoder.attention_unit.sEmbed.weight"] = torch.zeros(256, 512)
        torch.save({"state_dict": state, "epoch": 10}, tmp_path / "aster.pth.tar.pth")
        path, name = tmp_path / "aster.pth.tar.pth", "resnet45_aster"
    else:  # ABINet: {"model": ...} with the backbone under vision.backbone.resnet
        state = {f"vision.backbone.resnet.{k}": v for k, v in reference.state_dict().items()}
        state["vision.cls.weight"] = torch.zeros(37, 512)
        torch.save({"model": state, "opt": None}, tmp_path / "best-pretrain-vision-model.pth")
        path, name = tmp_path / "best-pretrain-vision-model.pth", "resnet45_abinet"
    encoder = build_backbone(name, pretrained=str(path)).eval()
    report = encoder.pretrained_report
    assert report.loaded == len(reference.state_dict())
    assert report.outside_prefix == 1 and report.ignored == (["rnn.weight_ih_l0"] if aster else [])
    for h, w in ODD:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ours, theirs = encoder(x), reference(x)
        _assert_close_relative(ours, theirs)
        assert tuple(ours.shape[2:]) == encoder.output_size(h, w)
    assert encoder.output_size(32, 100 if aster else 128) == ((1, 25) if aster else (8, 32))


def test_the_stride_placement_trap_is_caught(tmp_path):
    """Same shapes, other stride placement: loading one's checkpoint into the other is refused with a hint."""
    abinet = {f"vision.backbone.resnet.{k}": v for k, v in RefResNet45(False).state_dict().items()}
    torch.save({"model": abinet}, tmp_path / "abinet.pth")
    with pytest.raises(WeightsMismatchError, match=r"(?s)missing .*features\.layer0.*hint: .*build resnet45_abinet"):
        build_backbone("resnet45_aster", pretrained=str(tmp_path / "abinet.pth"))
    aster_own = build_backbone("resnet45_aster").state_dict()
    with pytest.raises(WeightsMismatchError, match=r"hint: .*build resnet45_aster"):
        load_weights(build_backbone("resnet45_abinet"), aster_own)


def test_mmocr_resnet_abi_with_its_stem_bias(tmp_path):
    reference = RefResNet45(False)
    reference.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=True)
    state = {f"backbone.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": state, "meta": {"mmengine_version": "0.10"}}, tmp_path / "abinet_mmocr.pth")
    with pytest.raises(WeightsMismatchError, match="unexpected .*features.conv1.bias"):
        build_backbone("resnet45_abinet", pretrained=str(tmp_path / "abinet_mmocr.pth"))
    encoder = build_backbone("resnet45_abinet", stem_bias=True, pretrained=str(tmp_path / "abinet_mmocr.pth"))
    assert torch.equal(encoder.features.conv1.bias, reference.conv1.bias)


class RefBasicBlock(nn.Module):
    """mmocr's and deep-text-recognition-benchmark's basic block (two 3x3 convs, 1x1 shortcut)."""

    def __init__(self, inplanes, planes):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False), _bn(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), _bn(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, bias=False), _bn(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet31(nn.Module):
    """mmocr's ResNet31OCR with its defaults (pools in ceil mode, none before block5)."""

    def __init__(self):
        super().__init__()
        self.conv1_1, self.bn1_1 = nn.Conv2d(3, 64, 3, 1, 1), _bn(64)
        self.conv1_2, self.bn1_2 = nn.Conv2d(64, 128, 3, 1, 1), _bn(128)
        channels = [128, 256, 256, 512, 512]
        for i, blocks in zip(range(2, 6), [1, 2, 5, 3]):
            inplanes, planes = channels[i - 2], channels[i - 1]
            layers = [RefBasicBlock(inplanes if j == 0 else planes, planes) for j in range(blocks)]
            setattr(self, f"block{i}", nn.Sequential(*layers))
            setattr(self, f"conv{i}", nn.Conv2d(planes, planes, 3, 1, 1))
            setattr(self, f"bn{i}", _bn(planes))

    def forward(self, x):
        x = F.relu(self.bn1_2(self.conv1_2(F.relu(self.bn1_1(self.conv1_1(x))))))
        for i, pool in zip(range(2, 6), [(2, 2), (2, 2), (2, 1), None]):
            if pool:
                x = F.max_pool2d(x, pool, pool, ceil_mode=True)
            x = getattr(self, f"block{i}")(x)
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return x


def test_resnet31_mmocr_checkpoint_gives_mmocrs_features(tmp_path):
    reference = _randomised(RefResNet31())
    state = {f"backbone.{k}": v for k, v in reference.state_dict().items()}
    state["decoder.embedding.weight"] = torch.zeros(92, 512)
    torch.save({"state_dict": state, "meta": {}}, tmp_path / "sar_resnet31.pth")
    encoder = build_backbone("resnet31_ocr", pretrained=str(tmp_path / "sar_resnet31.pth")).eval()
    assert encoder.pretrained_report.loaded == len(reference.state_dict())
    for h, w in [(48, 160), (47, 161), (33, 99)]:
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            _assert_close_relative(encoder(x), reference(x))
    assert encoder.output_size(48, 160) == (6, 40)


class RefFAN(nn.Module):
    """deep-text-recognition-benchmark's ResNet_FeatureExtractor(1, 512) (the TRBA encoder)."""

    def __init__(self):
        super().__init__()
        self.conv0_1, self.bn0_1 = nn.Conv2d(1, 32, 3, 1, 1, bias=False), _bn(32)
        self.conv0_2, self.bn0_2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False), _bn(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip([128, 256, 512, 512], [1, 2, 5, 3]), 1):
            setattr(
                self,
                f"layer{i}",
                nn.Sequential(*[RefBasicBlock(inplanes if j == 0 else planes, planes) for j in range(blocks)]),
            )
            inplanes = planes
            if i < 4:
                setattr(self, f"conv{i}", nn.Conv2d(planes, planes, 3, 1, 1, bias=False))
                setattr(self, f"bn{i}", _bn(planes))
        self.conv4_1, self.bn4_1 = nn.Conv2d(512, 512, 2, (2, 1), (0, 1), bias=False), _bn(512)
        self.conv4_2, self.bn4_2 = nn.Conv2d(512, 512, 2, 1, 0, bias=False), _bn(512)

    def forward(self, x):
        x = F.relu(self.bn0_2(self.conv0_2(F.relu(self.bn0_1(self.conv0_1(x))))))
        pools = [nn.MaxPool2d(2, 2, 0), nn.MaxPool2d(2, 2, 0), nn.MaxPool2d(2, (2, 1), (0, 1))]
        for i in range(1, 4):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(getattr(self, f"layer{i}")(pools[i - 1](x)))))
        x = F.relu(self.bn4_1(self.conv4_1(self.layer4(x))))
        return F.relu(self.bn4_2(self.conv4_2(x)))


class RefCRNN(nn.Module):
    """meijieru/crnn.pytorch's CRNN.cnn for 1-channel 32-pixel lines (the rnn is not rebuilt)."""

    def __init__(self):
        super().__init__()
        channels = [1, 64, 128, 256, 256, 512, 512, 512]
        self.cnn = nn.Sequential()
        pools = {
            0: nn.MaxPool2d(2, 2),
            1: nn.MaxPool2d(2, 2),
            3: nn.MaxPool2d((2, 2), (2, 1), (0, 1)),
            5: nn.MaxPool2d((2, 2), (2, 1), (0, 1)),
        }
        for i in range(7):
            kernel, padding = (2, 0) if i == 6 else (3, 1)
            self.cnn.add_module(f"conv{i}", nn.Conv2d(channels[i], channels[i + 1], kernel, 1, padding))
            if i in (2, 4, 6):
                self.cnn.add_module(f"batchnorm{i}", _bn(channels[i + 1]))
            self.cnn.add_module(f"relu{i}", nn.ReLU())
            if i in pools:
                self.cnn.add_module(f"pooling{[0, 1, None, 2, None, 3][i]}", pools[i])

    def forward(self, x):
        return self.cnn(x)


@pytest.mark.parametrize("name", ["resnet_fan", "vgg_crnn"])
def test_grid_originals_load_and_their_columns(name, tmp_path):
    """Every published tensor loads; the contract's 1x25 against the original's 1x26 at 32x100, and at 32 pixels
    high and widths divisible by 4 the output is exactly the original's first W/4 columns."""
    reference = _randomised(RefFAN() if name == "resnet_fan" else RefCRNN())
    if name == "resnet_fan":  # saved through DataParallel, the whole TRBA model
        state = {f"module.FeatureExtraction.ConvNet.{k}": v for k, v in reference.state_dict().items()}
        state["module.Prediction.generator.weight"] = torch.zeros(38, 256)
    else:  # crnn.pth: the whole CRNN
        state = {f"module.{k}": v for k, v in reference.state_dict().items()}
        state["module.rnn.0.rnn.weight_ih_l0"] = torch.zeros(1024, 512)
    torch.save(state, tmp_path / "original.pth")
    encoder = build_backbone(name, pretrained=str(tmp_path / "original.pth")).eval()
    assert (
        encoder.pretrained_report.loaded == len(reference.state_dict())
        and encoder.pretrained_report.outside_prefix == 1
    )
    for width in (100, 128, 320):
        x = torch.randn(2, 1, 32, width)
        with torch.no_grad():
            ours, theirs = encoder(x), reference(x)
        assert theirs.shape[2:] == (1, width // 4 + 1) and ours.shape[2:] == (1, width // 4)
        _assert_close_relative(ours, theirs[..., : width // 4])
    assert encoder.output_size(32, 100) == (1, 25) and encoder.output_size(33, 101) == (2, 26)


NATIVE = {
    "resnet45_abinet": ((4, 4), (32, 128), (8, 32)),
    "resnet45_aster": ((32, 4), (32, 100), (1, 25)),
    "resnet31_ocr": ((8, 4), (48, 160), (6, 40)),
    "resnet_fan": ((32, 4), (32, 100), (1, 25)),
    "vgg_crnn": ((32, 4), (32, 100), (1, 25)),
}


@pytest.mark.parametrize("name", OCR)
def test_native_grids_on_text_lines(name):
    stride, (h, w), grid = NATIVE[name]
    encoder = build_backbone(name, in_channels=1, out_channels=256).eval()
    assert encoder.output_stride == stride and encoder.out_channels == 256 and encoder.output_size(h, w) == grid
    with torch.no_grad():
        assert tuple(encoder(torch.randn(2, 1, h, w)).shape) == (2, 256, *grid)


def test_ocr_family_is_listed(capsys):
    assert set(OCR) <= set(list_backbones())
    assert main(["list", "--family", "ocr"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in OCR) and "resnet50" not in out


def test_mmocr_layouts_of_aster_and_minivgg(tmp_path):
    """mmocr's ResNet (ASTER config) names the stem and shortcuts as ConvModules; MiniVGG uses LeakyReLU(0.2)."""
    reference = _randomised(RefResNet45(True))
    renamed = {}
    for key, value in reference.state_dict().items():
        key = key.replace("layer0.0.", "stem_layers.0.conv.").replace("layer0.1.", "stem_layers.0.bn.")
        renamed[
            "backbone." + key.replace("downsample.0.", "downsample.conv.").replace("downsample.1.", "downsample.bn.")
        ] = value
    torch.save({"state_dict": renamed, "meta": {}}, tmp_path / "aster_mmocr.pth")
    encoder = build_backbone("resnet45_aster", pretrained=str(tmp_path / "aster_mmocr.pth")).eval()
    x = torch.randn(1, 3, 32, 100)
    with torch.no_grad():
        _assert_close_relative(encoder(x), reference(x))
    crnn = _randomised(RefCRNN())
    for name, _ in list(crnn.cnn.named_children()):
        if name.startswith("relu"):
            setattr(crnn.cnn, name, nn.LeakyReLU(0.2))
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in crnn.state_dict().items()}}, tmp_path / "crnn_mmocr.pth")
    vgg = build_backbone("vgg_crnn", leaky_relu=True, pretrained=str(tmp_path / "crnn_mmocr.pth")).eval()
    x = torch.randn(1, 1, 32, 100)
    with torch.no_grad():
        _assert_close_relative(vgg(x), crnn(x)[..., :25])
