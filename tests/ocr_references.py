"""The originals of today's text-recognition encoders, rebuilt from their published code's description (never
copied): SVTRv2 (OpenOCR), PP-LCNetV3 and PP-HGNetV2-B4 (PP-OCRv5), with their own token/map flow, branch sums,
re-parameterisation and final mode-dependent pooling. tests/test_ocr_modern.py compares ours with them."""

import torch
import torch.nn.functional as F
from torch import nn


class RefConvBN(nn.Module):  # SVTRv2's patch embedding layer
    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.norm, self.act = nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefGlobal(nn.Module):  # tokens in, tokens out
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMlp(dim)

    def forward(self, x):
        x = self.norm1(x + self.mixer(x))
        return self.norm2(x + self.mlp(x))


class RefConv(nn.Module):  # maps in, maps out
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mixer = nn.Sequential(*[nn.Conv2d(dim, dim, 3, 1, 1, groups=heads) for _ in range(2)])
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMlp(dim)

    def forward(self, x):
        c, h, w = x.shape[1:]
        x = x + self.mixer(x)
        t = self.norm1(x.flatten(2).transpose(1, 2))
        t = self.norm2(t + self.mlp(t))
        return t.transpose(1, 2).reshape(-1, c, h, w)


class RefFlatten(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class RefSub(nn.Module):
    def __init__(self, cin, cout, stride, tokens_in):
        super().__init__()
        self.conv, self.norm, self.tokens_in = nn.Conv2d(cin, cout, 3, stride, 1), nn.LayerNorm(cout), tokens_in

    def forward(self, x, size):
        if self.tokens_in:
            x = x.transpose(1, 2).reshape(-1, x.shape[-1], size[0], size[1])
        x = self.conv(x)
        c, h, w = x.shape[1:]
        x = self.norm(x.flatten(2).transpose(1, 2))
        return (x if self.tokens_in else x.transpose(1, 2).reshape(-1, c, h, w)), [h, w]


class RefStage(nn.Module):
    def __init__(self, dim, out_dim, heads, mixers, stride):
        super().__init__()
        self.blocks = nn.Sequential()
        for kind in mixers:
            if kind == "C":
                self.blocks.append(RefConv(dim, heads))
            else:
                if kind == "F":
                    self.blocks.append(RefFlatten())
                self.blocks.append(RefGlobal(dim, heads))
        self.downsample = RefSub(dim, out_dim, stride, mixers[-1] != "C") if out_dim else None

    def forward(self, x, size):
        x = self.blocks(x)
        return self.downsample(x, size) if self.downsample is not None else (x, size)


class RefSVTRv2(nn.Module):
    def __init__(self, dims, heads, mixers):
        super().__init__()
        self.pope = nn.Module()
        self.pope.patch_embed = nn.Sequential(RefConvBN(3, dims[0] // 2), RefConvBN(dims[0] // 2, dims[0]))
        strides = [(1, 1), (2, 1)]
        self.stages = nn.ModuleList(
            RefStage(dims[i], dims[i + 1] if i < 2 else 0, heads[i], mixers[i], strides[i] if i < 2 else None)
            for i in range(3)
        )

    def forward(self, x):
        size = [x.shape[2] // 4, x.shape[3] // 4]  # as the original reports it (floor); the maps are the ceil grid
        x = self.pope.patch_embed(x)
        for stage in self.stages:
            x, size = stage(x, size)
        return x.transpose(1, 2).reshape(-1, x.shape[-1], size[0], size[1])  # feat2d


SVTR = {
    "svtrv2_tiny": ((64, 128, 256), (2, 4, 8), ("CCC", "CCCFGG", "GGG")),
    "svtrv2_small": ((96, 192, 384), (3, 6, 12), ("CCC", "CCCFGG", "GGG")),
    "svtrv2_base": ((128, 256, 384), (4, 8, 12), ("CCCCCC", "CCFGGG", "GGGGGG")),
}


def divisible(v, d=16):
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class RefLab(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.tensor([1.0])), nn.Parameter(torch.tensor([0.0]))

    def forward(self, x):
        return self.scale * x + self.bias


class RefAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.act, self.lab = nn.Hardswish(), RefLab()

    def forward(self, x):
        return self.lab(self.act(x))


class RefConvBNL(nn.Module):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class RefRep(nn.Module):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self.stride, self.k, self.groups, self.cin, self.cout = stride, k, groups, cin, cout
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.conv_kxk = nn.ModuleList(RefConvBNL(cin, cout, k, stride, groups) for _ in range(4))
        self.conv_1x1 = RefConvBNL(cin, cout, 1, stride, groups) if k > 1 else None
        self.lab, self.act = RefLab(), RefAct()
        self.repped = None

    def forward(self, x):
        if self.repped is not None:
            out = self.lab(self.repped(x))
        else:
            out = 0
            if self.identity is not None:
                out += self.identity(x)
            if self.conv_1x1 is not None:
                out += self.conv_1x1(x)
            for conv in self.conv_kxk:
                out += conv(x)
            out = self.lab(out)
        return self.act(out) if self.stride != 2 else out

    def rep(self):  # the original's re-parameterisation: every branch's BN folded, summed at the kernel's centre
        def fold(weight, bn):
            std = (bn.running_var + bn.eps).sqrt()
            return weight * (bn.weight / std).reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * bn.weight / std

        kernel, bias = 0, 0
        for conv in self.conv_kxk:
            w, b = fold(conv.conv.weight, conv.bn)
            kernel, bias = kernel + w, bias + b
        if self.conv_1x1 is not None:
            w, b = fold(self.conv_1x1.conv.weight, self.conv_1x1.bn)
            kernel, bias = kernel + F.pad(w, [self.k // 2] * 4), bias + b
        if self.identity is not None:
            ident = torch.zeros(self.cin, self.cin // self.groups, self.k, self.k)
            for i in range(self.cin):
                ident[i, i % (self.cin // self.groups), self.k // 2, self.k // 2] = 1
            w, b = fold(ident, self.identity)
            kernel, bias = kernel + w, bias + b
        self.repped = nn.Conv2d(self.cin, self.cout, self.k, self.stride, (self.k - 1) // 2, groups=self.groups)
        self.repped.weight.data, self.repped.bias.data = kernel.detach(), bias.detach()


class RefSE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1)))))


class RefLCBlock(nn.Module):
    def __init__(self, k, cin, cout, stride, se):
        super().__init__()
        self.dw_conv = RefRep(cin, cin, k, stride, groups=cin)
        if se:
            self.se = RefSE(cin)
        self.use_se = se
        self.pw_conv = RefRep(cin, cout, 1, 1)

    def forward(self, x):
        x = self.dw_conv(x)
        return self.pw_conv(self.se(x) if self.use_se else x)


LC = {
    "blocks2": [[3, 16, 32, 1, False]],
    "blocks3": [[3, 32, 64, 1, False], [3, 64, 64, 1, False]],
    "blocks4": [[3, 64, 128, (2, 1), False], [3, 128, 128, 1, False]],
    "blocks5": [[3, 128, 256, (1, 2), False]] + [[5, 256, 256, 1, False]] * 4,
    "blocks6": [[5, 256, 512, (2, 1), True], [5, 512, 512, 1, True], [5, 512, 512, (2, 1), False],
                [5, 512, 512, 1, False]],
}  # fmt: skip


class RefLCNetV3(nn.Module):
    def __init__(self, scale=0.95):
        super().__init__()
        self.conv1 = RefConvBNL(3, divisible(16 * scale), 3, 2)
        for name, blocks in LC.items():
            setattr(self, name, nn.Sequential(*[RefLCBlock(k, divisible(i * scale), divisible(o * scale), s, se)
                                               for k, i, o, s, se in blocks]))  # fmt: skip

    def body(self, x):
        x = self.conv1(x)
        for name in LC:
            x = getattr(self, name)(x)
        return x

    def forward(self, x):
        x = self.body(x)
        return F.adaptive_avg_pool2d(x, [1, 40]) if self.training else F.avg_pool2d(x, [3, 2])


class RefCBA(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, act=True, same=False):
        super().__init__()
        self.same = same
        self.conv = nn.Conv2d(cin, cout, k, stride, "same" if same else (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class RefLight(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv1, self.conv2 = RefCBA(cin, cout, 1, act=False), RefCBA(cout, cout, k, groups=cout)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class RefHGBlock(nn.Module):
    def __init__(self, cin, mid, cout, k, n, identity, light):
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList((RefLight if light else RefCBA)(cin if i == 0 else mid, mid, k) for i in range(n))
        self.aggregation_squeeze_conv = RefCBA(cin + n * mid, cout // 2, 1)
        self.aggregation_excitation_conv = RefCBA(cout // 2, cout, 1)

    def forward(self, x):
        identity, outs = x, [x]
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        x = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outs, 1)))
        return x + identity if self.identity else x


class RefHGStage(nn.Module):
    def __init__(self, cin, mid, cout, blocks, light, k, n, stride):
        super().__init__()
        self.downsample = RefCBA(cin, cin, 3, stride, groups=cin, act=False)
        self.blocks = nn.Sequential(*[RefHGBlock(cin if i == 0 else cout, mid, cout, k, n, i > 0, light)
                                      for i in range(blocks)])  # fmt: skip

    def forward(self, x):
        return self.blocks(self.downsample(x))


class RefStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem1, self.stem2a = RefCBA(3, 32, 3, 2), RefCBA(32, 16, 2, same=True)
        self.stem2b, self.stem3, self.stem4 = RefCBA(16, 32, 2, same=True), RefCBA(64, 32, 3), RefCBA(32, 48, 1)

    def forward(self, x):
        x = self.stem1(x)
        pooled = F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 1)
        return self.stem4(self.stem3(torch.cat([pooled, self.stem2b(self.stem2a(x))], 1)))


class RefHGNetV2B4(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = RefStem()
        specs = [(48, 48, 128, 1, False, 3, 6, (2, 1)), (128, 96, 512, 1, False, 3, 6, (1, 2)),
                 (512, 192, 1024, 3, True, 5, 6, (2, 1)), (1024, 384, 2048, 1, True, 5, 6, (2, 1))]  # fmt: skip
        self.stages = nn.ModuleList(RefHGStage(*spec) for spec in specs)
        self.last_conv = nn.Conv2d(2048, 2048, 1, bias=False)  # the classifier's: unused by the recogniser
        self.fc = nn.Linear(2048, 1000)

    def body(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x):
        x = self.body(x)
        return F.adaptive_avg_pool2d(x, [1, 40]) if self.training else F.avg_pool2d(x, [3, 2])


def randomised(model):
    """Realistic statistics and affine values, so that a wrong key or branch order shows."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.5, 0.5, generator=generator)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
        if isinstance(module, RefLab):
            module.scale.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    return model.eval()


def close(ours, theirs, tolerance=1e-5):
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= tolerance * theirs.abs().max()
