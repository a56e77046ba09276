"""A compact BTTR-style recognizer whose encoder is any ``build_backbone`` spec.

image ``[N, 1, H, W]`` + mask ``[N, H, W]`` -> ``MaskedEncoder`` -> ``[N, C, h, w]`` -> 1x1 conv to d_model ->
LayerNorm -> + 2-D sine positions (mask-aware) -> ``(h w)`` tokens -> transformer decoder -> token logits.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

import torch
from backbones.adapters import MaskedEncoder, SinePositionalEncoding2D, to_sequence
from torch import Tensor, nn

from backbones import build_backbone
from backbones.registry import parse_spec


def encoder_kwargs(spec: str, out_channels: int = 684) -> Dict[str, Any]:
    """``"resnet50:strides=1x1x2x2"`` -> build_backbone keywords (1 input channel, /16, ``out_channels``)."""
    name, options = parse_spec(spec)
    defaults: Dict[str, Any] = {"in_channels": 1, "out_channels": out_channels}
    if "strides" not in options and "output_stride" not in options and name != "densenet_hmer":
        defaults["output_stride"] = 16
        if name.startswith("timm:"):
            defaults["dilate"] = True  # timm models reach /16 only by dilating
    if name == "densenet_hmer":
        defaults.pop("out_channels")  # 684 natively: the seeds' encoder has no adapter
    return {"name": name, **defaults, **options}


class TokenPositions(nn.Module):
    """1-D sine positions ``[T, d]`` added to token embeddings."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


class Recognizer(nn.Module):
    """Encoder spec + transformer decoder. ``forward(images, mask, targets)`` -> logits ``[N, T, V]``."""

    def __init__(
        self,
        encoder: str,
        vocab_size: int,
        *,
        d_model: int = 256,
        num_layers: int = 3,
        nhead: int = 8,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        sos: int = 1,
        eos: int = 2,
        pad: int = 0,
        pretrained: Any = False,
    ) -> None:
        super().__init__()
        kwargs = encoder_kwargs(encoder)
        name = kwargs.pop("name")
        backbone = build_backbone(name, pretrained=pretrained, **kwargs)
        self.encoder_spec, self.sos, self.eos, self.pad = encoder, sos, eos, pad
        self.encoder = MaskedEncoder(backbone)
        self.feature_proj = nn.Sequential(nn.Conv2d(backbone.out_channels, d_model, 1), nn.ReLU(inplace=True))
        self.norm = nn.LayerNorm(d_model)
        self.positions_2d = SinePositionalEncoding2D(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad)
        self.positions_1d = TokenPositions(d_model)
        layer = nn.TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.head = nn.Linear(d_model, vocab_size)

    def encode(self, images: Tensor, mask: Tensor):
        """-> memory ``[N, h*w, d]`` and its padding mask ``[N, h*w]`` (True = pad)."""
        feature, small_mask = self.encoder(images, mask)
        feature = self.feature_proj(feature)
        feature = self.norm(feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        feature = feature + self.positions_2d(feature, small_mask)
        return to_sequence(feature, small_mask)

    def decode(self, memory: Tensor, memory_mask: Tensor, inputs: Tensor) -> Tensor:
        length = inputs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).triu(1)
        hidden = self.decoder(
            self.positions_1d(self.embed(inputs)),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=inputs == self.pad,
            memory_key_padding_mask=memory_mask,
        )
        return self.head(hidden)

    def forward(self, images: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
        """Teacher forcing: inputs are ``<sos> + targets[:, :-1]``; logits align with ``targets``."""
        memory, memory_mask = self.encode(images, mask)
        inputs = torch.cat([torch.full_like(targets[:, :1], self.sos), targets[:, :-1]], dim=1)
        return self.decode(memory, memory_mask, inputs)

    @torch.no_grad()
    def greedy(self, images: Tensor, mask: Tensor, max_len: int = 64) -> List[List[int]]:
        """Greedy decoding -> one index list per image (without ``<eos>``)."""
        memory, memory_mask = self.encode(images, mask)
        tokens = torch.full((images.shape[0], 1), self.sos, dtype=torch.long, device=images.device)
        finished = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(max_len):
            next_token = self.decode(memory, memory_mask, tokens)[:, -1].argmax(-1)
            next_token = next_token.masked_fill(finished, self.pad)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            finished |= next_token == self.eos
            if finished.all():
                break
        results = []
        for row in tokens[:, 1:].tolist():
            out = []
            for index in row:
                if index in (self.eos, self.pad):
                    break
                out.append(index)
            results.append(out)
        return results
