"""Contract checks that downstream projects call from their own pytest suites.

    from backbones import build_backbone
    from backbones.testing import assert_swappable

    def test_resnet50_can_replace_densenet():
        reference = build_backbone("densenet_hmer")
        candidate = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
        assert_swappable(reference, candidate, sizes=[(54, 46), (311, 1734), (128, 316)])

Forward passes run on the meta device (shapes only, no real activations; the encoder's weights are
neither copied nor touched) unless ``device`` names a real device. The expected shapes and masks are computed
here from the strides alone (``ceil`` by integer arithmetic, masks by index selection), not by the library's
own helpers.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .core import Encoder, eval_mode, meta_call

__all__ = ["assert_contract", "assert_swappable", "odd_sizes", "output_shapes"]

Size = Tuple[int, int]
Device = Union[str, torch.device]


def output_shapes(model: nn.Module, input_shape: Sequence[int], device: Optional[Device] = None) -> List[Tuple]:
    """Shapes of every output of ``model`` (in eval mode) for a zero input of ``input_shape`` (no grad): an
    encoder's ``forward_outputs``, any other module's tensor, tuple or list.

    ``device=None`` runs on the meta device with meta stand-ins for the weights; a real device runs a
    real forward.
    """
    x = torch.zeros(tuple(input_shape), device=device or "meta")
    method = "forward_outputs" if isinstance(model, Encoder) else "forward"
    with eval_mode(model), torch.no_grad():
        out = meta_call(model, method, x) if device is None else getattr(model, method)(x)
    return [tuple(o.shape) for o in (out if isinstance(out, (list, tuple)) else [out])]


def odd_sizes(count: int, *, low: Size = (16, 16), high: Size = (320, 1800), seed: int = 0) -> List[Size]:
    """``count`` seeded (H, W) pairs in ``[low, high]``, the two corners first."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [low, high]
    while len(sizes) < count:
        h = int(torch.randint(low[0], high[0] + 1, (1,), generator=generator))
        w = int(torch.randint(low[1], high[1] + 1, (1,), generator=generator))
        sizes.append((h, w))
    return sizes[:count]


def _ceil(a: int, b: int) -> int:
    return (a + b - 1) // b


def _expected_shapes(encoder: Encoder, batch: int, h: int, w: int) -> List[Tuple]:
    return [(batch, info.channels, _ceil(h, info.stride[0]), _ceil(w, info.stride[1])) for info in encoder.output_info]


def _cells(mask: Tensor, stride: Size) -> Tensor:
    """The mask's cells at multiples of the stride, by index selection on its H and W axes."""
    rows = torch.arange(0, mask.shape[-2], stride[0])
    columns = torch.arange(0, mask.shape[-1], stride[1])
    return mask.index_select(mask.dim() - 2, rows).index_select(mask.dim() - 1, columns)


def _report(title: str, failures: List[str], total: int) -> None:
    if failures:
        shown = "\n  ".join(failures[:10])
        raise AssertionError(f"{title}: {len(failures)} of {total} sizes fail, first ones:\n  {shown}")


def assert_contract(
    encoder: Encoder, sizes: Iterable[Size], *, batch: int = 1, device: Optional[Device] = None, masks: bool = True
) -> None:
    """Assert the shape contract of ``encoder`` on every ``(H, W)`` in ``sizes``.

    The forward's shapes must equal ``[N, out_channels, ceil(H/sh), ceil(W/sw)]`` and
    ``encoder.output_size(H, W)``; ``downsample_mask`` must give the mask's cells at multiples of the stride, in
    the mask's dtype, for bool ``[N, H, W]`` and float ``[N, 1, H, W]`` masks.

    Args:
        encoder: a :class:`~backbones.Backbone` or ``FeaturePyramid``.
        sizes: ``(H, W)`` pairs.
        batch: batch size of the probe input.
        device: ``None`` = shapes on the meta device; else a real device for a real forward.
        masks: also check mask downsampling.
    """
    failures, total = [], 0
    for h, w in sizes:
        total += 1
        expected = _expected_shapes(encoder, batch, h, w)
        got = output_shapes(encoder, (batch, encoder.in_channels, h, w), device)
        analytic = [(batch, e[1], *size) for e, size in zip(expected, encoder.output_sizes(h, w))]
        if got != expected or analytic != expected:
            failures.append(f"{h}x{w}: forward {got}, output_size {analytic}, contract {expected}")
            continue
        if masks:
            for mask in (torch.rand(batch, h, w) > 0.5, torch.rand(batch, 1, h, w).round()):
                for out_mask, info in zip(encoder.downsample_masks(mask), encoder.output_info):
                    if out_mask.dtype != mask.dtype or not torch.equal(out_mask, _cells(mask, info.stride)):
                        failures.append(f"{h}x{w}: downsample_mask is not the mask's cells at stride {info.stride}")
    _report(f"{type(encoder).__name__} breaks the shape contract", failures, total)


def assert_swappable(
    reference: Encoder,
    candidate: Encoder,
    sizes: Iterable[Size],
    *,
    masks: bool = True,
    device: Optional[Device] = None,
) -> None:
    """Assert that ``candidate`` can replace ``reference``: the same input and output channels, the same
    output shapes of a forward (on the meta device unless ``device`` is given) for every ``(H, W)`` in ``sizes``,
    and equal downsampled masks.
    """
    channels = [(m.in_channels, [info.channels for info in m.output_info]) for m in (reference, candidate)]
    if channels[0] != channels[1]:
        raise AssertionError(
            f"channels differ: reference in={channels[0][0]} out={channels[0][1]}, "
            f"candidate in={channels[1][0]} out={channels[1][1]}"
        )
    failures, total = [], 0
    for h, w in sizes:
        total += 1
        shapes = [output_shapes(m, (1, reference.in_channels, h, w), device) for m in (reference, candidate)]
        if shapes[0] != shapes[1]:
            failures.append(f"{h}x{w}: reference {shapes[0]}, candidate {shapes[1]}")
            continue
        if masks:
            mask = torch.rand(1, h, w) > 0.5
            pairs = zip(reference.downsample_masks(mask), candidate.downsample_masks(mask))
            if any(not torch.equal(a, b) for a, b in pairs):
                failures.append(f"{h}x{w}: downsampled masks differ")
    _report("candidate is not swappable for reference", failures, total)
