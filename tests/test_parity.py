"""State dicts load from torchvision with strict=True and give the same features (max abs diff <= 1e-5)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import HEAVY

from backbones import build_backbone, build_on_meta, get_entry, list_backbones

TOLERANCE = 1e-5
NAMES = [n for n in list_backbones() if get_entry(n).family in ("resnet", "densenet")]  # torchvision's


def torchvision_features(name, model, x):
    if name.startswith("densenet"):
        return F.relu(model.features(x))
    body = torch.nn.Sequential(*list(model.children())[:-2])  # drop avgpool, fc
    return body(x)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in HEAVY])
def test_torchvision_state_dict_loads_strict_and_features_match(name):
    reference = getattr(torchvision.models, name)().eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith(("fc.", "classifier."))}
    encoder = build_backbone(name).eval()
    encoder.load_state_dict(state, strict=True)
    assert set(encoder.state_dict()) == set(state)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        diff = (encoder(x) - torchvision_features(name, reference, x)).abs().max().item()
    assert diff <= TOLERANCE


@pytest.mark.parametrize("name", [n for n in NAMES if n in HEAVY])
def test_heavy_names_have_torchvisions_tensors(name):
    """The HEAVY names run a LIGHT name's blocks (forward parity above): their widths, groups and depths are right
    when every tensor has torchvision's name and shape (meta device, what a strict load checks)."""
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    wanted = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith(("fc.", "classifier."))}
    assert {k: v.shape for k, v in build_on_meta(name).state_dict().items()} == wanted


def test_densenet_rounds_up_where_torchvision_rounds_down():
    encoder = build_backbone("densenet121").eval()
    reference = torchvision.models.densenet121().eval()
    x = torch.randn(1, 3, 128, 316)
    with torch.no_grad():
        assert tuple(reference.features(x).shape[2:]) == (4, 9)
        assert tuple(encoder(x).shape[2:]) == (4, 10)


@pytest.mark.parametrize("name", ["resnet50", "densenet121"])
def test_pretrained_tensors_survive_stride_changes(name):
    """Changing strides or dilating keeps every tensor of the native state dict."""
    native = build_backbone(name).state_dict()
    for kwargs in ({"output_stride": 8}, {"output_stride": 8, "dilate": True}, {"strides": (1, (2, 1), (2, 1), 1)}):
        changed = build_backbone(name, **kwargs)
        changed.load_state_dict(native, strict=True)


@pytest.mark.parametrize("name", ["densenet121", "densenet_hmer"])
def test_memory_efficient_densenet_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = build_backbone(name, output_stride=16, in_channels=3).train()
    efficient = build_backbone(name, output_stride=16, in_channels=3, memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 45, 61)
    outputs = [model(x) for model in (plain, efficient)]
    for output in outputs:
        output.square().mean().backward()
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-5)
    for (name, a), (_, b) in zip(plain.named_parameters(), efficient.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
