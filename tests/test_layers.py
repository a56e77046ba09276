"""Ceil-rounding pooling, against a slow reference that cuts every window by hand; the padded form is what makes
torch.export with dynamic H, W possible (PyTorch's ceil-mode pooling is refused there)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import backbones.core._pooling as pooling
from backbones.core import (
    CeilPool2d,
    ceil_avg_pool2d,
    ceil_max_pool2d,
    ceil_pool,
    padded_avg_pool2d,
    padded_max_pool2d,
)

STRIDES = [(2, 2), (2, 1), (1, 2), (3, 3), (4, 3)]


def reference_pool(x: torch.Tensor, stride, mode: str) -> torch.Tensor:
    """Cell (r, q) is the max or the mean of the input's real elements in rows r*sh .. r*sh+sh-1 and columns
    q*sw .. q*sw+sw-1 (a window past the far edge holds fewer), one window at a time."""
    n, c, h, w = x.shape
    sh, sw = stride
    rows, columns = (h + sh - 1) // sh, (w + sw - 1) // sw
    out = torch.empty(n, c, rows, columns, dtype=x.dtype)
    for r in range(rows):
        for q in range(columns):
            window = x[:, :, r * sh : r * sh + sh, q * sw : q * sw + sw].reshape(n, c, -1)
            out[:, :, r, q] = window.max(dim=2).values if mode == "max" else window.sum(dim=2) / window.shape[2]
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 23), st.integers(1, 23), st.sampled_from(STRIDES), st.booleans(), st.integers(1, 3))
def test_every_ceil_pooling_form_equals_the_reference(h, w, stride, negative, batch):
    """Eager (PyTorch's ceil mode), the padded form and the module give the reference's numbers; on negative inputs
    the -inf padding of the max must never win."""
    x = torch.randn(batch, 3, h, w, dtype=torch.float64)
    x = -x.abs() - 1 if negative else x
    for mode, forms in (("max", (ceil_max_pool2d, padded_max_pool2d)), ("avg", (ceil_avg_pool2d, padded_avg_pool2d))):
        expected = reference_pool(x, stride, mode)
        for form in forms:
            torch.testing.assert_close(form(x, list(stride)), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(CeilPool2d(stride, mode)(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padded_form", [True, False], ids=["padded", "ceil-mode"])
def test_export_with_dynamic_sizes_needs_the_padded_form(padded_form, monkeypatch):
    """What the layer traces is the padded form: torch.export with named dynamic H, W exports it and the program
    gives the reference's numbers at sizes it never saw; PyTorch's ceil-mode kernel (what the layer would trace
    without that form) is refused with a constraint violation."""
    if not padded_form:
        monkeypatch.setattr(pooling, "_tracing", lambda: False)
    dims = {2: torch.export.Dim("H", min=33, max=512), 3: torch.export.Dim("W", min=33, max=512)}
    for mode in ("max", "avg"):
        module = CeilPool2d((2, 3), mode)
        if not padded_form:
            with pytest.raises(Exception, match="Constraints violated"):
                torch.export.export(module, (torch.randn(2, 2, 47, 95),), dynamic_shapes=(dims,))
            continue
        program = torch.export.export(module, (torch.randn(2, 2, 47, 95),), dynamic_shapes=(dims,)).module()
        for size in [(33, 34), (61, 101), (128, 77)]:
            x = torch.randn(2, 2, *size)
            torch.testing.assert_close(program(x), reference_pool(x, (2, 3), mode), rtol=1e-6, atol=1e-6)


def test_the_pooling_module_and_its_factory():
    """CeilPool2d pools by max unless told otherwise; ceil_pool gives nothing to do for (1, 1) only."""
    x = torch.randn(1, 2, 7, 9)
    assert torch.equal(CeilPool2d((2, 3))(x), reference_pool(x, (2, 3), "max"))
    assert repr(CeilPool2d((2, 3), "avg")) == "CeilPool2d(stride=(2, 3), mode='avg')"
    with pytest.raises(ValueError, match="mode must be one of max, avg, got 'sum'"):
        CeilPool2d((2, 2), "sum")
    assert isinstance(ceil_pool((1, 1), "max"), torch.nn.Identity)
    for stride in ((1, 2), (2, 1), (2, 2)):
        pool = ceil_pool(stride, "avg")
        assert isinstance(pool, CeilPool2d) and pool.mode == "avg" and pool.stride == list(stride)
