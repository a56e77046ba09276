"""Exportable ceil-mode pooling (the padded form traced by compile/export) equals PyTorch's ceil_mode pooling."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from backbones.core import ceil_avg_pool2d, ceil_max_pool2d, padded_avg_pool2d, padded_max_pool2d


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([(2, 2), (2, 1), (1, 2), (3, 3)]))
def test_ceil_pooling_equals_ceil_mode(h, w, stride):
    x = torch.randn(2, 3, h, w)
    torch.testing.assert_close(
        padded_avg_pool2d(x, list(stride)), F.avg_pool2d(x, stride, ceil_mode=True), atol=1e-6, rtol=1e-6
    )
    torch.testing.assert_close(
        padded_max_pool2d(x, list(stride)), F.max_pool2d(x, stride, ceil_mode=True), atol=0, rtol=0
    )
    negative = -x.abs() - 1  # -inf padding must never win a max over negative values
    assert torch.equal(padded_max_pool2d(negative, list(stride)), F.max_pool2d(negative, stride, ceil_mode=True))
    assert torch.equal(ceil_avg_pool2d(x, list(stride)), F.avg_pool2d(x, stride, ceil_mode=True))


def test_compiled_pooling_takes_the_padded_form_and_matches_eager():
    x = torch.randn(2, 3, 13, 22)
    for eager, stride in ((ceil_avg_pool2d, [2, 2]), (ceil_max_pool2d, [2, 1])):
        compiled = torch.compile(eager, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, stride), eager(x, stride), atol=1e-6, rtol=1e-6)
