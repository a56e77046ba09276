"""``svtrv2_tiny``, ``svtrv2_small``, ``svtrv2_base``: the SVTRv2 encoder of OpenOCR (``SVTRv2LNConvTwo33`` with the
Encoder settings of its released CTC configs, ``feat2d: True``), a 2-D map at (8, 4).

Stem (``pope``): two 3x3/2 convs with BatchNorm and GELU, /4. Then three stages of mixers at widths ``dims``: conv
mixers (``x + convs(x)`` with 3x3 grouped convs, then LayerNorm, an MLP, LayerNorm: post-norm) and global
self-attention mixers (post-norm too); between stages a 3x3 conv with LayerNorm changes the width and, before the
last stage, halves the height (stride (2, 1)). Every conv has ``padding = 1`` at stride 1 or 2, so the grid is the
ceil grid at every size and a checkpoint gives exactly OpenOCR's features. The released configs have no position
embedding, so any input size works.

Module names are OpenOCR's (``pope.patch_embed.0.conv``, ``stages.1.blocks.4.mixer.qkv``,
``stages.0.downsample.conv``; the parameterless flatten at the start of the first global mixer keeps its index), so
OpenOCR's recogniser checkpoints (``{"state_dict": {"encoder.*", "decoder.*"}, ...}``) load with the decoder
skipped and counted. A padding mask given to ``forward`` zeroes the padded pixels and masks the padded tokens out of
every attention (the cells whose top-left pixel is padding, as ``downsample_mask``).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ...core import (
    Backbone,
    BackboneConfig,
    FeatureInfo,
    Stages,
    StridePlan,
    check_choice,
    check_float,
    padding_on_grid,
    timm_classes,
)
from ...registry import register_backbone
from ._checkpoints import new_ocr_family_hint

__all__ = ["SVTRv2"]

# dims, depths, heads, mixers per stage ("C" conv, "F" flatten + global, "G" global)
VARIANTS: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...], Tuple[str, ...]]] = {
    "tiny": ((64, 128, 256), (3, 6, 3), (2, 4, 8), ("CCC", "CCCFGG", "GGG")),
    "small": ((96, 192, 384), (3, 6, 3), (3, 6, 12), ("CCC", "CCCFGG", "GGG")),
    "base": ((128, 256, 384), (6, 6, 6), (4, 8, 12), ("CCCCCC", "CCFGGG", "GGGGGG")),
}
SUB_STRIDES = ((1, 1), (2, 1))  # the downsampling between stages 1-2 and 2-3


class _ConvBNGELU(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _drop_path(rate: float) -> nn.Module:
    return timm_classes().DropPath(rate) if rate > 0 else nn.Identity()  # timm is imported when built


class _ConvMixer(nn.Module):
    """``[N, C, H, W]``: ``x + convs(x)``, LayerNorm, ``+ mlp``, LayerNorm (post-norm), back to a map."""

    def __init__(self, dim: int, heads: int, num_conv: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mixer = nn.Sequential(*[nn.Conv2d(dim, dim, 3, 1, 1, groups=heads) for _ in range(num_conv)])
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        n, c, h, w = x.shape
        x = x + self.drop_path(self.mixer(x))
        tokens = self.norm1(x.flatten(2).transpose(1, 2))
        tokens = self.norm2(tokens + self.drop_path(self.mlp(tokens)))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class _GlobalMixer(nn.Module):
    """``[N, C, H, W]`` as tokens: attention (post-norm), MLP (post-norm); ``keep [N, 1, 1, H*W]`` masks out padded
    tokens."""

    def __init__(self, dim: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mixer = _Attention(dim, heads)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = self.norm1(tokens + self.drop_path(self.mixer(tokens, keep)))
        tokens = self.norm2(tokens + self.drop_path(self.mlp(tokens)))
        return tokens.transpose(1, 2).reshape(n, c, h, w)


class _Flatten(nn.Module):
    """Where OpenOCR flattens the map to tokens before its first global mixer: an index, no parameters (here the
    global mixers take maps)."""

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:
        return x


class _SubSample(nn.Module):
    """3x3 conv (stride (1, 1) or (2, 1), padding 1: the ceil grid) then LayerNorm over the channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: Tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _PatchEmbed(nn.Module):
    """OpenOCR's ``pope``: two 3x3/2 convs with BatchNorm and GELU,
    ``[N, C, H, W] -> [N, dim, ceil(H/4), ceil(W/4)]``."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Sequential(_ConvBNGELU(in_channels, dim // 2), _ConvBNGELU(dim // 2, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.patch_embed(x)


class _Stage(nn.Module):
    """OpenOCR's ``SVTRStage``: ``blocks`` (a parameterless placeholder where OpenOCR flattens to tokens), and the
    ``downsample`` to the next stage's width (``nn.Identity`` in the last built stage)."""

    def __init__(self, dim: int, depth: int, heads: int, mixers: str, drop_paths: Sequence[float]) -> None:
        super().__init__()
        blocks: List[nn.Module] = []
        for kind, rate in zip(mixers, drop_paths):
            if kind == "C":
                blocks.append(_ConvMixer(dim, heads, 2, rate))
                continue
            if kind == "F":
                blocks.append(_Flatten())
            blocks.append(_GlobalMixer(dim, heads, rate))
        self.blocks = nn.ModuleList(blocks)
        self.downsample: nn.Module = nn.Identity()

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """``(the stage's output, the next stage's input)``: its blocks, then its ``downsample``."""
        for block in self.blocks:
            x = block(x, keep)
        return x, self.downsample(x)


@register_backbone("svtrv2_tiny", family="ocr", description="SVTRv2-T of OpenOCR (feat2d): 256 @ (8, 4)")
def svtrv2_tiny(config: BackboneConfig, *, drop_path_rate: float = 0.1) -> Backbone:
    return SVTRv2(config, variant="tiny", drop_path_rate=drop_path_rate)


@register_backbone("svtrv2_small", family="ocr", description="SVTRv2-S of OpenOCR (feat2d): 384 @ (8, 4)")
def svtrv2_small(config: BackboneConfig, *, drop_path_rate: float = 0.1) -> Backbone:
    return SVTRv2(config, variant="small", drop_path_rate=drop_path_rate)


@register_backbone("svtrv2_base", family="ocr", description="SVTRv2-B of OpenOCR (feat2d): 384 @ (8, 4)")
def svtrv2_base(config: BackboneConfig, *, drop_path_rate: float = 0.1) -> Backbone:
    return SVTRv2(config, variant="base", drop_path_rate=drop_path_rate)


class SVTRv2(Backbone):
    """SVTRv2 ``[N, in_channels, H, W] -> [N, dims[-1], ceil(H/8), ceil(W/4)]`` (native).

    Family options: ``variant`` (``"tiny"``, ``"small"``, ``"base"``); ``drop_path_rate`` (stochastic depth,
    OpenOCR's 0.1, linear over the blocks). Stages: 0 = ``pope`` (/4), 1-3 = OpenOCR's three stages, each after the
    previous stage's downsampling (native strides (1, 1), (1, 1), (2, 1)). Global attention needs no dilation, so
    ``dilate=True`` holds with the strides removed.
    """

    first_conv = "pope.patch_embed.0.conv"
    fusable_pairs = (("conv", "norm"),)
    attends_to_mask = True

    def __init__(self, config: BackboneConfig, *, variant: str, drop_path_rate: float = 0.1) -> None:
        self.variant = check_choice(variant, "variant", tuple(VARIANTS))
        self.drop_path_rate = check_float(drop_path_rate, "drop_path_rate", 0.0, 1.0, high_open=True)
        super().__init__(config, family_options={"variant": variant, "drop_path_rate": drop_path_rate})

    def build(self, config: BackboneConfig) -> Stages:
        dims = VARIANTS[self.variant][0]
        self.pope = _PatchEmbed(self.in_channels, dims[0])
        self.stages = nn.ModuleList()  # filled as the stages are built
        self.token_strides: List[List[int]] = []
        plan = config.plan((4, 4), ((1, 1), *SUB_STRIDES))
        return Stages(3, self._build_stages(plan))

    def _build_stages(self, plan: StridePlan) -> Iterator[FeatureInfo]:
        dims, depths, heads, mixers = VARIANTS[self.variant]
        count = sum(depths)
        rates = [self.drop_path_rate * i / (count - 1) for i in range(count)]  # numpy's linspace (no tensor: meta)
        yield FeatureInfo("stem", 0, dims[0], plan.stem_stride, modules=("pope",))
        for i, stage in enumerate(plan.stages):  # our stage i + 1: OpenOCR's stage i, after stage i - 1's downsampling
            self.stages.append(
                _Stage(dims[i], depths[i], heads[i], mixers[i], rates[sum(depths[:i]) : sum(depths[: i + 1])])
            )
            if i:
                self.stages[i - 1].downsample = _SubSample(dims[i - 1], dims[i], stage.stride)
            self.token_strides.append([stage.output_stride[0], stage.output_stride[1]])
            modules = (f"stages.{i}.blocks",) + ((f"stages.{i - 1}.downsample",) if i else ())
            yield FeatureInfo(f"stage{i + 1}", i + 1, dims[i], stage.output_stride, stage.dilation, modules)

    def forward_stages(self, x: Tensor) -> List[Tensor]:
        return self._stages(self.pope(x), None)

    def forward_stages_masked(self, x: Tensor, mask: Tensor) -> List[Tensor]:
        """Padded pixels zeroed, padded tokens masked out of every attention (an image that is all padding
        attends to everything)."""
        x = x * (~padding_on_grid(mask, [1, 1]))[:, None].to(x.dtype)
        return self._stages(self.pope(x), mask)

    def _stages(self, x: Tensor, mask: Optional[Tensor]) -> List[Tensor]:
        outputs = [x]
        for i, stage in enumerate(self.stages):
            keep: Optional[Tensor] = None
            if mask is not None:
                visible = ~padding_on_grid(mask, self.token_strides[i]).flatten(1)
                keep = (visible | ~visible.any(dim=1, keepdim=True))[:, None, None, :]
            output, x = stage(x, keep)  # x: the next stage's input
            outputs.append(output)
        return outputs

    def mismatch_hint(self, missing: List[str], unexpected: List[str], mis_shaped: Sequence[str] = ()) -> str:
        if mis_shaped and not unexpected:
            return (
                "the file may be an SVTRv2 of another size: svtrv2_tiny has widths 64/128/256, svtrv2_small "
                "96/192/384, svtrv2_base 128/256/384 (and 6 blocks per stage)"
            )
        return new_ocr_family_hint(unexpected, "svtrv2")
