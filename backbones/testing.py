"""Contract checks that downstream projects call from their own pytest suites.

    from backbones import build_backbone
    from backbones.testing import assert_swappable

    def test_resnet50_can_replace_densenet():
        reference = build_backbone("densenet_hmer")
        candidate = build_backbone("resnet50", out_channels=684, output_stride=16, in_channels=1)
        assert_swappable(reference, candidate, sizes=[(54, 46), (311, 1734), (128, 316)])

Forward passes run on the meta device (shapes only, no real activations; the encoder's weights are
neither copied nor touched) unless ``device`` names a real device.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .contract import output_size
from .meta import eval_mode, meta_call

__all__ = ["assert_contract", "assert_swappable", "odd_sizes", "output_shapes"]

Size = Tuple[int, int]
Device = Union[str, torch.device]


def output_shapes(model: nn.Module, input_shape: Sequence[int], device: Optional[Device] = None) -> List[Tuple]:
    """Shapes of every output of ``model`` (in eval mode) for a zero input of ``input_shape`` (no grad).

    ``device=None`` runs on the meta device with meta stand-ins for the weights; a real device runs a
    real forward.
    """
    x = torch.zeros(tuple(input_shape), device=device or "meta")
    with eval_mode(model), torch.no_grad():
        out = meta_call(model, "forward", x) if device is None else model(x)
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


def _per_output(encoder: nn.Module, value: object) -> list:
    return list(value) if encoder.multi_output else [value]  # type: ignore[arg-type]


def _contract_shapes(encoder: nn.Module, batch: int, h: int, w: int) -> List[Tuple]:
    return [(batch, info.channels, *output_size(h, w, info.stride)) for info in encoder.output_info]


def _report(title: str, failures: List[str], total: int) -> None:
    if failures:
        shown = "\n  ".join(failures[:10])
        raise AssertionError(f"{title}: {len(failures)} of {total} sizes fail, first ones:\n  {shown}")


def assert_contract(
    encoder: nn.Module, sizes: Iterable[Size], *, batch: int = 1, device: Optional[Device] = None, masks: bool = True
) -> None:
    """Assert the shape contract of ``encoder`` on every ``(H, W)`` in ``sizes``.

    The forward's shapes must equal ``[N, out_channels, ceil(H/sh), ceil(W/sw)]`` and
    ``encoder.output_size(H, W)``; ``downsample_mask`` must give ``mask[..., ::sh, ::sw]`` in the mask's
    dtype, for bool ``[N, H, W]`` and float ``[N, 1, H, W]`` masks.

    Args:
        encoder: a :class:`~backbones.Backbone`.
        sizes: ``(H, W)`` pairs.
        batch: batch size of the probe input.
        device: ``None`` = shapes on the meta device; else a real device for a real forward.
        masks: also check mask downsampling.
    """
    failures, total = [], 0
    for h, w in sizes:
        total += 1
        expected = _contract_shapes(encoder, batch, h, w)
        got = output_shapes(encoder, (batch, encoder.in_channels, h, w), device)
        analytic = [(batch, e[1], *size) for e, size in zip(expected, _per_output(encoder, encoder.output_size(h, w)))]
        if got != expected or analytic != expected:
            failures.append(f"{h}x{w}: forward {got}, output_size {analytic}, contract {expected}")
            continue
        if masks:
            for mask in (torch.rand(batch, h, w) > 0.5, torch.rand(batch, 1, h, w).round()):
                downsampled = _per_output(encoder, encoder.downsample_mask(mask))
                for out_mask, info in zip(downsampled, encoder.output_info):
                    sh, sw = info.stride
                    if out_mask.dtype != mask.dtype or not torch.equal(out_mask, mask[..., ::sh, ::sw]):
                        failures.append(f"{h}x{w}: downsample_mask differs from mask[..., ::{sh}, ::{sw}]")
    _report(f"{type(encoder).__name__} breaks the shape contract", failures, total)


def assert_swappable(
    reference: nn.Module,
    candidate: nn.Module,
    sizes: Iterable[Size],
    *,
    masks: bool = True,
    device: Optional[Device] = None,
) -> None:
    """Assert that ``candidate`` can replace ``reference``: the same input and output channels, the same
    output grid (real forward shapes) for every ``(H, W)`` in ``sizes``, and equal downsampled masks.
    """
    if reference.in_channels != candidate.in_channels or reference.out_channels != candidate.out_channels:
        raise AssertionError(
            f"channels differ: reference in={reference.in_channels} out={reference.out_channels}, "
            f"candidate in={candidate.in_channels} out={candidate.out_channels}"
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
            pairs = zip(
                _per_output(reference, reference.downsample_mask(mask)),
                _per_output(candidate, candidate.downsample_mask(mask)),
            )
            if any(not torch.equal(a, b) for a, b in pairs):
                failures.append(f"{h}x{w}: downsampled masks differ")
    _report("candidate is not swappable for reference", failures, total)
