"""frozen_stages and norm_eval, mmdetection semantics."""

import pytest
import torch
from conftest import built
from torch.nn.modules.batchnorm import _BatchNorm


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "densenet_hmer"])
@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2])
def test_frozen_stages_freeze_parameters_and_stay_in_eval(name, frozen_stages):
    encoder = built(name, frozen_stages=frozen_stages, out_channels=16).train()
    for info in encoder.feature_info:
        for module_name in info.modules:
            module = encoder.get_submodule(module_name)
            frozen = info.index <= frozen_stages
            assert all(p.requires_grad != frozen for p in module.parameters()), (info.name, frozen)
            assert all(m.training != frozen for m in module.modules()), (info.name, frozen)
    assert all(p.requires_grad for p in encoder.adapters.parameters())


def test_frozen_stem_does_not_change_in_training():
    encoder = built("resnet18", frozen_stages=1).train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    encoder(torch.randn(2, 3, 40, 40)).mean().backward()
    optimizer.step()
    after = encoder.state_dict()
    for key in before:
        if key.startswith(("conv1", "bn1", "layer1")):
            assert torch.equal(before[key], after[key]), key  # weights and running stats
    assert not torch.equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])


@pytest.mark.parametrize("name", ["resnet18", "densenet_hmer"])
def test_norm_eval_keeps_body_batchnorms_in_eval(name):
    encoder = built(name, norm_eval=True, out_channels=8).train()
    body_norms = [m for n, m in encoder.named_modules() if isinstance(m, _BatchNorm) and not n.startswith("adapters")]
    assert body_norms and not any(m.training for m in body_norms)
    assert encoder.adapters[0].bn.training  # the fresh adapter keeps learning its statistics
    running_mean = body_norms[0].running_mean.clone()
    encoder(torch.randn(2, encoder.in_channels, 32, 32))
    assert torch.equal(running_mean, body_norms[0].running_mean)
