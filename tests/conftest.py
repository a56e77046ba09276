import pytest
import torch

from backbones import build_backbone, build_on_meta, list_backbones

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


def native_stride(name: str) -> tuple:
    """``(sh, sw)`` of the name's native output (32 for ImageNet bodies, 16 for densenet_hmer, (32, 4) for lines)."""
    return meta_built(name).output_stride


def reduced_stride(name: str, factor: int = 2) -> tuple:
    """The native stride divided by ``factor`` on each axis (at least 1): a reachable output_stride."""
    sh, sw = native_stride(name)
    return max(sh // factor, 1), max(sw // factor, 1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def built(name: str, **kwargs) -> torch.nn.Module:
    return build_backbone(name, **kwargs).eval()


def meta_built(name: str, **kwargs) -> torch.nn.Module:
    """For shape-only tests: built on the meta device, no weight memory or initialisation."""
    return build_on_meta(name, **kwargs)
