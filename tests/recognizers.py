"""Small recognizers written from how the published ones hand their encoder's output on (no client code): tokens
from a 2-D grid (MASTER, SATRN), a width sequence (ASTER with and without its BiLSTM, a CTC model that pools its
rows), a fixed-size ViT (PARSeq, ViTSTR), and a module held under two names (MASTER)."""

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def _convs(channels, strides, in_channels=1):
    layers = []
    for width, stride in zip(channels, strides):
        layers += [nn.Conv2d(in_channels, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class ConvEmbedding(nn.Module):
    """MASTER's ConvEmbeddingGC in small: convs to /8, then ``x.flatten(2).transpose(1, 2)``: ``[N, h*w, C]``."""

    def __init__(self, channels=16):
        super().__init__()
        self.body = _convs((8, 12, channels), (2, 2, 2), in_channels=3)

    def forward(self, x):
        return self.body(x).flatten(2).transpose(1, 2)


class MasterLike(nn.Module):
    """The embedding is ``conv_embedding_gc`` and also ``encode_stage[0]``; the forward runs ``encode_stage`` (a
    positional table added to the tokens), then a decoder layer attends over the tokens."""

    def __init__(self, channels=16, classes=9):
        super().__init__()
        self.conv_embedding_gc = ConvEmbedding(channels)
        self.encode_stage = nn.Sequential(self.conv_embedding_gc, nn.LayerNorm(channels))
        self.decoder = nn.TransformerDecoderLayer(channels, 2, 32, batch_first=True)
        self.query = nn.Parameter(torch.randn(1, 5, channels))
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        memory = self.encode_stage(x)
        return self.head(self.decoder(self.query.expand(x.shape[0], -1, -1), memory))


class AsterEncoder(nn.Module):
    """ASTER's ResNet in small: the map is one row at 32 pixels high (/32 x /4), squeezed and transposed to
    ``[N, T, C]``; at other heights the squeeze does nothing and the output is 4-D (its rank follows the height).
    With ``lstm``, a BiLSTM runs over the sequence, as ASTER's encoder does."""

    def __init__(self, channels=16, lstm=False):
        super().__init__()
        self.cnn = _convs((8, 8, 12, 12, channels), ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1)))
        self.rnn = nn.LSTM(channels, 8, bidirectional=True, batch_first=True) if lstm else None

    def forward(self, x):
        sequence = self.cnn(x).squeeze(2).transpose(2, 1)
        return sequence if self.rnn is None else self.rnn(sequence)[0]


class PooledEncoder(nn.Module):
    """A CTC model's encoder that averages its rows away: ``[N, C, h, w] -> [N, w, C]`` at any height, /4 wide."""

    def __init__(self, channels=16):
        super().__init__()
        self.cnn = _convs((8, 12, channels), ((2, 2), (2, 2), (2, 1)))

    def forward(self, x):
        return self.cnn(x).mean(2).permute(0, 2, 1)


class SequenceRecognizer(nn.Module):
    """An attention/CTC head over ``[N, T, C]``: what it receives is the sequence."""

    def __init__(self, encoder, channels=16, classes=9):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        return F.log_softmax(self.head(self.encoder(x)), dim=-1)


class ParseqEncoder(VisionTransformer):
    """PARSeq's encoder: a timm ViT at 32x128 with 4x8 patches whose forward is ``forward_features`` (all tokens);
    ``class_token=True`` gives ViTSTR's (a class token first)."""

    def __init__(self, class_token=False, dim=24):
        super().__init__(
            img_size=(32, 128), patch_size=(4, 8), embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2.0,
            class_token=class_token, global_pool="token" if class_token else "", num_classes=0,
        )  # fmt: skip

    def forward(self, x):
        return self.forward_features(x)


class ParseqLike(nn.Module):
    def __init__(self, class_token=False, dim=24, classes=9):
        super().__init__()
        self.encoder = ParseqEncoder(class_token, dim)
        self.decoder = nn.TransformerDecoderLayer(dim, 2, 32, batch_first=True)
        self.query = nn.Parameter(torch.randn(1, 4, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        memory = self.encoder(x)
        return self.head(self.decoder(self.query.expand(x.shape[0], -1, -1), memory))
