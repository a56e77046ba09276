"""Meta-device forwards (meta_call: the build-time probes, output_shapes, the CLI's reports) answer the shapes, dtypes
and errors of real forwards, with the shape-keeping norms and activations taken without their decompositions."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones.core import meta_call


class Block(nn.Module):
    """Every shortcut op once: BatchNorm, hardswish (in place), LayerNorm over channels, GELU (tanh), hardsigmoid."""

    def __init__(self, channels=8, norm_channels=None):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(norm_channels or channels)
        self.ln = nn.LayerNorm(channels)

    def forward(self, x):
        x = F.hardswish(self.bn(self.conv(x)), inplace=True)
        x = self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.hardsigmoid(F.gelu(x, approximate="tanh")) + x


def _meta(shape, dtype=torch.float32):
    return torch.empty(shape, device="meta", dtype=dtype)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 17, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shapes_and_dtypes_are_the_real_forwards(shape, dtype):
    block = Block().eval().to(dtype)
    with torch.no_grad():
        real = block(torch.randn(shape, dtype=dtype))
    meta = meta_call(block, "forward", _meta(shape, dtype))
    assert meta.is_meta and (meta.shape, meta.dtype) == (real.shape, real.dtype)


def test_a_mixed_dtype_norm_runs_the_real_function():
    """bf16 activations into a float32 BatchNorm take the decomposition, so the meta dtype is the kernels' own."""
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        real = bn(torch.randn(2, 4, 5, 5, dtype=torch.bfloat16))
    assert meta_call(bn, "forward", _meta((2, 4, 5, 5), torch.bfloat16)).dtype == real.dtype


def test_the_real_kernels_errors_stay():
    wrong = Block(norm_channels=4).eval()
    with pytest.raises(RuntimeError):
        wrong(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match=r"batch_norm: running_mean has shape \(4,\), the input needs \(8,\)"):
        meta_call(wrong, "forward", _meta((1, 3, 8, 8)))
    training = Block().train()
    for call in (
        lambda: training(torch.randn(1, 3, 1, 1)),
        lambda: meta_call(training, "forward", _meta((1, 3, 1, 1))),
    ):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            call()
    norm = nn.LayerNorm(5)
    with pytest.raises(RuntimeError):  # a shape LayerNorm does not take goes to the real function and its error
        meta_call(norm, "forward", _meta((2, 7)))
