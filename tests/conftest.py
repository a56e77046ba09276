import functools
import os

import pytest
import torch
from hypothesis import Phase, settings

from backbones import build_backbone, build_on_meta, list_backbones

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core (pytest -n): one torch thread each
    torch.set_num_threads(1)

# Big models run one configuration each; the rest run the whole grid.
HEAVY = {
    "resnet101",
    "resnet152",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "densenet161",
    "densenet169",
    "densenet201",
}
LIGHT = [name for name in list_backbones() if name not in HEAVY]


@functools.cache
def native(name: str):
    """``(output_stride, feature_info)`` of the name's native build, built once per session on the meta device."""
    encoder = build_on_meta(name)
    return encoder.output_stride, encoder.feature_info


def native_stride(name: str) -> tuple:
    """``(sh, sw)`` of the name's native output (32 for ImageNet bodies, 16 for densenet_hmer, (32, 4) for lines)."""
    return native(name)[0]


def reachable_strides(name: str) -> list:
    """Per axis, the sorted strides the name's stages reach."""
    return [sorted({info.stride[axis] for info in native(name)[1]}) for axis in (0, 1)]


def reduced_stride(name: str, factor: int = 2) -> tuple:
    """A reachable output_stride about ``factor`` times denser than the native one: per axis, the largest stride a
    stage of the family reaches that is at most native / factor (the smallest reachable if none is)."""
    wanted = [max(s // factor, 1) for s in native_stride(name)]
    reachable = reachable_strides(name)
    return tuple(max([s for s in reachable[axis] if s <= wanted[axis]] or reachable[axis][:1]) for axis in (0, 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def built(name: str, **kwargs) -> torch.nn.Module:
    return build_backbone(name, **kwargs).eval()


def meta_built(name: str, **kwargs) -> torch.nn.Module:
    """For shape-only tests: built on the meta device, no weight memory or initialisation."""
    return build_on_meta(name, **kwargs)


def padding_on_grid(sizes, grid, stride) -> torch.Tensor:
    """What a padding mask on the output grid must be for a zero-padded batch, computed from the images' sizes
    alone: cell (r, c) of image i is padding (True) unless r * sh < h_i and c * sw < w_i (its top-left pixel is
    inside the image). ``grid`` is the output ``(rows, columns)``."""
    rows = torch.arange(grid[0])[:, None] * stride[0]
    columns = torch.arange(grid[1])[None, :] * stride[1]
    return torch.stack([(rows >= h) | (columns >= w) for h, w in sizes])


def content_in_zeros_and_noise(canvas, content, seed: int):
    """The same random content at the top left of two ``[2, 3, *canvas]`` images, one padded with zeros and one
    with loud noise, and the bool padding mask ``[2, *canvas]`` (True = padding) they share."""
    torch.manual_seed(seed)
    zeros, noise = torch.zeros(2, 3, *canvas), torch.randn(2, 3, *canvas) * 3
    h, w = content
    zeros[:, :, :h, :w] = noise[:, :, :h, :w] = torch.randn(2, 3, h, w)
    mask = torch.ones(2, *canvas, dtype=torch.bool)
    mask[:, :h, :w] = False
    return zeros, noise, mask


def cells_at(mask: torch.Tensor, stride) -> torch.Tensor:
    """An arbitrary mask's cells at multiples of the stride, by index selection (not by the slicing the library
    uses): ``[N, H, W]`` or ``[N, 1, H, W]`` -> the same layout on the ``ceil(H/sh) x ceil(W/sw)`` grid."""
    rows, columns = torch.arange(0, mask.shape[-2], stride[0]), torch.arange(0, mask.shape[-1], stride[1])
    return mask.index_select(mask.dim() - 2, rows).index_select(mask.dim() - 1, columns)


# the mutation run (pyproject's [tool.mutmut]): a failing example is enough; shrinking would run into the timeout
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], deadline=None)
